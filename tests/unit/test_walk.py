"""The walk detector (:mod:`rangefs.fs.walk`): the pure policy by examples and properties,
and :class:`~rangefs.fs.walk.Walks` over a fake index cursor."""

import itertools

import trio
from hypothesis import given
from hypothesis import strategies as st

from rangefs.cache.metadata_index import Entry, ListingInfo
from rangefs.fs.walk import AHEAD_HOLD, WALK_AFTER, Walk, Walks, finished, opened
from rangefs.stats import Stats

NAMES = tuple(f"f{i:04d}" for i in range(100))


def open_at(walk: Walk, files: tuple[str, ...], i: int, ahead: int = 8) -> tuple[Walk, range]:
    """Opens ``files[i]``, telling the policy where it is after the last file opened."""
    last = files.index(walk.last) if walk.last is not None else None
    step = i - last if last is not None and i > last else None
    return opened(walk, files[i], step, ahead)


def read_in_order(walk: Walk, count: int, ahead: int = 8) -> tuple[Walk, list[range]]:
    asked = []
    for i in range(count):
        walk, wanted = open_at(walk, NAMES, i, ahead)
        walk = finished(walk, NAMES[i])
        asked.append(wanted)
    return walk, asked


def test_a_walk_is_trusted_after_files_read_whole_in_order() -> None:
    walk, asked = read_in_order(Walk(), 7)
    assert [list(r) for r in asked[:WALK_AFTER]] == [[]] * WALK_AFTER
    assert asked[WALK_AFTER] == range(0, 8)  # the 8 files after the one opened
    assert [list(r) for r in asked[WALK_AFTER + 1 : WALK_AFTER + 4]] == [[]] * 3
    assert asked[WALK_AFTER + 4] == range(4, 8)  # topped up once half remain asked for
    assert walk.walking


def test_a_file_not_read_to_its_end_stops_nothing_from_starting() -> None:
    walk = Walk()
    for i in range(10):
        walk, wanted = open_at(walk, NAMES, i)  # opened in order, never read whole (head -c)
        assert not wanted
    assert not walk.walking


def test_a_random_open_stops_the_walk_and_a_skip_within_what_was_asked_does_not() -> None:
    walk, _ = read_in_order(Walk(), 4)
    skipped, wanted = open_at(walk, NAMES, 6)  # rsync skips files already up to date
    assert skipped.walking and wanted == range(4, 8)
    stopped, wanted = open_at(finished(skipped, NAMES[6]), NAMES, 1)
    assert not stopped.walking and not wanted


def test_the_same_file_opened_again_changes_nothing() -> None:
    walk, _ = read_in_order(Walk(), 4)
    assert opened(walk, NAMES[3], None) == (walk, range(0))


def test_a_name_not_after_the_last_one_stops_the_walk() -> None:
    walk, _ = read_in_order(Walk(), 4)
    walk, wanted = opened(walk, "zzz", None)
    assert not walk.walking and not wanted


@given(
    count=st.integers(1, 60),
    opens=st.lists(st.integers(0, 59), max_size=80),
    ahead=st.integers(1, 16),
    read_whole=st.lists(st.booleans(), min_size=80, max_size=80),
)
def test_each_file_is_asked_for_at_most_once_ahead_of_the_reader_and_within_the_cap(
    count: int, opens: list[int], ahead: int, read_whole: list[bool]
) -> None:
    files = NAMES[:count]
    walk = Walk()
    seen: list[int] = []
    for n, i in enumerate(opens):
        i %= count
        walk, wanted = open_at(walk, files, i, ahead)
        absolute = [i + 1 + j for j in wanted]
        for j in absolute:
            assert i < j <= i + ahead
            assert j not in seen or walk.run == 0
        if not walk.walking:
            assert not wanted
        seen = [] if not walk.walking else seen + absolute
        assert len(seen) == len(set(seen))
        if read_whole[n]:
            walk = finished(walk, files[i])


@given(
    st.lists(st.integers(0, 99), min_size=1, max_size=40).filter(
        lambda xs: all(b != a + 1 for a, b in itertools.pairwise(xs))
    )
)
def test_a_reader_that_never_opens_the_next_file_never_walks(indices: list[int]) -> None:
    """Random opens, each file read whole: a walk starts only with the next file of the
    listing, so a reader that never opens it triggers nothing."""
    walk = Walk()
    for i in indices:
        walk, wanted = open_at(walk, NAMES, i)
        walk = finished(walk, NAMES[i])
        assert not wanted and not walk.walking


