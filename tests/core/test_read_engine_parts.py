"""The read engine's pure and small parts: the window policy (property-tested), the arrival
map, the budget and the chunk files."""

import gc
import itertools
import os

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from rangefs.cache.cache_format import BLOCK, DIGEST, digest_offset, header_size
from rangefs.cache.chunk_files import PartialFiles
from rangefs.engine.arrivals import ArrivalMap
from rangefs.engine.budget import Budget
from rangefs.engine.window import RANDOM_SEEKS, Limits, Window, advance
from rangefs.errors import RemoteError
from rangefs.keys import ChunkKey, ObjectId
from tests.support.patterns import pattern_bytes

MiB = 1024 * 1024
LIMITS = Limits(first=1 * MiB, largest=64 * MiB, slack=8 * MiB, chunk=8 * MiB)

# -- the window ------------------------------------------------------------------------------


def run_reads(reads, size, limits=LIMITS, room=10**12, waits=None):
    window = Window()
    asked: list[tuple[int, int]] = []
    history = []
    for n, (offset, length) in enumerate(reads):
        waited = bool(waits and waits[n])
        window, ranges = advance(window, offset, length, size, limits, waited=waited, room=room)
        asked.extend(ranges)
        history.append((window, ranges))
    return asked, history


sequential_reads = st.lists(st.integers(min_value=4096, max_value=2 * MiB), min_size=1, max_size=60)


@settings(max_examples=200, deadline=None)
@given(lengths=sequential_reads, size=st.integers(min_value=1, max_value=512 * MiB))
def test_a_sequential_reader_is_asked_ahead_without_overlap_within_the_object(lengths, size):
    reads, offset = [], 0
    for length in lengths:
        reads.append((offset, length))
        offset += length
    asked, history = run_reads(reads, size)
    for (_, b), (c, _) in itertools.pairwise(asked):
        assert b <= c  # in order, never twice (a gap is a read that overtook read-ahead)
    for a, b in asked:
        assert 0 <= a < b <= size
    for window, _ in history:
        assert window.size <= LIMITS.largest
        assert window.ahead() <= LIMITS.largest + LIMITS.chunk  # rounded up to a chunk end


@settings(max_examples=200, deadline=None)
@given(
    reads=st.lists(
        st.tuples(st.integers(0, 256 * MiB), st.integers(1, 1 * MiB)), min_size=1, max_size=40
    ),
    room=st.integers(0, 128 * MiB),
    waits=st.lists(st.booleans(), min_size=40, max_size=40),
)
def test_what_a_reader_holds_ahead_never_exceeds_its_room(reads, room, waits):
    size = 300 * MiB
    window = Window()
    for n, (offset, length) in enumerate(reads):
        held = window.ahead()
        window, ranges = advance(window, offset, length, size, LIMITS, waited=waits[n], room=room)
        added = sum(b - a for a, b in ranges)
        if added:
            assert window.ahead() <= max(room, held)
        assert window.size in (0,) or LIMITS.first <= window.size <= LIMITS.largest


def test_the_first_read_asks_for_nothing_ahead_and_the_second_starts_the_window():
    asked, history = run_reads([(0, 128 * 1024)], 100 * MiB)
    assert asked == []
    asked, history = run_reads([(0, 128 * 1024), (128 * 1024, 128 * 1024)], 100 * MiB)
    assert history[-1][0].size == LIMITS.first
    assert asked == [(256 * 1024, 256 * 1024 + LIMITS.first)]


