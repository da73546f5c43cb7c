"""The metadata index on its own: pages in, pages out, generations, and files it must not
trust (damaged, foreign, of another schema, left by a writer killed mid-listing)."""

import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rangefs.cache.metadata_index import (
    APPLICATION_ID,
    DAMAGED_SUFFIX,
    INDEX_FILE,
    SCHEMA_VERSION,
    Entry,
    IndexFailed,
    MetadataIndex,
    Scope,
)
from tests.support import SRC_DIR

SCOPE = Scope("bucket", endpoint="http://127.0.0.1:1")


def files(n: int, start: int = 0) -> list[Entry]:
    return [Entry(f"f{i:06d}", False, i, 1.0 + i, f'"e{i}"') for i in range(start, start + n)]


def fill(index: MetadataIndex, prefix: str, entries: list[Entry], page: int = 1000) -> int:
    pending = index.begin(SCOPE, prefix)
    for at in range(0, len(entries), page):
        index.add(pending, entries[at : at + page])
    return index.commit(pending, 5.0, 0).id


@pytest.fixture
def index(tmp_path: Path) -> MetadataIndex:
    ix = MetadataIndex(tmp_path, keep_superseded=0)
    yield ix
    ix.close()


def test_pages_in_and_out_by_cursor_and_by_offset(index):
    listing = fill(index, "d/", files(2500)[::-1], page=1000)  # pages arrive in any order
    info = index.listing(SCOPE, "d/")
    assert info is not None and (info.id, info.count, info.mtime) == (listing, 2500, 5.0)
    names, after = [], None
    while page := index.entries(listing, after, 256):
        names += [row[0] for row in page]
        after = page[-1][0]
    assert names == [f"f{i:06d}" for i in range(2500)]
    assert [row[0] for row in index.entries_at(listing, 1999, 3)] == names[1999:2002]
    assert index.entries_at(listing, 42, 1) == [("f000042", 0, 42, 43_000_000_000)]
    assert index.entries_at(listing, 2500, 10) == []
    assert index.entry(listing, "f000042") == Entry("f000042", False, 42, 43.0, '"e42"')
    assert index.lookup(SCOPE, "d/", "nope") is None


def test_files_after_a_name_skip_directories(index):
    dirs = [Entry(f"f{i:06d}x", True) for i in range(0, 10, 2)]
    listing = fill(index, "d/", files(10) + dirs)
    assert [e.name for e in index.files(listing, "f000003", 4)] == [
        "f000004", "f000005", "f000006", "f000007",
    ]  # fmt: skip
    assert [e.name for e in index.files(listing, "f000008x", 5)] == ["f000009"]


def test_a_directory_shadows_a_file_of_the_same_name_in_either_order(index):
    pending = index.begin(SCOPE, "")
    assert index.add(pending, [Entry("a", False, 1), Entry("b", True)]) == 0
    assert index.add(pending, [Entry("a", True, mtime=7.0), Entry("b", False, 2)]) == 2
    info = index.commit(pending, 0.0, 0)
    assert [row[:2] for row in index.entries(info.id, None, 10)] == [("a", 1), ("b", 1)]


def test_a_pending_listing_is_invisible_until_it_is_committed(index):
    old = fill(index, "d/", files(3))
    pending = index.begin(SCOPE, "d/")
    index.add(pending, files(5, start=100))
    assert index.listing(SCOPE, "d/").id == old  # the old one is still the one shown
    index.pin(old)  # an open directory reading the old one
    new = index.commit(pending, 0.0, 0)
    assert index.listing(SCOPE, "d/") == new
    assert [row[0] for row in index.entries(old, None, 10)] == ["f000000", "f000001", "f000002"]
    index.unpin(old)
    assert index.entries(old, None, 10) == []  # superseded and no longer read: deleted
    assert index.stats().listings == 1 and index.stats().entries == 5


def test_a_superseded_listing_is_kept_a_while_for_other_mounts(tmp_path):
    with MetadataIndexFile(tmp_path) as index:
        old = fill(index, "d/", files(3))
        fill(index, "d/", files(1))
        assert len(index.entries(old, None, 10)) == 3  # another mount may be reading it
    with MetadataIndexFile(tmp_path, keep_superseded=0) as index:
        assert index.entries(old, None, 10) == []


def test_an_abandoned_listing_takes_no_more_pages(index):
    pending = index.begin(SCOPE, "d/")
    index.add(pending, files(2))
    index.abandon(pending)
    with pytest.raises(IndexFailed):
        index.add(pending, files(2, start=2))
    with pytest.raises(IndexFailed):
        index.commit(pending, 0.0, 0)
    assert index.listing(SCOPE, "d/") is None and index.stats().entries == 0


