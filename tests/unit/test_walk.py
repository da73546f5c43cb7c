"""The walk detector (:mod:`rangefs.walk`): pure, so examples and properties."""

import itertools

from hypothesis import given
from hypothesis import strategies as st

from rangefs.namespace import DirListing, Entry
from rangefs.stats import Stats
from rangefs.walk import AHEAD_HOLD, WALK_AFTER, Walk, Walks, finished, opened

NAMES = tuple(f"f{i:04d}" for i in range(100))


def read_in_order(walk: Walk, names: list[str], ahead: int = 8) -> tuple[Walk, list[range]]:
    asked = []
    for name in names:
        walk, wanted = opened(walk, name, ahead)
        walk = finished(walk, name)
        asked.append(wanted)
    return walk, asked


def test_a_walk_is_trusted_after_files_read_whole_in_order() -> None:
    walk, asked = read_in_order(Walk(NAMES), list(NAMES[:5]))
    assert [list(r) for r in asked[:WALK_AFTER]] == [[]] * WALK_AFTER
    assert asked[WALK_AFTER] == range(WALK_AFTER + 1, WALK_AFTER + 9)
    assert asked[WALK_AFTER + 1] == range(WALK_AFTER + 9, WALK_AFTER + 10)  # one more each open
    assert walk.walking


def test_a_file_not_read_to_its_end_stops_nothing_from_starting() -> None:
    walk = Walk(NAMES)
    for name in NAMES[:10]:
        walk, wanted = opened(walk, name)  # opened in order, never read whole (head -c)
        assert not wanted
    assert not walk.walking


def test_a_random_open_stops_the_walk_and_a_skip_within_what_was_asked_does_not() -> None:
    walk, _ = read_in_order(Walk(NAMES), list(NAMES[:4]))
    skipped, wanted = opened(walk, NAMES[6])  # rsync skips files already up to date
    assert skipped.walking
    stopped, wanted = opened(finished(skipped, NAMES[6]), NAMES[1])
    assert not stopped.walking and not wanted


def test_the_same_file_opened_again_changes_nothing() -> None:
    walk, _ = read_in_order(Walk(NAMES), list(NAMES[:4]))
    assert opened(walk, NAMES[3]) == (walk, range(0))


def test_a_name_not_in_the_listing_stops_the_walk() -> None:
    walk, _ = read_in_order(Walk(NAMES), list(NAMES[:4]))
    walk, wanted = opened(walk, "zzz")
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
    walk = Walk(files)
    seen: list[int] = []
    for n, i in enumerate(opens):
        i %= count
        walk, wanted = opened(walk, files[i], ahead)
        for j in wanted:
            assert i < j <= i + ahead < count + ahead
            assert j not in seen or walk.run == 0
        if not walk.walking:
            assert not wanted
        seen = [] if not walk.walking else seen + list(wanted)
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
    walk = Walk(NAMES)
    for i in indices:
        walk, wanted = opened(walk, NAMES[i])
        walk = finished(walk, NAMES[i])
        assert not wanted and not walk.walking


def test_walks_fetch_small_files_whole_large_ones_a_chunk_within_the_room() -> None:
    entries = {f"f{i}": Entry(f"f{i}", False, size=10 if i % 2 else 1000) for i in range(10)}
    entries["d"] = Entry("d", True)
    listing = DirListing(entries, fetched=0.0, mtime=0.0)
    stats = Stats()
    walks = Walks(stats, chunk_size=100, ahead_files=4)
    for i in range(WALK_AFTER):
        assert walks.opened("dir", f"f{i}", listing, room=10_000) == []
        walks.finished("dir", f"f{i}")
    fetched = walks.opened("dir", f"f{WALK_AFTER}", listing, room=150)
    assert [e.name for e in fetched] == ["f3", "f4", "f5"]  # 10 + 100 + 10 fit in 150, 100 more not
    assert walks.ahead() == 120 and stats.walk_files_ahead == 3
    walks.finished("dir", "f2")
    assert [e.name for e in walks.opened("dir", "f3", listing, room=10_000)] == ["f6", "f7"]
    assert stats.walk_files_opened == 1
    walks.opened("dir", "f0", listing, room=10_000)  # a random open: the walk stops
    assert walks.ahead() == 0


def test_the_walk_counters_are_metrics() -> None:
    from rangefs.metrics import StatsCollector

    stats = Stats(walk_files_ahead=7, walk_files_opened=5)
    values = {
        m.name: m.samples[0].value for m in StatsCollector(stats, lambda: 0).collect() if m.samples
    }
    assert values["rangefs_walk_files_ahead"] == 7
    assert values["rangefs_walk_files_opened"] == 5
    assert stats.as_dict()["walk_files_opened"] == 5


def test_files_ahead_stop_counting_against_the_budget_when_the_walker_went_away() -> None:
    now = [0.0]
    entries = {f"f{i}": Entry(f"f{i}", False, size=10) for i in range(10)}
    listing = DirListing(entries, fetched=0.0, mtime=0.0)
    walks = Walks(Stats(), chunk_size=100, ahead_files=4, clock=lambda: now[0])
    for i in range(WALK_AFTER + 1):
        walks.opened("dir", f"f{i}", listing, room=10_000)
        walks.finished("dir", f"f{i}")
    assert walks.ahead() == 40
    now[0] = AHEAD_HOLD + 1  # the walker was killed: nothing opens the files
    assert walks.ahead() == 0