class Cursor:
    """The index's ``files`` cursor over one listing, counting calls and rows read."""

    def __init__(self, entries: list[Entry]) -> None:
        self.entries = sorted(entries)
        self.calls = 0
        self.rows = 0

    async def __call__(self, listing: int, after: str, limit: int) -> list[Entry]:
        self.calls += 1
        page = [e for e in self.entries if e.name > after and not e.is_dir][:limit]
        self.rows += len(page)
        return page


LISTING = ListingInfo(1, "dir/", listed_at=0.0, mtime=0.0, count=0, hidden=0)


def test_walks_fetch_small_files_whole_large_ones_a_chunk_within_the_room() -> None:
    async def main() -> None:
        files = [Entry(f"f{i}", False, size=10 if i % 2 else 1000) for i in range(10)]
        cursor = Cursor([*files, Entry("e", True)])  # a directory in the listing is skipped
        stats = Stats()
        walks = Walks(stats, chunk_size=100, files_after=cursor, ahead_files=4)
        for i in range(WALK_AFTER):
            assert await walks.opened("dir", f"f{i}", LISTING, room=10_000) == []
            walks.finished("dir", f"f{i}")
        fetched = await walks.opened("dir", f"f{WALK_AFTER}", LISTING, room=150)
        assert [e.name for e in fetched] == ["f3", "f4", "f5"]  # 10+100+10 fit in 150, not 100
        assert walks.ahead() == 120 and stats.walk_files_ahead == 3
        walks.finished("dir", "f2")
        opened3 = await walks.opened("dir", "f3", LISTING, room=10_000)
        assert [e.name for e in opened3] == ["f6", "f7"]
        assert stats.walk_files_opened == 1
        await walks.opened("dir", "f0", LISTING, room=10_000)  # a random open: the walk stops
        assert walks.ahead() == 0

    trio.run(main)


def test_a_long_walk_reads_the_index_once_per_window_and_holds_a_window_only() -> None:
    """A directory of 5,000 files walked to its end: the cursor is read about once per
    ``ahead_files`` files, and the state never holds more than two windows of entries."""

    async def main() -> None:
        cursor = Cursor([Entry(f"f{i:05d}", False, size=10) for i in range(5000)])
        walks = Walks(Stats(), chunk_size=100, files_after=cursor, ahead_files=32)
        fetched: list[str] = []
        for entry in cursor.entries:
            fetched += [e.name for e in await walks.opened("d", entry.name, LISTING, room=10**9)]
            walks.finished("d", entry.name)
            assert len(walks._dirs["d"].after) <= 2 * 32
        assert fetched == [e.name for e in cursor.entries[WALK_AFTER + 1 :]]
        assert cursor.calls <= 5000 // 32 + 3

    trio.run(main)


def test_random_opens_read_the_index_only_for_names_after_the_last_one() -> None:
    async def main() -> None:
        cursor = Cursor([Entry(f"f{i:03d}", False, size=10) for i in range(100)])
        walks = Walks(Stats(), chunk_size=100, files_after=cursor, ahead_files=8)
        for i in (50, 40, 30, 20, 10):  # newest first: never a step forward
            assert await walks.opened("d", f"f{i:03d}", LISTING, room=10**9) == []
            walks.finished("d", f"f{i:03d}")
        assert cursor.calls == 0

    trio.run(main)


def test_the_walk_counters_are_metrics() -> None:
    from rangefs.daemon.metrics import StatsCollector

    stats = Stats(walk_files_ahead=7, walk_files_opened=5)
    values = {
        m.name: m.samples[0].value for m in StatsCollector(stats, lambda: 0).collect() if m.samples
    }
    assert values["rangefs_walk_files_ahead"] == 7
    assert values["rangefs_walk_files_opened"] == 5
    assert stats.as_dict()["walk_files_opened"] == 5


def test_files_ahead_stop_counting_against_the_budget_when_the_walker_went_away() -> None:
    async def main() -> None:
        now = [0.0]
        cursor = Cursor([Entry(f"f{i}", False, size=10) for i in range(10)])
        walks = Walks(Stats(), 100, cursor, ahead_files=4, clock=lambda: now[0])
        for i in range(WALK_AFTER + 1):
            await walks.opened("dir", f"f{i}", LISTING, room=10_000)
            walks.finished("dir", f"f{i}")
        assert walks.ahead() == 40
        now[0] = AHEAD_HOLD + 1  # the walker was killed: nothing opens the files
        assert walks.ahead() == 0

    trio.run(main)