def test_scopes_do_not_share_listings(index):
    fill(index, "", files(1))
    for other in (
        Scope("bucket"),
        Scope("bucket", endpoint="http://127.0.0.1:1", version_at=1.0),
        Scope("other", endpoint="http://127.0.0.1:1"),
    ):
        assert not index.holds(other, "")
    assert index.holds(SCOPE, "") and not index.holds(SCOPE, "sub/")


def test_freshness_is_the_callers_choice(index):
    pending = index.begin(SCOPE, "")
    info = index.commit(pending, 0.0, 0, listed_at=1000.0)
    assert info.fresh(60, now=1059.0) and not info.fresh(60, now=1061.0)
    assert not info.fresh(60, now=999.0)  # a clock that went back
    assert index.listing(SCOPE, "") == info  # however old: offline mode may serve it


def test_the_file_is_owner_only_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        MetadataIndex(tmp_path).close()
    finally:
        os.umask(old)
    assert (tmp_path / INDEX_FILE).stat().st_mode & 0o777 == 0o600


def test_a_writer_killed_mid_listing_leaves_the_last_complete_listing(tmp_path):
    with MetadataIndexFile(tmp_path) as index:
        fill(index, "d/", files(3))
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from rangefs.cache.metadata_index import Entry, MetadataIndex, Scope
        index = MetadataIndex(Path({str(tmp_path)!r}))
        scope = Scope("bucket", endpoint="http://127.0.0.1:1")
        pending = index.begin(scope, "d/")
        for page in range(5):
            index.add(pending, [Entry(f"new{{page}}-{{i}}", False) for i in range(1000)])
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    env = {**os.environ, "PYTHONPATH": str(SRC_DIR)}
    done = subprocess.run([sys.executable, "-c", script], env=env, timeout=60, check=False)
    assert done.returncode == -9
    with MetadataIndexFile(tmp_path) as index:
        info = index.listing(SCOPE, "d/")
        assert info is not None and info.count == 3
        assert [row[0] for row in index.entries(info.id, None, 10)] == [
            "f000000",
            "f000001",
            "f000002",
        ]
        assert index.stats().entries == 3  # the dead writer's 5000 rows are gone


class MetadataIndexFile:
    def __init__(self, directory: Path, **kwargs: float) -> None:
        self.directory = directory
        self.kwargs = kwargs

    def __enter__(self) -> MetadataIndex:
        self.index = MetadataIndex(self.directory, **self.kwargs)
        return self.index

    def __exit__(self, *exc: object) -> None:
        self.index.close()


def damage_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    "content",
    [b"SQLite format 3\0" + b"\xff" * 4000, b"not a database at all\n" * 300],
    ids=["bad-header", "text"],
)
def test_a_damaged_file_is_set_aside_in_one_line_and_rebuilt(tmp_path, caplog, content):
    path = tmp_path / INDEX_FILE
    path.write_bytes(content)
    with MetadataIndexFile(tmp_path) as index:
        assert index.listing(SCOPE, "") is None
        fill(index, "", files(2))
        assert index.stats().entries == 2
    lines = damage_lines(caplog)
    assert len(lines) == 1, lines
    assert "damaged or not ours" in lines[0] and str(path) in lines[0]
    assert (tmp_path / (INDEX_FILE + DAMAGED_SUFFIX)).exists()


def test_a_file_of_another_schema_or_application_is_rebuilt(tmp_path, caplog):
    path = tmp_path / INDEX_FILE
    with MetadataIndexFile(tmp_path) as index:
        fill(index, "", files(2))
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with MetadataIndexFile(tmp_path) as index:
        assert index.listing(SCOPE, "") is None
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    db = sqlite3.connect(foreign / INDEX_FILE)
    db.execute("CREATE TABLE notes (text TEXT)")
    db.close()
    with MetadataIndexFile(foreign) as index:
        fill(index, "", files(1))
        assert index.stats().listings == 1
    lines = damage_lines(caplog)
    assert len(lines) == 2, lines
    assert f"schema {SCHEMA_VERSION + 1}" in lines[0]
    assert f"application id {APPLICATION_ID:#x}" not in lines[1]


def test_damage_found_while_running_is_a_miss_and_a_rebuild(tmp_path, caplog):
    with MetadataIndexFile(tmp_path) as index:
        listing = fill(index, "d/", files(20000))
    path = tmp_path / INDEX_FILE
    size = path.stat().st_size
    with path.open("r+b") as f:  # keep the header and schema page, trash the data pages
        f.seek(8 * 4096)
        f.write(b"\x5a" * (size - 8 * 4096))
    with MetadataIndexFile(tmp_path) as index:
        assert index.entries_at(listing, 15000, 10) == []
        assert index.listing(SCOPE, "d/") is None
        fill(index, "d/", files(2))
        assert index.stats().entries == 2
    lines = damage_lines(caplog)
    assert len(lines) == 1 and "damaged" in lines[0], lines