def test_the_window_doubles_when_the_reader_waited_and_a_seek_resets_it():
    reads = [(i * MiB, MiB) for i in range(8)]
    _, history = run_reads(reads, 1024 * MiB, waits=[True] * 8)
    sizes = [w.size // MiB for w, _ in history]
    assert sizes == [0, 1, 2, 4, 8, 16, 32, 64]
    window = history[-1][0]
    window, ranges = advance(window, 900 * MiB, MiB, 1024 * MiB, LIMITS, waited=True, room=10**12)
    assert (window.size, ranges) == (0, [])


def test_a_window_of_a_chunk_or_more_asks_for_whole_chunks():
    reads = [(i * MiB, MiB) for i in range(6)]
    asked, _ = run_reads(reads, 1024 * MiB, waits=[True] * 6)
    big = [(a, b) for a, b in asked if b - a >= LIMITS.chunk]
    assert big and all(b % LIMITS.chunk == 0 for _, b in big)


def test_pressure_halves_the_window():
    reads = [(i * MiB, MiB) for i in range(7)]
    _, history = run_reads(reads, 1024 * MiB, waits=[True] * 7)
    window = history[-1][0]
    assert window.size == 32 * MiB
    small_room = window.ahead() + MiB
    window, _ = advance(window, 7 * MiB, MiB, 1024 * MiB, LIMITS, waited=True, room=small_room)
    assert window.size == 32 * MiB  # doubled to 64, then halved: the room is nearly spent
    assert window.ahead() <= small_room


def test_reads_in_a_slightly_different_order_stay_sequential():
    _, history = run_reads([(0, MiB), (MiB, MiB), (3 * MiB, MiB), (2 * MiB, MiB)], 64 * MiB)
    assert all(w.size for w, _ in history[1:])


def test_a_reader_that_keeps_seeking_asks_for_the_chunks_around_its_reads():
    size = 100 * MiB + 5
    reads = [(70 * MiB + 3, 65536), (10 * MiB, 65536), (99 * MiB, 2 * MiB), (32 * MiB - 10, 20)]
    _, history = run_reads(reads, size)
    assert [r for _, r in history[: RANDOM_SEEKS - 1]] == [[], []]  # a seek or two: nothing
    assert history[2][1] == [(96 * MiB, size)]  # the last chunk is short
    assert history[3][1] == [(24 * MiB, 40 * MiB)]  # a read across a boundary: both chunks
    assert all(w.random for w, _ in history[RANDOM_SEEKS - 1 :])
    _, short = run_reads(reads, size, room=LIMITS.chunk)
    assert short[2][1] == [(96 * MiB, size)] and short[3][1] == []  # no room for two chunks


def test_a_seek_followed_by_reads_in_sequence_is_not_a_random_reader():
    reads = []
    for start in (50 * MiB, 5 * MiB, 80 * MiB, 20 * MiB, 60 * MiB):  # a player seeking
        reads += [(start, 65536), (start + 65536, 65536)]
    _, history = run_reads(reads, 100 * MiB)
    assert not any(w.random for w, _ in history)
    assert all(r == [] or r[0][0] >= w.next_offset for w, r in history)  # only ahead


@settings(max_examples=200, deadline=None)
@given(
    reads=st.lists(st.tuples(st.integers(0, 64 * MiB), st.integers(1, 3 * MiB)), max_size=30),
    room=st.integers(0, 64 * MiB),
)
def test_what_a_random_reader_asks_for_is_whole_chunks_holding_its_read(reads, room):
    size = 64 * MiB + 12345
    window = Window()
    for offset, length in reads:
        before = window
        window, ranges = advance(window, offset, length, size, LIMITS, waited=False, room=room)
        sequential = before.reads and -LIMITS.slack <= offset - before.next_offset <= max(
            LIMITS.slack, before.size
        )
        if sequential or offset >= size:
            continue
        for a, b in ranges:
            assert a % LIMITS.chunk == 0 and (b % LIMITS.chunk == 0 or b == size)
            assert a <= offset and min(offset + length, size) <= b and b - a <= room
        assert bool(ranges) <= window.random


# -- the arrival map ---------------------------------------------------------------------------


def test_missing_runs_skip_blocks_present_or_on_their_way():
    arrivals = ArrivalMap(10, present=bytes([0, 1, 1, 0, 0, 0, 0, 0, 0, 1]))
    assert arrivals.missing_runs(0, 10) == [(0, 1), (3, 9)]
    arrivals.want(4, 6)
    assert arrivals.missing_runs(0, 10) == [(0, 1), (3, 4), (6, 9)]
    assert not arrivals.idle


async def test_a_waiter_wakes_when_its_blocks_have_landed_not_before():
    arrivals = ArrivalMap(8)
    arrivals.want(0, 8)
    woke = []

    async def wait(first, end):
        await arrivals.wait(first, end)
        woke.append((first, end))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait, 0, 2)
        nursery.start_soon(wait, 4, 8)
        await trio.testing.wait_all_tasks_blocked()
        arrivals.landed(0, 1)
        await trio.testing.wait_all_tasks_blocked()
        assert woke == []
        arrivals.landed(1, 5)
        await trio.testing.wait_all_tasks_blocked()
        assert woke == [(0, 2)]
        arrivals.landed(5, 8)
    assert woke == [(0, 2), (4, 8)]
    assert arrivals.complete


async def test_a_failed_get_fails_only_the_waiters_of_its_blocks():
    arrivals = ArrivalMap(8)
    arrivals.want(0, 8)
    outcome = {}

    async def wait(name, first, end):
        try:
            await arrivals.wait(first, end)
            outcome[name] = "ok"
        except RemoteError as exc:
            outcome[name] = str(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait, "low", 0, 2)
        nursery.start_soon(wait, "high", 6, 8)
        await trio.testing.wait_all_tasks_blocked()
        arrivals.landed(0, 1)
        arrivals.failed(0, 4, RemoteError("cut"))  # block 0 landed, 1-3 did not
        await trio.testing.wait_all_tasks_blocked()
        assert outcome == {"low": "cut"}
        assert arrivals.missing_runs(0, 8) == [(1, 4)]
        arrivals.landed(4, 8)
    assert outcome == {"low": "cut", "high": "ok"}


