"""The metadata index: directory listings and object attributes kept on disk (SQLite).

Why: a listing of a big prefix costs seconds to minutes of LIST requests, and without this
index it is forgotten at every unmount. The index keeps each listing of one directory level
(one ``(scope, prefix)``) with when it was listed, and one row per name in it (size, ETag or
versionId, mtime). Within ``--metadata-ttl`` a remount answers from it without any request;
offline mode may serve older listings, so **no read here looks at a TTL**: every listing
comes with ``listed_at`` and the caller decides what is fresh enough.

Generations: a listing is written page by page into a *pending* generation, invisible to
readers, and made current in one transaction at the end (the previous generation becomes
*superseded* in the same transaction and is deleted later, once no open directory reads it).
So no half-written listing is ever shown, even after kill -9 (WAL journal; a pending
generation whose writer died is deleted at the next open).

Robustness: the file carries an application id and a schema version. A file that is not
ours, of another schema version, or damaged (SQLITE_CORRUPT / SQLITE_NOTADB, at open or
later) is logged in one line, moved aside (``metadata.db.damaged``) and rebuilt empty: the
next listings come from S3 again. Never a crash.

Memory: readers page through a listing (by name, or by offset), so a prefix of a million
keys never has to be held in RAM.

Threads: :class:`MetadataIndex` blocks (one connection, one lock) and is safe to call from
any thread; async code uses :class:`AsyncMetadataIndex`, which runs every call in a worker
thread under one :class:`trio.CapacityLimiter`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TypeVar

import trio

from rangefs.errors import RangefsError

if TYPE_CHECKING:
    from rangefs.config import Config

log = logging.getLogger(__name__)

T = TypeVar("T")

INDEX_FILE = "metadata.db"  # in the cache dir, next to diskcache's cache.db
DAMAGED_SUFFIX = ".damaged"  # a damaged or foreign file is moved aside under this name
APPLICATION_ID = 0x52474D49  # "RGMI": tells our file from any other SQLite file
SCHEMA_VERSION = 1  # bump when the tables change: an older file is then rebuilt
SQLITE_TIMEOUT = 30.0  # seconds to wait for another process's write lock
WAL_LIMIT = 64 * 1024 * 1024  # bytes the WAL file is cut back to after a checkpoint
DAMAGE_NAMES = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})

# listings.state
PENDING = 0  # being written: never read
CURRENT = 1  # the listing of (scope, prefix): at most one per pair
SUPERSEDED = 2  # replaced; deleted once no open directory reads it (see KEEP_SUPERSEDED)

# Another mount sharing the cache dir may still page through a listing this process replaced:
# a superseded listing is kept this long (seconds) unless this process alone could read it.
KEEP_SUPERSEDED = 300.0
STALE_PENDING = 86400.0  # a pending listing this old is garbage even if its pid lives (reused)

SCHEMA = """
CREATE TABLE IF NOT EXISTS listings (
    id INTEGER PRIMARY KEY,
    scope TEXT NOT NULL,
    prefix TEXT NOT NULL,
    state INTEGER NOT NULL,
    listed_at REAL NOT NULL,
    superseded_at REAL NOT NULL DEFAULT 0,
    mtime REAL NOT NULL,
    count INTEGER NOT NULL,
    hidden INTEGER NOT NULL,
    writer INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS listings_by_source ON listings (scope, prefix, state);
CREATE TABLE IF NOT EXISTS entries (
    listing INTEGER NOT NULL,
    name TEXT NOT NULL,
    is_dir INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    etag TEXT NOT NULL,
    version_id TEXT NOT NULL,
    PRIMARY KEY (listing, name)
) WITHOUT ROWID;
"""


class IndexFailed(RangefsError):
    """The index could not be written (disk full, I/O error, rebuilt under a writer)."""


class Entry(NamedTuple):
    """One name in a directory: a file (an object) or a directory (a common prefix).

    A named tuple, not a dataclass: a readdir of a million names makes a million of them,
    and a tuple is made several times faster."""

    name: str
    is_dir: bool
    size: int = 0
    mtime: float = 0.0
    etag: str = ""
    version_id: str = ""  # on a --version-at mount: the S3 version this entry shows


# One name of a listing as readdir pages through it: (name, is_dir 0 or 1, size, mtime in
# ns, as int(mtime * 1e9) would make it). A plain row as SQLite makes it: a readdir of a
# million names reads a million of them, and making an Entry of each (a Python call) cost
# more than the query.
DirRow = tuple[str, int, int, int]


@dataclass(frozen=True, slots=True)
class Scope:
    """Everything besides the prefix that changes what a listing means: where S3 is
    (endpoint, region, profile), the bucket, and the ``--version-at`` moment. Two mounts
    with the same scope share listings; any difference keeps them apart."""

    bucket: str
    endpoint: str = ""
    region: str = ""
    profile: str = ""
    version_at: float | None = None

    @classmethod
    def of(cls, config: Config) -> Scope:
        return cls(
            bucket=config.bucket,
            endpoint=config.endpoint_url or "",
            region=config.region or "",
            profile=config.profile or "",
            version_at=config.version_at,
        )

    @property
    def token(self) -> str:
        """The scope as stored: a stable JSON text."""
        return json.dumps(
            [self.endpoint, self.region, self.profile, self.bucket, self.version_at],
            separators=(",", ":"),
        )


@dataclass(frozen=True, slots=True)
class ListingInfo:
    """A complete listing of ``prefix`` (one directory level): when it was listed (epoch
    seconds, wall clock, so it means the same after a remount), the directory's mtime, how
    many names it holds and how many keys were hidden."""

    id: int
    prefix: str
    listed_at: float
    mtime: float
    count: int
    hidden: int

    def fresh(self, ttl: float, now: float | None = None) -> bool:
        """Listed less than ``ttl`` seconds ago (a clock that went back makes it stale)."""
        age = (time.time() if now is None else now) - self.listed_at
        return 0 <= age < ttl


@dataclass(frozen=True, slots=True)
class PendingListing:
    """A listing being written (see :meth:`MetadataIndex.begin`)."""

    id: int
    scope: Scope
    prefix: str
    epoch: int  # the file it was begun in: a rebuilt index drops it


@dataclass(frozen=True, slots=True)
class IndexStats:
    path: Path
    listings: int
    entries: int
    disk_bytes: int  # the file and its WAL


def _row_entry(row: tuple[str, int, int, float, str, str]) -> Entry:
    return Entry(row[0], bool(row[1]), row[2], row[3], row[4], row[5])


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class MetadataIndex:
    """The index file of one cache directory. Blocking; thread-safe."""

    def __init__(self, directory: Path, keep_superseded: float = KEEP_SUPERSEDED) -> None:
        self.path = directory / INDEX_FILE
        self.keep_superseded = keep_superseded
        self._lock = threading.RLock()
        self._pins: dict[int, int] = {}  # listing id -> open directories reading it
        self._pin_lock = threading.Lock()  # never held across SQLite: pin() is called from trio
        self._superseded: set[int] = set()  # listings this process replaced, not yet deleted
        self._epoch = 0
        self._db = self._open()

    # -- opening, damage, closing ------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        """Opens the file, or rebuilds it once if it is damaged, foreign or of another
        schema version."""
        try:
            return self._connect()
        except (sqlite3.DatabaseError, _Foreign) as exc:
            self._set_aside(str(exc))
            return self._connect()

    def _connect(self) -> sqlite3.Connection:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)  # owner-only, whatever umask
        os.close(fd)
        db = sqlite3.connect(
            self.path, timeout=SQLITE_TIMEOUT, isolation_level=None, check_same_thread=False
        )
        try:
            app, version = (
                db.execute("PRAGMA application_id").fetchone()[0],
                db.execute("PRAGMA user_version").fetchone()[0],
            )
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables and (app, version) != (APPLICATION_ID, SCHEMA_VERSION):
                raise _Foreign(
                    f"not a rangefs metadata index of schema {SCHEMA_VERSION} "
                    f"(application id {app:#x}, schema {version})"
                )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: a crash of the process loses nothing
            db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
            db.executescript(SCHEMA)
            if not tables:
                db.execute(f"PRAGMA application_id={APPLICATION_ID}")
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._drop_dead_writers(db)
        except BaseException:
            db.close()
            raise
        return db

    def _drop_dead_writers(self, db: sqlite3.Connection) -> None:
        """Pending generations whose writer is gone (kill -9 mid-listing) are deleted, and
        superseded ones past their keeping time; a live writer's pending listing stays."""
        rows = db.execute(
            "SELECT id, writer, listed_at FROM listings WHERE state = ?", (PENDING,)
        ).fetchall()
        stale = time.time() - STALE_PENDING
        self._delete_listings(
            db, [i for i, writer, began in rows if began < stale or not _pid_alive(writer)]
        )
        self._delete_listings(db, self._expired(db))

    def _expired(self, db: sqlite3.Connection) -> list[int]:
        """Superseded listings that nobody should read any more: not pinned here, and
        superseded longer than ``keep_superseded`` ago."""
        rows = db.execute(
            "SELECT id FROM listings WHERE state = ? AND superseded_at <= ?",
            (SUPERSEDED, time.time() - self.keep_superseded),
        ).fetchall()
        with self._pin_lock:
            return [r[0] for r in rows if r[0] not in self._pins]

    @staticmethod
    def _delete_listings(db: sqlite3.Connection, ids: Iterable[int]) -> None:
        for listing in ids:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM entries WHERE listing = ?", (listing,))
                db.execute("DELETE FROM listings WHERE id = ?", (listing,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def _set_aside(self, why: str) -> None:
        log.warning(
            "metadata index %s is damaged or not ours (%s): moved aside to %s, rebuilding it",
            self.path,
            why,
            self.path.name + DAMAGED_SUFFIX,
        )
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.unlink(f"{self.path}{suffix}")
        try:
            os.replace(self.path, f"{self.path}{DAMAGED_SUFFIX}")
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        self._epoch += 1

    def _rebuild(self, exc: sqlite3.DatabaseError) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        with self._pin_lock:
            self._pins.clear()
            self._superseded.clear()
        self._set_aside(f"{getattr(exc, 'sqlite_errorname', '')}: {exc}")
        self._db = self._connect()

    def _run(self, what: str, fn: Callable[[sqlite3.Connection], T], default: T) -> T:
        """Runs ``fn`` under the lock. Damage rebuilds the file and gives ``default`` (a
        miss); any other SQLite error is :class:`IndexFailed`."""
        with self._lock:
            try:
                return fn(self._db)
            except sqlite3.DatabaseError as exc:
                if getattr(exc, "sqlite_errorname", "") in DAMAGE_NAMES:
                    self._rebuild(exc)
                    return default
                raise IndexFailed(f"metadata index {self.path}: {what}: {exc}") from exc

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.close()

    # -- reading (never by TTL: see the module docstring) -----------------------------------

    def listing(self, scope: Scope, prefix: str) -> ListingInfo | None:
        """The current complete listing of ``prefix``, however old, or None."""

        def read(db: sqlite3.Connection) -> ListingInfo | None:
            row = db.execute(
                "SELECT id, listed_at, mtime, count, hidden FROM listings "
                "WHERE scope = ? AND prefix = ? AND state = ? ORDER BY id DESC LIMIT 1",
                (scope.token, prefix, CURRENT),
            ).fetchone()
            return None if row is None else ListingInfo(row[0], prefix, *row[1:])

        return self._run("read listing", read, None)

    def holds(self, scope: Scope, prefix: str) -> bool:
        """True if the index holds a complete listing of ``prefix`` (a mount's root), however
        old: what offline mode needs to come up without S3."""
        return self.listing(scope, prefix) is not None

    def entry(self, listing: int, name: str) -> Entry | None:
        """The entry ``name`` of listing ``listing``, or None."""

        def read(db: sqlite3.Connection) -> Entry | None:
            row = db.execute(
                "SELECT name, is_dir, size, mtime, etag, version_id FROM entries "
                "WHERE listing = ? AND name = ?",
                (listing, name),
            ).fetchone()
            return None if row is None else _row_entry(row)

        return self._run("read entry", read, None)

    def lookup(self, scope: Scope, prefix: str, name: str) -> Entry | None:
        """The entry ``name`` in the current listing of ``prefix``, however old, or None."""
        info = self.listing(scope, prefix)
        return None if info is None else self.entry(info.id, name)

    def entries(self, listing: int, after: str | None, limit: int) -> list[DirRow]:
        """Up to ``limit`` rows of ``listing`` in name order, after ``after`` (from the
        first if None): a cursor that costs the same at the millionth name as at the first."""

        def read(db: sqlite3.Connection) -> list[DirRow]:
            return db.execute(
                "SELECT name, is_dir, size, CAST(mtime * 1e9 AS INTEGER) FROM entries "
                "WHERE listing = ? AND name > ? ORDER BY name LIMIT ?",
                (listing, "" if after is None else after, limit),
            ).fetchall()

        return self._run("read entries", read, [])

    def files(self, listing: int, after: str, limit: int) -> list[Entry]:
        """Up to ``limit`` regular files (no directories) of ``listing`` after ``after`` in
        name order: the next files a reader walking the directory will open."""

        def read(db: sqlite3.Connection) -> list[Entry]:
            rows = db.execute(
                "SELECT name, is_dir, size, mtime, etag, version_id FROM entries "
                "WHERE listing = ? AND name > ? AND is_dir = 0 ORDER BY name LIMIT ?",
                (listing, after, limit),
            ).fetchall()
            return [_row_entry(r) for r in rows]

        return self._run("read entries", read, [])

    def entries_at(self, listing: int, offset: int, limit: int) -> list[DirRow]:
        """Up to ``limit`` rows of ``listing`` from position ``offset`` (0-based) in name
        order; for a reader that seeks (``seekdir``), slower than :meth:`entries` far in."""

        def read(db: sqlite3.Connection) -> list[DirRow]:
            return db.execute(
                "SELECT name, is_dir, size, CAST(mtime * 1e9 AS INTEGER) FROM entries "
                "WHERE listing = ? ORDER BY name LIMIT ? OFFSET ?",
                (listing, limit, offset),
            ).fetchall()

        return self._run("read entries", read, [])

    # -- writing a listing -------------------------------------------------------------------

    def begin(self, scope: Scope, prefix: str) -> PendingListing:
        """Starts a pending generation of the listing of ``prefix``: invisible until
        :meth:`commit`."""

        def write(db: sqlite3.Connection) -> PendingListing:
            cur = db.execute(
                "INSERT INTO listings (scope, prefix, state, listed_at, mtime, count, hidden, "
                "writer) VALUES (?, ?, ?, ?, 0, 0, 0, ?)",
                (scope.token, prefix, PENDING, time.time(), os.getpid()),
            )
            assert cur.lastrowid is not None
            return PendingListing(cur.lastrowid, scope, prefix, self._epoch)

        return self._write("begin listing", write)

    def add(self, pending: PendingListing, entries: Sequence[Entry]) -> int:
        """Adds one page of entries; returns how many names were shadowed. When a name is
        both a file and a directory, the directory wins (whichever page came first)."""

        def write(db: sqlite3.Connection) -> int:
            files = [e for e in entries if not e.is_dir]
            dirs = [e for e in entries if e.is_dir]
            db.execute("BEGIN IMMEDIATE")
            try:
                self._check_pending(db, pending)
                cur = db.executemany(
                    "INSERT OR IGNORE INTO entries VALUES (?, ?, 0, ?, ?, ?, ?)",
                    [(pending.id, e.name, e.size, e.mtime, e.etag, e.version_id) for e in files],
                )
                shadowed = len(files) - max(cur.rowcount, 0)
                for e in dirs:
                    row = db.execute(
                        "SELECT is_dir FROM entries WHERE listing = ? AND name = ?",
                        (pending.id, e.name),
                    ).fetchone()
                    if row is not None:
                        shadowed += 1
                        if row[0]:
                            continue
                    db.execute(
                        "INSERT OR REPLACE INTO entries VALUES (?, ?, 1, 0, ?, '', '')",
                        (pending.id, e.name, e.mtime),
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return shadowed

        return self._write("add to listing", write)

    def commit(
        self, pending: PendingListing, mtime: float, hidden: int, listed_at: float | None = None
    ) -> ListingInfo:
        """Makes the pending listing the current one, in one transaction; the previous one
        is superseded (and deleted once no open directory reads it)."""
        when = time.time() if listed_at is None else listed_at

        def write(db: sqlite3.Connection) -> tuple[ListingInfo, list[int]]:
            db.execute("BEGIN IMMEDIATE")
            try:
                self._check_pending(db, pending)
                count = db.execute(
                    "SELECT count(*) FROM entries WHERE listing = ?", (pending.id,)
                ).fetchone()[0]
                old = db.execute(
                    "SELECT id FROM listings WHERE scope = ? AND prefix = ? AND state = ?",
                    (pending.scope.token, pending.prefix, CURRENT),
                ).fetchall()
                db.execute(
                    "UPDATE listings SET state = ?, superseded_at = ? "
                    "WHERE scope = ? AND prefix = ? AND state = ?",
                    (SUPERSEDED, time.time(), pending.scope.token, pending.prefix, CURRENT),
                )
                db.execute(
                    "UPDATE listings SET state = ?, listed_at = ?, mtime = ?, count = ?, "
                    "hidden = ? WHERE id = ?",
                    (CURRENT, when, mtime, count, hidden, pending.id),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            info = ListingInfo(pending.id, pending.prefix, when, mtime, count, hidden)
            return info, [r[0] for r in old]

        info, old = self._write("commit listing", write)
        with self._pin_lock:
            self._superseded.update(old)
        self._collect()
        return info

    def abandon(self, pending: PendingListing) -> None:
        """Drops a pending listing (its listing failed or was cancelled)."""
        with contextlib.suppress(IndexFailed):
            self._run("drop listing", lambda db: self._drop_if(db, pending), None)

    def _drop_if(self, db: sqlite3.Connection, pending: PendingListing) -> None:
        if pending.epoch == self._epoch:
            self._delete_listings(db, [pending.id])

    def _check_pending(self, db: sqlite3.Connection, pending: PendingListing) -> None:
        """Refuses to write into a listing that was abandoned or lost in a rebuild (a
        listing thread may still deliver a page after its caller gave up)."""
        row = None
        if pending.epoch == self._epoch:
            row = db.execute("SELECT state FROM listings WHERE id = ?", (pending.id,)).fetchone()
        if row is None or row[0] != PENDING:
            raise IndexFailed(f"metadata index {self.path}: listing of {pending.prefix!r} dropped")

    def _write(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """As :meth:`_run`, but a write into a rebuilt file fails (nothing to return)."""
        lost = object()
        result = self._run(what, fn, lost)
        if result is lost:
            raise IndexFailed(f"metadata index {self.path} was damaged and rebuilt ({what})")
        return result  # type: ignore[return-value]

    # -- open directories: a generation being read is not deleted ---------------------------

    def pin(self, listing: int) -> None:
        with self._pin_lock:
            self._pins[listing] = self._pins.get(listing, 0) + 1

    def unpin(self, listing: int) -> None:
        with self._pin_lock:
            left = self._pins.get(listing, 0) - 1
            if left > 0:
                self._pins[listing] = left
                return
            self._pins.pop(listing, None)
            if listing not in self._superseded:
                return  # still current: nothing to delete
        self._collect()

    def _collect(self) -> None:
        """Deletes the superseded listings that nobody should read any more."""

        def delete(db: sqlite3.Connection) -> None:
            expired = self._expired(db)
            self._delete_listings(db, expired)
            with self._pin_lock:
                self._superseded.difference_update(expired)

        with contextlib.suppress(IndexFailed):
            self._run("drop old listings", delete, None)

    # -- administration ----------------------------------------------------------------------

    def stats(self) -> IndexStats:
        def read(db: sqlite3.Connection) -> tuple[int, int]:
            listings = db.execute(
                "SELECT count(*), coalesce(sum(count), 0) FROM listings WHERE state = ?",
                (CURRENT,),
            ).fetchone()
            return int(listings[0]), int(listings[1])

        listings, entries = self._run("stats", read, (0, 0))
        size = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                size += os.stat(f"{self.path}{suffix}").st_size
        return IndexStats(self.path, listings, entries, size)

    def clear(self) -> int:
        """Drops every listing; returns how many there were."""

        def write(db: sqlite3.Connection) -> int:
            n = db.execute("SELECT count(*) FROM listings WHERE state = ?", (CURRENT,)).fetchone()
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM entries")
            db.execute("DELETE FROM listings")
            db.execute("COMMIT")
            db.execute("VACUUM")
            return int(n[0])

        return self._run("clear", write, 0)


class _Foreign(Exception):
    """The file is SQLite but not a rangefs index of this schema version."""


class AsyncMetadataIndex:
    """The index as async code sees it: every call in a worker thread under one limiter."""

    def __init__(self, index: MetadataIndex, limiter: trio.CapacityLimiter) -> None:
        self.index = index
        self._limiter = limiter

    async def listing(self, scope: Scope, prefix: str) -> ListingInfo | None:
        return await trio.to_thread.run_sync(
            self.index.listing, scope, prefix, limiter=self._limiter
        )

    async def holds(self, scope: Scope, prefix: str) -> bool:
        return await trio.to_thread.run_sync(self.index.holds, scope, prefix, limiter=self._limiter)

    async def entry(self, listing: int, name: str) -> Entry | None:
        return await trio.to_thread.run_sync(self.index.entry, listing, name, limiter=self._limiter)

    async def lookup(self, scope: Scope, prefix: str, name: str) -> Entry | None:
        return await trio.to_thread.run_sync(
            self.index.lookup, scope, prefix, name, limiter=self._limiter
        )

    async def entries(self, listing: int, after: str | None, limit: int) -> list[DirRow]:
        return await trio.to_thread.run_sync(
            self.index.entries, listing, after, limit, limiter=self._limiter
        )

    async def files(self, listing: int, after: str, limit: int) -> list[Entry]:
        return await trio.to_thread.run_sync(
            self.index.files, listing, after, limit, limiter=self._limiter
        )

    async def entries_at(self, listing: int, offset: int, limit: int) -> list[DirRow]:
        return await trio.to_thread.run_sync(
            self.index.entries_at, listing, offset, limit, limiter=self._limiter
        )

    async def begin(self, scope: Scope, prefix: str) -> PendingListing:
        return await trio.to_thread.run_sync(self.index.begin, scope, prefix, limiter=self._limiter)

    async def add(self, pending: PendingListing, entries: Sequence[Entry]) -> int:
        return await trio.to_thread.run_sync(
            self.index.add, pending, entries, limiter=self._limiter
        )

    async def commit(self, pending: PendingListing, mtime: float, hidden: int) -> ListingInfo:
        return await trio.to_thread.run_sync(
            self.index.commit, pending, mtime, hidden, limiter=self._limiter
        )

    async def abandon(self, pending: PendingListing) -> None:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self.index.abandon, pending, limiter=self._limiter)

    def pin(self, listing: int) -> None:
        self.index.pin(listing)

    async def unpin(self, listing: int) -> None:
        await trio.to_thread.run_sync(self.index.unpin, listing, limiter=self._limiter)
