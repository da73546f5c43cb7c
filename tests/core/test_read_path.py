"""The read path: bytes, the GETs behind them, coalescing, read-ahead, the memory budget,
the disk cache as a checkpoint, and the chunk arithmetic at the edges."""

import bisect
import random

import pytest
import trio
import trio.testing

from rangefs.engine.reader import WARM_AHEAD
from rangefs.stats import LATENCY_BUCKETS
from tests.core.helpers import CHUNK, gate_reached, open_path, read_all, settle, until


def covered(spans) -> list[tuple[int, int]]:
    """Merged byte spans of GETs (or of ``(start, end)`` pairs)."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted((g.start, g.end) if hasattr(g, "start") else g for g in spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def value_files(env):
    return sorted(env.cache_dir.rglob("*.val"))


# -- bytes and chunk arithmetic ---------------------------------------------------------------


async def test_whole_file_reads_back_exactly_with_one_get_per_chunk(env):
    data = env.store.put("f", size=5 * CHUNK + 123, seed=11)
    async with env.core() as core:
        fh = await open_path(core.fs, "f")
        assert await read_all(core.fs, fh, len(data), request=40_000) == data
        await settle(core)
        assert sorted(env.store.chunks_fetched("f", CHUNK)) == list(range(6))
        assert core.stats.bytes_fetched == len(data)
        assert core.stats.bytes_read == len(data)


async def test_read_spanning_chunk_boundaries(env):
    data = env.store.put("f", size=4 * CHUNK, seed=2)
    async with env.core() as core:
        fh = await open_path(core.fs, "f")
        got = await core.fs.read(fh, CHUNK - 10, 2 * CHUNK + 20)  # 3 chunks, 2 boundaries
        assert bytes(got) == data[CHUNK - 10 : 3 * CHUNK + 10]
        assert {0, CHUNK, 2 * CHUNK} <= {g.start for g in env.store.gets}


async def test_last_short_chunk_is_asked_for_exactly(env):
    data = env.store.put("f", size=2 * CHUNK + 1000, seed=3)
    async with env.core() as core:
        fh = await open_path(core.fs, "f")
        got = await core.fs.read(fh, 2 * CHUNK + 500, 4096)
        assert bytes(got) == data[2 * CHUNK + 500 :]
        (get,) = env.store.gets
        assert (get.start, get.end) == (2 * CHUNK, len(data))


async def test_reads_at_and_past_eof_and_of_zero_length(env):
    data = env.store.put("f", size=CHUNK + 7, seed=4)
    async with env.core() as core:
        fh = await open_path(core.fs, "f")
        assert await core.fs.read(fh, len(data), 4096) == b""
        assert await core.fs.read(fh, len(data) + CHUNK * 10, 4096) == b""
        assert await core.fs.read(fh, 100, 0) == b""
        assert env.store.gets == []
        tail = await core.fs.read(fh, len(data) - 3, 4096)  # clipped at EOF
        assert bytes(tail) == data[-3:]


async def test_empty_object_reads_empty_without_a_get(env):
    env.store.put("empty", b"")
    async with env.core() as core:
        fh = await open_path(core.fs, "empty")
        assert await core.fs.read(fh, 0, 4096) == b""
        assert env.store.gets == []


async def test_unknown_file_handle_is_not_found(env):
    async with env.core() as core:
        try:
            await core.fs.read(12345, 0, 10)
        except Exception as exc:
            assert exc.errno == 2  # type: ignore[attr-defined]
        else:
            raise AssertionError("read of an unknown handle succeeded")


# -- coalescing ------------------------------------------------------------------------------


async def test_concurrent_readers_of_one_missing_chunk_make_one_get(env):
    data = env.store.put("f", size=4 * CHUNK, seed=5)
    gate = env.store.hold("f", at=CHUNK)
    async with env.core() as core:
        handles = [await open_path(core.fs, "f") for _ in range(10)]
        results: dict[int, bytes] = {}

        async def reader(i, fh):
            results[i] = bytes(await core.fs.read(fh, CHUNK + 1000 * i, 4096))

        async with trio.open_nursery() as nursery:
            for i, fh in enumerate(handles):
                nursery.start_soon(reader, i, fh)
            await gate_reached(gate)
            await trio.testing.wait_all_tasks_blocked()
            assert results == {}  # everyone waits for the one GET
            gate.release()
        assert env.store.get_count("f") == 1
        assert env.store.get_count("f", start=CHUNK) == 1
        for i in range(10):
            assert results[i] == data[CHUNK + 1000 * i : CHUNK + 1000 * i + 4096]


async def test_a_reader_that_goes_away_does_not_cancel_the_shared_get(env):
    data = env.store.put("f", size=2 * CHUNK, seed=6)
    gate = env.store.hold("f", at=0)
    async with env.core() as core:
        fh1 = await open_path(core.fs, "f")
        fh2 = await open_path(core.fs, "f")
        got = {}

        async def impatient(task_status=trio.TASK_STATUS_IGNORED):
            with trio.CancelScope() as scope:
                task_status.started(scope)
                await core.fs.read(fh1, 0, 100)
                got["impatient"] = True

        async def patient():
            got["data"] = bytes(await core.fs.read(fh2, 0, 100))

        async with trio.open_nursery() as nursery:
            scope = await nursery.start(impatient)  # its read starts the GET
            await gate_reached(gate)
            nursery.start_soon(patient)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()  # the first reader is interrupted (^C)
            await trio.testing.wait_all_tasks_blocked()
            gate.release()
        assert got == {"data": data[:100]}
        await settle(core)
        assert env.store.get_count("f") == 1
        assert core.stats.chunks_stored == 1  # the fetch finished and reached the disk


# -- read-ahead ------------------------------------------------------------------------------


async def test_a_sequential_reader_gets_read_ahead_from_its_second_read(env):
    env.store.put("f", size=64 * CHUNK, seed=7)
    async with env.core(max_readahead=8 * CHUNK) as core:
        fh = await open_path(core.fs, "f")
        await core.fs.read(fh, 0, CHUNK)
        await settle(core)
        assert env.store.chunks_fetched("f", CHUNK) == [0]  # one read: nothing ahead
        await core.fs.read(fh, CHUNK, CHUNK)
        await settle(core)
        # The first window is an eighth of the largest: one chunk ahead, fetched once.
        assert sorted(env.store.chunks_fetched("f", CHUNK)) == [0, 1, 2]
        hits = core.stats.range_hits + core.stats.fill_hits
        for i in range(2, 40):
            await core.fs.read(fh, i * CHUNK, CHUNK)
            await settle(core)  # a reader slower than the store: each chunk comes ahead
        fetched = env.store.chunks_fetched("f", CHUNK)
        assert sorted(set(fetched)) == list(range(len(set(fetched))))  # no holes, in order
        assert len(fetched) == len(set(fetched))  # each chunk once
        assert 40 < len(fetched) <= 40 + 8  # never more than the largest window past the reader
        assert core.stats.range_hits + core.stats.fill_hits - hits == 38  # no read waited


async def test_a_seek_resets_the_window(env):
    env.store.put("f", size=64 * CHUNK, seed=8)
    async with env.core(max_readahead=8 * CHUNK) as core:
        fh = await open_path(core.fs, "f")
        stream = core.fs._handles[fh].stream
        for i in range(4):
            await core.fs.read(fh, i * CHUNK, CHUNK)
        await settle(core)
        assert stream.window.size >= CHUNK
        before = len(env.store.gets)
        await core.fs.read(fh, 40 * CHUNK, CHUNK)  # a seek
        await settle(core)
        assert stream.window.size == 0
        assert env.store.chunks_fetched("f", CHUNK)[before:] == [40]  # nothing ahead
        await core.fs.read(fh, 41 * CHUNK, CHUNK)  # sequential again: starts over small
        await settle(core)
        assert stream.window.size == CHUNK
        assert sorted(env.store.chunks_fetched("f", CHUNK)[before:]) == [40, 41, 42]


async def test_a_single_random_read_triggers_no_read_ahead(env):
    data = env.store.put("f", size=64 * CHUNK, seed=9)
    async with env.core() as core:
        fh = await open_path(core.fs, "f")
        got = await core.fs.read(fh, 20 * CHUNK + 5, 128 * 1024)  # a big read, after a seek
        await settle(core)
        assert bytes(got) == data[20 * CHUNK + 5 : 20 * CHUNK + 5 + 128 * 1024]
        assert sorted(env.store.chunks_fetched("f", CHUNK)) == [20, 21, 22]
        assert core.fs._handles[fh].stream.window.size == 0


async def test_a_random_reader_gets_each_chunk_it_touches_whole_and_once(env):
    big = 8 * CHUNK  # chunks of eight 64 KiB blocks; the last one has three
    data = env.store.put("f", size=6 * big + 3 * CHUNK, seed=13)
    order = [5, 0, 3, 6, 1, 4]  # each read is the last block of its chunk
    ends = {i: min((i + 1) * big, len(data)) for i in range(7)}
    async with env.core(chunk_size=big, max_readahead=8 * big) as core:
        fh = await open_path(core.fs, "f")
        for i in order:
            got = await core.fs.read(fh, ends[i] - CHUNK, CHUNK)
            assert bytes(got) == data[ends[i] - CHUNK : ends[i]]
        await settle(core)
        # Two seeks are a media player's: only their own block. From the third seek on,
        # the whole chunk of each read, each byte once.
        want = [(ends[i] - CHUNK, ends[i]) for i in order[:2]]
        want += [(i * big, ends[i]) for i in order[2:]]
        assert covered(env.store.gets) == covered(want)
        assert env.store.bytes_sent == sum(b - a for a, b in want)
        assert core.stats.chunks_stored == len(order) - 2
        gets = len(env.store.gets)
        rng = random.Random(5)
        for i in order[2:]:
            offset = i * big + rng.randrange(0, ends[i] - i * big - 100)
            assert bytes(await core.fs.read(fh, offset, 100)) == data[offset : offset + 100]
        assert len(env.store.gets) == gets


async def cached_on_disk(env, chunks: int, seed: int) -> bytes:
    """An object of ``chunks`` chunks of 8 * CHUNK, read once whole (so stored on disk)."""
    data = env.store.put("f", size=chunks * 8 * CHUNK, seed=seed)
    async with env.core(chunk_size=8 * CHUNK) as core:
        fh = await open_path(core.fs, "f")
        assert await read_all(core.fs, fh, len(data), request=CHUNK) == data
        await settle(core)
    return data


async def test_a_cached_sequential_read_has_the_kernel_read_the_chunks_ahead_in(env):
    big = 8 * CHUNK
    data = await cached_on_disk(env, 6, seed=15)
    gets = len(env.store.gets)
    async with env.core(chunk_size=big, max_readahead=8 * big) as core:  # on disk: a remount
        fh = await open_path(core.fs, "f")
        version, cache = core.fs._handles[fh].version, core.reader.cache
        for i in range(3):  # reads in sequence, all in chunk 0
            got = await core.fs.read(fh, i * CHUNK, CHUNK)
            assert bytes(got) == data[i * CHUNK : (i + 1) * CHUNK]
        await settle(core)
        # The chunks ahead are open (and being read in by the kernel) before the reader gets
        # there; the others are not.
        opened = [cache.is_open(version.chunk(big, i)) for i in range(6)]
        assert opened == [True] * (1 + WARM_AHEAD) + [False] * (5 - WARM_AHEAD)
        assert len(env.store.gets) == gets


async def test_a_cached_sequential_reader_finds_each_next_chunk_open_a_chunk_ahead(env):
    big = 8 * CHUNK
    data = await cached_on_disk(env, 12, seed=16)
    gets = len(env.store.gets)
    async with env.core(chunk_size=big) as core:  # on disk: a remount
        fh = await open_path(core.fs, "f")
        version, cache = core.fs._handles[fh].version, core.reader.cache
        late = []
        for i in range(0, len(data), CHUNK):
            got = await core.fs.read(fh, i, CHUNK)
            assert bytes(got) == data[i : i + CHUNK]
            await settle(core)
            index = i // big
            # From its first reads in a chunk, the next is open (the kernel reads it in from
            # disk meanwhile): a reader at disk speed does not wait in a thread for it.
            if i % big == 2 * CHUNK and index + 1 < 12:
                late += [] if cache.is_open(version.chunk(big, index + 1)) else [index + 1]
        assert late == []
        assert len(env.store.gets) == gets


async def test_a_player_that_seeks_then_reads_on_gets_no_chunks_around(env):
    big = 8 * CHUNK
    data = env.store.put("f", size=40 * big, seed=14)
    async with env.core(chunk_size=big, max_readahead=2 * big) as core:
        fh = await open_path(core.fs, "f")
        for start in (30, 3, 22, 11, 35):
            offset = start * big + 5 * CHUNK  # a seek into the middle of a chunk...
            for i in range(2):  # ...then reads in sequence
                got = await core.fs.read(fh, offset + i * CHUNK, CHUNK)
                assert bytes(got) == data[offset + i * CHUNK : offset + (i + 1) * CHUNK]
            await settle(core)
            assert all(g.start >= offset for g in env.store.gets if g.start // big == start)


async def test_a_reader_that_waits_doubles_its_window(env):
    env.store.put("f", size=256 * CHUNK, seed=10)
    async with env.core(max_readahead=64 * CHUNK, parallel=32) as core:
        fh = await open_path(core.fs, "f")
        stream = core.fs._handles[fh].stream
        sizes = []
        for _ in range(7):
            # Each read jumps to the end of what was asked for: its bytes are not there yet.
            await core.fs.read(fh, stream.window.asked, CHUNK)
            sizes.append(stream.window.size // CHUNK)
        assert sizes == [0, 8, 16, 32, 64, 64, 64]


async def test_read_ahead_stops_at_eof(env):
    data = env.store.put("f", size=3 * CHUNK + 1, seed=12)
    async with env.core() as core:
        fh = await open_path(core.fs, "f")
        assert await read_all(core.fs, fh, len(data), request=CHUNK) == data
        await settle(core)
        assert sorted(env.store.chunks_fetched("f", CHUNK)) == [0, 1, 2, 3]


# -- the budget: GETs in flight and bytes ahead ----------------------------------------------


async def test_gets_in_flight_never_exceed_the_cap(env):
    files = {f"f{i}": env.store.put(f"f{i}", size=40 * CHUNK + i, seed=20 + i) for i in range(5)}
    async with env.core(parallel=4, max_readahead=64 * CHUNK) as core:
        results = {}

        async def cat(name):
            fh = await open_path(core.fs, name)
            results[name] = await read_all(core.fs, fh, len(files[name]), request=48 * 1024)

        async with trio.open_nursery() as nursery:
            for name in files:
                nursery.start_soon(cat, name)
        await settle(core)
        assert results == files
        assert env.store.max_in_flight <= 4
        for name in files:
            fetched = env.store.chunks_fetched(name, CHUNK)
            assert len(fetched) == len(set(fetched)) == -(-len(files[name]) // CHUNK)  # once


async def test_bytes_ahead_of_all_readers_stay_within_the_budget(env):
    for i in range(4):
        env.store.put(f"f{i}", size=200 * CHUNK, seed=30 + i)
    # cache-size 64 chunks: a quarter, 16 chunks, may be ahead of all readers together
    async with env.core(cache_size=64 * CHUNK, max_readahead=64 * CHUNK, parallel=8) as core:
        handles = [await open_path(core.fs, f"f{i}") for i in range(4)]
        for step in range(6):
            for fh in handles:
                await core.fs.read(fh, step * CHUNK, CHUNK)
        await settle(core)
        ahead = sum(core.fs._handles[fh].stream.ahead() for fh in handles)
        assert 0 < ahead <= 16 * CHUNK
        fetched = sum(len(env.store.chunks_fetched(f"f{i}", CHUNK)) for i in range(4))
        assert fetched <= 4 * 6 + 16


async def read_all_from(core, fh, offset, size):
    out = bytearray()
    while offset < size:
        piece = await core.fs.read(fh, offset, CHUNK)
        out += piece
        offset += len(piece)
    return bytes(out)


async def test_read_ahead_never_takes_the_last_fetch_slots(env):
    env.store.put("seq", size=64 * CHUNK, seed=25)
    other = env.store.put("other", size=CHUNK, seed=26)
    gate = env.store.hold("seq", beyond=2 * CHUNK)
    async with env.core(parallel=4, max_readahead=32 * CHUNK) as core:
        seq = await open_path(core.fs, "seq")
        for i in range(2):  # then read-ahead of chunks 2..5 hangs at the gate
            await core.fs.read(seq, i * CHUNK, CHUNK)
        await gate_reached(gate)
        # The second chunk's fill may still be opening in a worker thread.
        await until(lambda: core.stats.bytes_in_flight >= 2 * CHUNK)
        assert core.stats.bytes_in_flight == 2 * CHUNK  # two slots for read-ahead, two kept
        fh = await open_path(core.fs, "other")
        with trio.fail_after(5):  # served by a slot read-ahead may not use
            assert bytes(await core.fs.read(fh, 0, 100)) == other[:100]
        gate.release()


async def test_a_read_of_queued_read_ahead_is_promoted(env):
    data = env.store.put("seq", size=64 * CHUNK, seed=28)
    gate = env.store.hold("seq", beyond=2 * CHUNK)
    async with env.core(parallel=4, max_readahead=32 * CHUNK) as core:
        seq = await open_path(core.fs, "seq")
        for i in range(2):  # then two of chunks 2..5 are read ahead (held), two queued
            await core.fs.read(seq, i * CHUNK, CHUNK)
        await gate_reached(gate)
        await until(lambda: core.reader.pending_fetches == 4)  # all four asked for
        await until(lambda: core.stats.bytes_in_flight >= 2 * CHUNK)  # fills open in threads
        assert core.stats.bytes_in_flight == 2 * CHUNK  # two read-ahead slots
        queued = min(
            key.index
            for key, fill in core.reader._fills.items()
            if any(not request.started for request in fill.requests)
        )
        got = {}

        async def reader():
            got["data"] = bytes(await core.fs.read(seq, queued * CHUNK, 100))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            # The read's GET is on its way, in a slot read-ahead may not use.
            assert core.stats.bytes_in_flight == 3 * CHUNK
            gate.release()
        assert env.store.chunks_fetched("seq", CHUNK).count(queued) == 1
        assert got["data"] == data[queued * CHUNK : queued * CHUNK + 100]


# -- caching and the checkpoint ----------------------------------------------------------------


async def test_second_read_is_served_from_the_cache_without_a_get(env):
    data = env.store.put("f", size=2 * CHUNK, seed=17)
    async with env.core() as core:
        fh = await open_path(core.fs, "f")
        first = bytes(await core.fs.read(fh, 100, 1000))
        await settle(core)
        hits = core.stats.range_hits
        second = bytes(await core.fs.read(fh, 100, 1000))
        assert first == second == data[100:1100]
        assert env.store.get_count("f", start=0) == 1
        assert core.stats.range_hits == hits + 1


async def test_a_fresh_core_over_the_same_cache_reads_with_zero_gets(env):
    data = env.store.put("dir/f", size=6 * CHUNK + 99, seed=21)
    async with env.core() as core:
        fh = await open_path(core.fs, "dir/f")
        assert await read_all(core.fs, fh, len(data)) == data
        await settle(core)
        assert core.stats.chunks_stored == 7
    gets = len(env.store.gets)
    async with env.core() as core:  # a restart: new memory, same cache directory
        fh = await open_path(core.fs, "dir/f")
        assert await read_all(core.fs, fh, len(data)) == data
        await settle(core)
        assert len(env.store.gets) == gets
        assert core.stats.gets == 0 and core.stats.misses == 0
        assert core.stats.range_hits >= 7


async def test_a_damaged_cache_chunk_is_a_miss_and_is_fetched_again(env):
    data = env.store.put("f", size=4 * CHUNK, seed=22)
    async with env.core() as core:
        fh = await open_path(core.fs, "f")
        assert await read_all(core.fs, fh, len(data)) == data
        await settle(core)
    files = value_files(env)
    assert len(files) == 4
    victim = files[1]
    raw = bytearray(victim.read_bytes())
    raw[-100] ^= 0xFF  # one flipped bit in the data, as a crash or a bad disk would leave
    victim.write_bytes(bytes(raw))
    gets = len(env.store.gets)
    async with env.core() as core:
        fh = await open_path(core.fs, "f")
        assert await read_all(core.fs, fh, len(data)) == data  # never the damaged bytes
        await settle(core)
        assert len(env.store.gets) == gets + 1
        assert core.stats.bad_chunks == 1
        assert core.stats.chunks_stored == 1  # the good copy replaced it
    async with env.core() as core:
        fh = await open_path(core.fs, "f")
        assert await read_all(core.fs, fh, len(data)) == data
        assert len(env.store.gets) == gets + 1


async def test_a_truncated_cache_chunk_is_a_miss(env):
    data = env.store.put("f", size=CHUNK, seed=23)
    async with env.core() as core:
        fh = await open_path(core.fs, "f")
        await read_all(core.fs, fh, len(data))
        await settle(core)
    (victim,) = value_files(env)
    victim.write_bytes(victim.read_bytes()[: CHUNK // 2])
    async with env.core() as core:
        fh = await open_path(core.fs, "f")
        assert bytes(await core.fs.read(fh, CHUNK - 10, 10)) == data[-10:]
        assert env.store.get_count("f") == 2
        assert core.stats.bad_chunks == 1


# -- time ------------------------------------------------------------------------------------


@pytest.mark.mock_clock
async def test_read_latency_is_measured_on_the_trio_clock(env):
    data = env.store.put("f", size=CHUNK, seed=24)
    gate = env.store.hold("f")
    async with env.core() as core:
        fh = await open_path(core.fs, "f")
        clock = trio.lowlevel.current_clock()
        got = {}

        async def slow_read():
            got["data"] = bytes(await core.fs.read(fh, 0, 10))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_read)
            await gate_reached(gate)
            clock.jump(2.0)  # the GET takes two (virtual) seconds
            gate.release()
        assert got["data"] == data[:10]
        assert bytes(await core.fs.read(fh, 0, 10)) == data[:10]  # from memory: no time
        counts = core.stats.read_latency_counts
        assert counts[0] == 1
        assert counts[bisect.bisect_left(LATENCY_BUCKETS, 2.0)] == 1
        assert sum(counts) == 2
        assert core.stats.read_latency_sum == 2.0


async def test_a_failed_read_ahead_is_not_remembered(env):
    data = env.store.put("f", size=4 * CHUNK, seed=27)
    env.store.fail_transient("f", at=CHUNK, times=3)  # exactly one fetch's attempts
    async with env.core() as core:
        fh = await open_path(core.fs, "f")
        for i in range(2):  # read-ahead of chunk 1 fails in the background
            await core.fs.read(fh, i * CHUNK // 2, CHUNK // 2)
        await settle(core)
        assert core.stats.read_errors == 1
        assert bytes(await core.fs.read(fh, CHUNK, CHUNK)) == data[CHUNK : 2 * CHUNK]
        assert env.store.get_count("f", start=CHUNK) == 4


async def test_server_pushback_halves_the_gets_in_flight(env):
    data = env.store.put("f", size=64 * CHUNK, seed=29)
    env.store.fail_transient("f", at=5 * CHUNK, times=1, cause="http_429")  # one SlowDown
    async with env.core(parallel=16, max_readahead=32 * CHUNK) as core:
        assert core.reader.budget.gets_allowed == 16
        fh = await open_path(core.fs, "f")
        assert await read_all(core.fs, fh, len(data), request=CHUNK) == data
        await settle(core)
        assert core.stats.retries == {"http_429": 1}
        assert core.reader.budget.gets_allowed < 16  # halved, then regrown by a few at most
        assert env.store.max_in_flight <= 16