# -- the budget ------------------------------------------------------------------------------


async def test_pushback_halves_the_gets_in_flight_and_success_grows_them_back():
    budget = Budget(max_gets=32, max_ahead=100)
    assert budget.gets_allowed == 32
    budget.pushback()
    budget.pushback()  # the same burst: one halving
    assert budget.gets_allowed == 16
    assert budget.readahead_slots.total_tokens == 16 - budget.reserve
    for _ in range(16):
        budget.succeeded()
    assert budget.gets_allowed == 17


@pytest.mark.mock_clock
async def test_pushbacks_a_second_apart_halve_again_down_to_two():
    budget = Budget(max_gets=32, max_ahead=100)
    for _ in range(10):
        budget.pushback()
        await trio.sleep(1.5)
    assert budget.gets_allowed == 2


async def test_room_is_what_other_readers_do_not_hold():
    class Holder:
        def __init__(self, ahead):
            self.held = ahead

        def ahead(self):
            return self.held

    budget = Budget(max_gets=8, max_ahead=100)
    a, b = Holder(30), Holder(50)
    budget.register(a)
    budget.register(b)
    assert budget.room() == 20
    assert budget.room(excluding=a) == 50
    budget.register(a)  # once per read: counted once
    assert budget.room() == 20
    del b  # a closed file's stream: its share is free again
    gc.collect()
    assert budget.room() == 70


# -- chunk files -----------------------------------------------------------------------------


def key(index=0):
    return ChunkKey(ObjectId("bucket", "dir/a key", '"etag"'), 8 * BLOCK, index)


def test_a_chunk_file_keeps_the_blocks_that_landed_across_a_reopen(tmp_path):
    files = PartialFiles(tmp_path)
    data = pattern_bytes(0, 5 * BLOCK + 100, 3)
    first = files.open(key(), len(data))
    first.write(0, memoryview(data)[: 2 * BLOCK])
    first.write(4 * BLOCK, memoryview(data)[4 * BLOCK :])
    first.close()  # as after kill -9: nothing was fsynced, nothing was finished
    again = files.open(key(), len(data))
    assert list(again.present) == [1, 1, 0, 0, 1, 1]
    assert again.read(100, 2 * BLOCK) == data[100 : 2 * BLOCK]
    assert again.read(4 * BLOCK, len(data)) == data[4 * BLOCK :]


def test_a_block_whose_bytes_do_not_match_its_digest_is_missing(tmp_path):
    files = PartialFiles(tmp_path)
    data = pattern_bytes(0, 3 * BLOCK, 4)
    f = files.open(key(), len(data))
    f.write(0, memoryview(data))
    f.close()
    path = files.path(key())
    with open(path, "r+b") as raw:  # a digest without its bytes (a power cut)
        raw.seek(header_size(len(data)) + BLOCK + 7)
        raw.write(b"\xff")
    with open(path, "r+b") as raw:  # a digest slot damaged
        raw.seek(digest_offset(2))
        raw.write(b"\x01" * DIGEST)
    again = files.open(key(), len(data))
    assert list(again.present) == [1, 0, 0]


def test_a_foreign_or_short_partial_file_is_replaced(tmp_path):
    files = PartialFiles(tmp_path)
    files.path(key()).write_bytes(b"not ours")
    f = files.open(key(), 2 * BLOCK)
    assert list(f.present) == [0, 0]
    assert os.path.getsize(files.path(key())) == header_size(2 * BLOCK) + 2 * BLOCK


def test_chunk_files_are_private_and_pruned_oldest_first(tmp_path):
    files = PartialFiles(tmp_path, max_files=3)
    for i in range(6):
        files.open(key(i), BLOCK).close()
        os.utime(files.path(key(i)), (1000 + i, 1000 + i))
    assert all((files.path(key(i)).stat().st_mode & 0o777) == 0o600 for i in range(6))
    assert files.prune() == 3
    assert sorted(p.name for p in files.directory.iterdir()) == sorted(
        files.path(key(i)).name for i in (3, 4, 5)
    )


def test_a_chunk_file_being_filled_elsewhere_is_not_shared(tmp_path):
    """Two fills of one chunk at once (two mounts sharing a cache dir) get two files, so
    neither replaces or moves away the other's; the shared one is resumable afterwards."""
    files = PartialFiles(tmp_path)
    data = pattern_bytes(0, 2 * BLOCK, 5)
    first = files.open(key(), len(data))
    second = files.open(key(), len(data))  # flock held by the first
    assert first.path == files.path(key()) and second.path != first.path
    first.write(0, memoryview(data)[:BLOCK])
    second.write(0, memoryview(data))
    assert second.read(0, len(data)) == data
    first.close()
    second.close()
    again = files.open(key(), len(data))
    assert again.path == files.path(key()) and list(again.present) == [1, 0]
