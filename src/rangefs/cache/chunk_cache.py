"""The on-disk chunk store that is also the resume checkpoint (the only diskcache user).

A chunk is stored under a key naming everything it depends on — format version, bucket,
object key, ETag, chunk size, chunk index — so a changed object or another chunk size can
never be served old bytes (:class:`~rangefs.keys.ChunkKey`). Values are laid out by
:mod:`rangefs.cache.cache_format` (block digests): diskcache does not fsync its value files, so
after a crash a stored chunk may be short or garbage; every read checks length and digests
and treats a mismatch (or any read error) as a miss.

Cache trouble is never a read error: a full disk turns caching off for a while (logged) and
reads go on from S3. diskcache is safe for several processes, so two mounts may share one
cache directory.

Pinned versions (``rangefs pin``) live in the same store, listed by their diskcache tag in a
table of our own in ``cache.db`` (:data:`PINS_TABLE`), and the store culls with a policy that
skips tags listed there (:data:`PINNED_AWARE_LRU`): diskcache has no "never evict" flag, but
its cull is one SQL query per policy. Pins thus survive remounts, are seen by every process
sharing the directory (each cull reads the table), and a pinned chunk is never moved or
copied: it is where every read already looks.
"""

import contextlib
import errno
import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import diskcache

from rangefs.cache import proofs
from rangefs.cache.cache_format import (
    BLOCK,
    DIGEST,
    PREFIX,
    EncodedReader,
    block_count,
    blocks_ok,
    decode,
    header_size,
    parse_prefix,
)
from rangefs.cache.chunk_files import ChunkFile, MemoryChunkFile, PartialFiles
from rangefs.cache.read_buffers import ReadBuffers
from rangefs.config import format_size
from rangefs.errors import CacheWriteFailed, UserError
from rangefs.keys import ChunkKey, ObjectId
from rangefs.stats import Stats

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_CACHING_AFTER = 30.0  # seconds with caching off after the disk filled up
SQLITE_TIMEOUT = 30.0
CULL_LIMIT = 1  # evict one LRU chunk per store: diskcache's default (10) evicts the newest too
OPEN_FILES = 256  # value files kept open for random reads, each at most TOUCH_EVERY seconds
TOUCH_EVERY = 5.0  # seconds between index lookups (LRU touches) of a chunk read at random
SWEEP_EVERY = 1.0  # seconds between sweeps of the kept files due for a touch (a scan of all)
# A whole object this small (one short chunk) just stored is also kept in RAM while its value
# file is kept open: a small file fetched ahead of a reader walking a directory is then read
# without a thread hop (each costs milliseconds on a busy daemon, per file). RECENT_BYTES
# bounds them all.
RECENT_CHUNK = 256 * 1024
RECENT_BYTES = 4 * 1024 * 1024
# The kernel reads in at most its read-ahead size (read_ahead_kb or the device's largest I/O)
# per POSIX_FADV_WILLNEED: 128 KiB, the smallest default, is read in whole on any device.
WILLNEED_STEP = 128 * 1024


PINS_TABLE = "rangefs_pins"  # one row per pinned object version, keyed by its diskcache tag
PINNED_AWARE_LRU = "rangefs-lru-unpinned"
# diskcache's least-recently-used policy, but a chunk whose version is pinned is never culled.
diskcache.core.EVICTION_POLICY[PINNED_AWARE_LRU] = {
    **diskcache.core.EVICTION_POLICY["least-recently-used"],
    "cull": "SELECT {fields} FROM Cache WHERE tag IS NULL OR tag NOT IN "
    f"(SELECT tag FROM {PINS_TABLE}) ORDER BY access_time LIMIT ?",
}
PINS_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {PINS_TABLE} (tag TEXT PRIMARY KEY, bucket TEXT NOT NULL, "
    "key TEXT NOT NULL, token TEXT NOT NULL, size INTEGER NOT NULL)",
    f"CREATE INDEX IF NOT EXISTS {PINS_TABLE}_key ON {PINS_TABLE} (bucket, key)",
)

PRIVATE_UMASK = 0o077  # files of a process that writes a cache: owner-only, whatever the umask
PRIVATE_MODE = 0o700


def ensure_private_dir(directory: Path, *, allow_shared: bool = False) -> None:
    """Creates ``directory`` owner-only, or refuses an existing one that other users can
    read, write or enter (ssh's rule for keys): cached chunks are the plaintext of private
    objects. ``allow_shared`` is the operator's explicit opt-out."""
    try:
        st = directory.stat()
    except FileNotFoundError:
        directory.mkdir(parents=True, mode=PRIVATE_MODE)
        directory.chmod(PRIVATE_MODE)  # mkdir's mode is filtered by the umask
        return
    if allow_shared:
        return
    if st.st_uid != os.geteuid():
        raise UserError(
            f"cache dir {directory} belongs to uid {st.st_uid}, not to this user "
            f"(uid {os.geteuid()}): its owner could read and change cached bytes; "
            "use a cache dir of your own"
        )
    if st.st_mode & 0o077:
        raise UserError(
            f"cache dir {directory} is open to other users (mode {st.st_mode & 0o777:o}): "
            f"run 'chmod 700 {directory}'"
        )


@dataclass(slots=True)
class _FilledFile:
    """A complete chunk file (:mod:`rangefs.cache.chunk_files`) to be moved into the store;
    ``placed``: where it went (removed again if the index refuses the entry)."""

    path: Path
    placed: str | None = None


class _TidyDisk(diskcache.Disk):
    """diskcache's Disk, but a value file whose write failed (ENOSPC) is removed, not left
    behind half-written to keep the disk full; and a filled chunk file is renamed into
    place, not copied (its bytes were written once, as they arrived)."""

    def store(self, value: Any, read: bool, key: Any = diskcache.core.UNKNOWN) -> Any:
        if not isinstance(value, _FilledFile):
            return super().store(value, read, key=key)
        filename, full_path = self.filename(key, value)
        os.makedirs(os.path.dirname(full_path), exist_ok=True)
        os.rename(value.path, full_path)
        value.placed = full_path
        return os.path.getsize(full_path), diskcache.core.MODE_BINARY, filename, None

    def _write(self, full_path: str, iterator: Any, mode: str, encoding: str | None = None) -> Any:
        try:
            return super()._write(full_path, iterator, mode, encoding)
        except FileExistsError:
            raise  # not ours to remove
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(full_path)
            raise


@dataclass(frozen=True, slots=True)
class Pin:
    """A pinned object version and its size (what it counts against the pin limit)."""

    obj: ObjectId
    size: int


@dataclass(frozen=True, slots=True)
class PinSummary:
    keys: int  # objects pinned (a key counts once, whatever versions of it are kept)
    bytes: int  # their size: the largest pinned version of each key
    stored: int  # bytes of pinned chunks in the store now


@dataclass(frozen=True, slots=True)
class CacheStats:
    directory: str
    size_limit: int
    volume: int
    chunks: int
    objects: int


@dataclass(frozen=True, slots=True)
class VerifyReport:
    checked: int
    bad: int
    bad_keys: list[ChunkKey]
    proven: int = 0  # object versions whose cached chunks were re-hashed against S3's proof
    disproved: list[ObjectId] = field(default_factory=list)  # ...and failed it (dropped)


def _read_in(fd: int, offset: int, length: int) -> None:
    """Asks the kernel to read ``[offset, offset+length)`` of ``fd`` into the page cache,
    without waiting. One WILLNEED for a whole chunk was cut at the read-ahead size: the
    chunk's last page (or, with a 128 KiB read-ahead, all but its first 128 KiB) stayed on
    disk, and the reads there waited in a thread."""
    with contextlib.suppress(OSError):
        for at in range(offset, offset + length, WILLNEED_STEP):
            step = min(WILLNEED_STEP, offset + length - at)
            os.posix_fadvise(fd, at, step, os.POSIX_FADV_WILLNEED)


class ChunkCache:
    """Thread-safe; all methods block (call them from worker threads)."""

    def __init__(
        self, directory: Path, size_limit: int | None = None, stats: Stats | None = None
    ) -> None:
        """``size_limit`` None keeps the limit stored in the directory (for the cache tools)."""
        self.stats = stats or Stats()
        self.directory = Path(directory)
        settings: dict[str, object] = {
            "disk": _TidyDisk,
            "eviction_policy": PINNED_AWARE_LRU,
            "tag_index": True,
            "cull_limit": CULL_LIMIT,
        }
        if size_limit is not None:
            settings["size_limit"] = size_limit
        self._cache = diskcache.Cache(str(self.directory), timeout=SQLITE_TIMEOUT, **settings)
        self.size_limit = int(self._cache.size_limit)
        self._pins_db = self._open_pins()
        self._pins_lock = threading.Lock()
        self._lock = threading.Lock()
        self._index_lock = threading.Lock()
        self._open_files: OrderedDict[ChunkKey, tuple[int, bytes, float]] = OrderedDict()
        self._recent: OrderedDict[ChunkKey, bytes] = OrderedDict()  # under _lock
        self._recent_bytes = 0
        self._next_sweep = 0.0  # under _lock
        self._disabled_until = 0.0
        self._buffers = ReadBuffers()
        self._nowait = True  # reads with RWF_NOWAIT work here (until the filesystem says not)
        self._reported_bad: set[object] = set()
        self.partial = PartialFiles(self.directory)

    def close(self) -> None:
        self._close_open_files()
        self._pins_db.close()
        self._cache.close()

    def _open_pins(self) -> sqlite3.Connection:
        """A connection of our own to ``cache.db`` for the pins table (created before any
        chunk is stored, so the cull query always finds it)."""
        db = sqlite3.connect(
            self.directory / "cache.db",
            timeout=SQLITE_TIMEOUT,
            isolation_level=None,
            check_same_thread=False,
        )
        for statement in PINS_SCHEMA:
            db.execute(statement)
        return db

    @contextlib.contextmanager
    def _pins(self) -> Iterator[sqlite3.Connection]:
        """The pins table in one write transaction, taken at once (``BEGIN IMMEDIATE``): a
        limit checked here holds against every process sharing the directory."""
        with self._pins_lock:
            self._pins_db.execute("BEGIN IMMEDIATE")
            try:
                yield self._pins_db
            except BaseException:
                self._pins_db.execute("ROLLBACK")
                raise
            self._pins_db.execute("COMMIT")

    def pin(self, pins: list[Pin], limit: int) -> PinSummary:
        """Pins object versions (their chunks are never evicted from now on), all or none:
        if the keys pinned would then hold more than ``limit`` bytes (each key at its largest
        pinned version), nothing is pinned and a one-line :class:`UserError` says why.
        Returns what is pinned afterwards."""
        with self._pins() as db:
            sizes = {
                (bucket, key): size
                for bucket, key, size in db.execute(
                    f"SELECT bucket, key, MAX(size) FROM {PINS_TABLE} GROUP BY bucket, key"
                )
            }
            before = sum(sizes.values())
            for pin in pins:
                name = (pin.obj.bucket, pin.obj.key)
                sizes[name] = max(sizes.get(name, 0), pin.size)
            after = sum(sizes.values())
            if after > limit and after > before:
                asked = sum(pin.size for pin in pins)
                raise UserError(
                    f"pinning {len(pins)} files ({format_size(asked)}) would pin "
                    f"{format_size(after)}, over --pin-limit {format_size(limit)} "
                    f"({format_size(before)} already pinned): nothing pinned"
                )
            db.executemany(
                f"INSERT OR IGNORE INTO {PINS_TABLE} VALUES (?, ?, ?, ?, ?)",
                [(p.obj.tag(), p.obj.bucket, p.obj.key, p.obj.token, p.size) for p in pins],
            )
        return self.pin_summary()

    def unpin(self, names: list[tuple[str, str]]) -> int:
        """Unpins every version of the (bucket, key) ``names``; their chunks are evicted
        like any other from now on. Returns how many of the keys were pinned."""
        with self._pins() as db:
            unpinned = 0
            for bucket, key in names:
                cursor = db.execute(
                    f"DELETE FROM {PINS_TABLE} WHERE bucket = ? AND key = ?", (bucket, key)
                )
                unpinned += cursor.rowcount > 0
        return unpinned

    def pinned(self, obj: ObjectId) -> list[Pin]:
        """The pinned versions of ``obj``'s key, the most recently pinned first (empty: the
        key is not pinned). Row ids tell the order: SQLite gives each new row a larger one."""
        with self._pins_lock:
            rows = self._pins_db.execute(
                f"SELECT token, size FROM {PINS_TABLE} WHERE bucket = ? AND key = ? "
                "ORDER BY rowid DESC",
                (obj.bucket, obj.key),
            ).fetchall()
        return [Pin(ObjectId.from_token(obj.bucket, obj.key, token), size) for token, size in rows]

    def pinned_each(self, objs: list[ObjectId]) -> list[list[Pin]]:
        """:meth:`pinned` of each of ``objs``, in one thread hop."""
        return [self.pinned(obj) for obj in objs]

    def follow_pin(self, obj: ObjectId, size: int) -> bool:
        """Pins version ``obj`` too if its key is pinned (a pin follows the key, not an
        ETag); the versions pinned before stay until :meth:`keep_pinned` drops them. Returns
        whether the key is pinned."""
        with self._pins() as db:
            cursor = db.execute(
                f"INSERT OR IGNORE INTO {PINS_TABLE} SELECT ?, ?, ?, ?, ? WHERE EXISTS "
                f"(SELECT 1 FROM {PINS_TABLE} WHERE bucket = ? AND key = ?)",
                (obj.tag(), obj.bucket, obj.key, obj.token, size, obj.bucket, obj.key),
            )
            if cursor.rowcount:
                return True
            found = db.execute(
                f"SELECT 1 FROM {PINS_TABLE} WHERE bucket = ? AND key = ? LIMIT 1",
                (obj.bucket, obj.key),
            ).fetchone()
        return found is not None

    def keep_pinned(self, obj: ObjectId) -> int:
        """``obj`` is complete in the store: the versions of its key pinned before it are
        unpinned and their chunks dropped (one pinned since, by another process that saw a
        newer ETag, stays). Returns how many chunks were dropped."""
        older = (f"FROM {PINS_TABLE} WHERE bucket = ? AND key = ? AND rowid < "
                 f"(SELECT rowid FROM {PINS_TABLE} WHERE tag = ?)")  # fmt: skip
        with self._pins() as db:
            tokens = [
                token
                for (token,) in db.execute(
                    f"SELECT token {older}", (obj.bucket, obj.key, obj.tag())
                )
            ]
            db.execute(f"DELETE {older}", (obj.bucket, obj.key, obj.tag()))
        dropped = 0
        for token in tokens:
            old = ObjectId.from_token(obj.bucket, obj.key, token)
            with contextlib.suppress(OSError, sqlite3.Error):
                dropped += self._cache.evict(old.tag(), retry=True)
        return dropped

    def pins(self) -> list[Pin]:
        """Every pinned version, by bucket and key."""
        with self._pins_lock:
            rows = self._pins_db.execute(
                f"SELECT bucket, key, token, size FROM {PINS_TABLE} ORDER BY bucket, key"
            ).fetchall()
        return [Pin(ObjectId.from_token(b, k, t), size) for b, k, t, size in rows]

    def pin_summary(self) -> PinSummary:
        with self._pins_lock:
            keys, size = self._pins_db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM (SELECT MAX(size) AS size FROM "
                f"{PINS_TABLE} GROUP BY bucket, key)"
            ).fetchone()
            (stored,) = self._pins_db.execute(
                "SELECT COALESCE(SUM(size), 0) FROM Cache WHERE tag IN "
                f"(SELECT tag FROM {PINS_TABLE})"
            ).fetchone()
        return PinSummary(int(keys), int(size), int(stored))

    def _close_open_files(self) -> None:
        with self._lock:
            for key in list(self._open_files):
                self._forget_open(key)

    def volume(self) -> int:
        """Bytes the cache uses on disk (diskcache's estimate)."""
        try:
            return int(self._cache.volume())
        except Exception:
            return 0

    def get(self, key: ChunkKey, length: int) -> memoryview | None:
        """The verified chunk, or None (a miss) if absent, damaged or unreadable."""
        return self._miss_on_error(key, lambda: self._get(key, length))

    def read_range(self, key: ChunkKey, length: int, start: int, end: int) -> memoryview | None:
        """Bytes ``[start, end)`` of a cached chunk, verifying only the blocks they touch.

        A random 64 KiB read then costs one block read, not a whole-chunk read and checksum.
        The value files of recently read chunks stay open (with their block digests), so a
        random reader does not pay an index lookup per read; the index is still told of the
        access now and then, for LRU eviction. When a value file is opened the kernel is asked
        to read its chunk in (``POSIX_FADV_WILLNEED``), so the chunk's next reads find it in
        the page cache (:meth:`read_range_cached`). None is a miss (absent or damaged: a
        damaged chunk is dropped whole).
        """
        return self._miss_on_error(key, lambda: self._read_range(key, length, start, end))

    def read_range_cached(
        self, key: ChunkKey, length: int, start: int, end: int
    ) -> memoryview | None:
        """:meth:`read_range` if it cannot block: the chunk's value file is open and its
        blocks are in the page cache (``RWF_NOWAIT``: the kernel refuses rather than waits
        for the disk). Safe on the trio thread; None means "read in a thread", never a miss
        (a damaged block is left for :meth:`read_range` to find and drop).

        A read served from the kernel's page cache costs a few microseconds; a hop to a
        worker thread and back costs far more on a busy 2-core machine, and bounded a random
        reader's hits to ~1900 a second.
        """
        if not self._nowait:
            return None
        opened = self._opened(key)
        if opened is None:
            return None
        fd, digests = opened
        try:
            return self._pread_checked(fd, digests, length, start, end, os.RWF_NOWAIT)
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                self._nowait = False  # a filesystem without RWF_NOWAIT: threads only
            return None
        finally:
            os.close(fd)

    def is_open(self, key: ChunkKey) -> bool:
        """Whether ``key``'s value file is kept open for reads (a stored chunk read lately or
        warmed): no lookup, safe on the trio thread."""
        with self._lock:
            return key in self._open_files

    def warm(self, key: ChunkKey, length: int) -> None:
        """Opens a stored chunk's value file for reads to come (a sequential reader's
        read-ahead), so the kernel reads it in from disk meanwhile; nothing if absent."""
        opened = self._miss_on_error(key, lambda: self._opened(key) or self._open(key, length))
        if opened is not None:
            os.close(opened[0])

    def _miss_on_error(self, key: ChunkKey, read: Callable[[], T | None]) -> T | None:
        """Cache trouble is a miss: an unusable index is logged once, an unreadable value
        file is dropped."""
        try:
            return read()
        except sqlite3.Error as exc:
            self._warn_once("index", f"cache index unusable, reading from S3: {exc}")
        except Exception as exc:
            self._drop(key, f"unreadable: {exc}")
        return None

    def _lookup(self, key: ChunkKey) -> Any:
        """The value file (open) or inline value of ``key``, or None; an index entry whose
        value file is gone is dropped.

        The lookup also records the access for LRU eviction (a SQLite write), so it is
        serialised in this process (``_index_lock``, as every index write here): concurrent
        SQLite writers otherwise meet SQLite's busy handler, which sleeps in steps of
        milliseconds. The file is read outside the lock.
        """
        for _ in range(2):
            with self._index_lock:
                handle = self._cache.get(key.encode(), default=None, read=True, retry=True)
            if handle is not None or not self._present(key):
                return handle
            # Present now but not a moment ago: stored meanwhile (by this process or another
            # sharing the dir). Only an entry still without its file is dropped.
        self._drop(key, "value file missing")
        return None

    def _get(self, key: ChunkKey, length: int) -> memoryview | None:
        handle = self._lookup(key)
        if handle is None:
            return None
        if isinstance(handle, bytes):
            value = handle
        else:
            with handle:
                value = handle.read()
        data = decode(value, length)
        if data is None:
            self._drop(key, "checksum or length mismatch")
        return data

    def _read_range(self, key: ChunkKey, length: int, start: int, end: int) -> memoryview | None:
        opened = self._opened(key) or self._open(key, length)
        if opened is None:
            return None
        fd, digests = opened
        try:
            data = self._pread_checked(fd, digests, length, start, end, 0)
        finally:
            os.close(fd)
        if data is None:
            self._drop(key, "short value file or checksum mismatch")
        return data

    def _pread_checked(
        self, fd: int, digests: bytes, length: int, start: int, end: int, flags: int
    ) -> memoryview | None:
        """Bytes ``[start, end)`` of the chunk in value file ``fd`` (a view of a pooled
        buffer: no copy), or None if the file is short or a block does not match its digest."""
        first, last = start // BLOCK, block_count(end)
        want = min(last * BLOCK, length) - first * BLOCK
        view = self._buffers.take(want)
        got = os.preadv(fd, [view], header_size(length) + first * BLOCK, flags)
        if got != want or not blocks_ok(digests, first, view):
            return None
        offset = start - first * BLOCK
        return view[offset : offset + end - start]

    def _opened(self, key: ChunkKey) -> tuple[int, bytes] | None:
        """A private descriptor (the caller closes it, so another thread closing the kept one
        cannot pull it away mid-read) of an open, still linked value file of ``key`` touched
        in the index lately, and the file's block digests; or None."""
        with self._lock:
            entry = self._open_files.get(key)
            if entry is None:
                return None
            fd, digests, touched = entry
            if time.monotonic() - touched > TOUCH_EVERY or os.fstat(fd).st_nlink == 0:
                self._forget_open(key)
                return None
            self._open_files.move_to_end(key)
            return os.dup(fd), digests

    def _open(self, key: ChunkKey, length: int) -> tuple[int, bytes] | None:
        """Looks ``key`` up in the index (an LRU touch) and keeps its value file open."""
        handle = self._lookup(key)
        if handle is None:
            return None
        if isinstance(handle, bytes):
            self._drop(key, "not a value file")
            return None
        with handle:
            opened = self._keep_open(key, length, handle)
        if opened is not None:
            _read_in(opened[0], header_size(length), length)  # kept first: reads need not wait
        return opened

    def _keep_open(self, key: ChunkKey, length: int, handle: BinaryIO) -> tuple[int, bytes] | None:
        """Reads the header of ``key``'s value file and keeps a descriptor of it open (as
        touched in the index now); returns a private descriptor and the block digests."""
        prefix = handle.read(PREFIX.size)
        digests = handle.read(DIGEST * block_count(length))
        if parse_prefix(prefix, length) is None or len(digests) != DIGEST * block_count(length):
            self._drop(key, "bad header")
            return None
        fd = os.dup(handle.fileno())
        now = time.monotonic()
        with self._lock:
            if now >= self._next_sweep:  # a scan per store would cost more than the store
                self._next_sweep = now + SWEEP_EVERY
                for stale in [k for k, e in self._open_files.items() if now - e[2] > TOUCH_EVERY]:
                    self._forget_open(stale)  # an evicted file is not kept on disk by us
            self._forget_open(key)
            self._open_files[key] = (fd, digests, now)
            while len(self._open_files) > OPEN_FILES:
                self._forget_open(next(iter(self._open_files)))
            return os.dup(fd), digests

    def _forget_open(self, key: ChunkKey) -> None:
        entry = self._open_files.pop(key, None)
        if entry is not None:
            os.close(entry[0])
        data = self._recent.pop(key, None)
        if data is not None:
            self._recent_bytes -= len(data)

    def _remember(self, key: ChunkKey, data: bytes) -> None:
        """Keeps a small chunk just stored in RAM while its file is kept open (it goes with
        it: dropped, discarded or evicted from the open files)."""
        with self._lock:
            if key not in self._open_files or key in self._recent:
                return
            self._recent[key] = data
            self._recent_bytes += len(data)
            while self._recent_bytes > RECENT_BYTES:
                _, old = self._recent.popitem(last=False)
                self._recent_bytes -= len(old)

    def recent(self, key: ChunkKey, start: int, end: int) -> bytes | None:
        """Bytes ``[start, end)`` of a small chunk stored lately, from RAM, or None; None too
        once its value file was evicted (unlinked) or is due for an index touch. Does not
        block (a dict lookup and an ``fstat`` of a descriptor already open, no disk I/O):
        callable from the event loop."""
        with self._lock:
            data = self._recent.get(key)
            if data is None:
                return None
            fd, _, touched = self._open_files[key]
            if time.monotonic() - touched > TOUCH_EVERY or os.fstat(fd).st_nlink == 0:
                self._forget_open(key)
                return None
            return data[start:end]

    def _forget_object(self, obj: ObjectId) -> None:
        """Forgets the open value files (and RAM copies) of a version whose chunks went."""
        with self._lock:
            for key in [k for k in self._open_files if k.obj == obj]:
                self._forget_open(key)

    def _present(self, key: ChunkKey) -> bool:
        try:
            return key.encode() in self._cache
        except Exception:
            return False

    def contains(self, key: ChunkKey) -> bool:
        return self._present(key)

    def put(self, key: ChunkKey, data: bytes | memoryview) -> bool:
        """Stores a chunk; False (and caching paused) if the disk is full or failing."""
        return self._store(key, EncodedReader(data), read=True)

    def _store(
        self, key: ChunkKey, value: Any, *, read: bool, also: Callable[[], None] | None = None
    ) -> bool:
        """Stores a chunk; ``also`` writes more records in the same transaction (one SQLite
        commit, not several: a small file fetched ahead costs one)."""
        if self.paused:
            return False
        name = key.encode()
        try:
            with self._index_lock:
                if also is None:
                    self._cache.set(name, value, read=read, tag=key.obj.tag(), retry=True)
                else:
                    with self._cache.transact(retry=True):
                        self._cache.set(name, value, read=read, tag=key.obj.tag(), retry=True)
                        also()
            return True
        except FileNotFoundError:
            return False  # a filled file another process sharing the dir moved in first
        except (OSError, sqlite3.Error) as exc:
            self.pause(exc, key)
            with contextlib.suppress(Exception):
                self._cache.delete(name, retry=True)
            return False

    def open_fill(self, key: ChunkKey, length: int) -> ChunkFile | None:
        """The file to fill chunk ``key`` in (with the blocks it already holds), or None if
        the chunk is complete in the store; in memory while caching is paused."""
        if self._present(key):
            return None
        if not self.paused:
            try:
                return self.partial.open(key, length)
            except OSError as exc:
                self.pause(exc, key)
        return MemoryChunkFile(length)

    @property
    def paused(self) -> bool:
        """Caching is off for a while (the disk filled up or failed)."""
        return time.monotonic() < self._disabled_until

    def pause(self, exc: BaseException, key: ChunkKey) -> None:
        """Turns caching off for :data:`RETRY_CACHING_AFTER` seconds (logged once)."""
        cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
        full = isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT)
        full = full or "full" in str(exc)
        with self._lock:
            was_paused = self.paused
            self._disabled_until = time.monotonic() + RETRY_CACHING_AFTER
        if not was_paused:
            log.warning(
                "cache %s: not caching for %.0fs, reads continue from S3 (%s %s chunk %d)",
                "full" if full else "write failed",
                RETRY_CACHING_AFTER,
                cause,
                key.obj.uri,
                key.index,
            )
        self.partial.discard(key)

    def adopt(
        self,
        key: ChunkKey,
        file: ChunkFile,
        *,
        proof: proofs.Proof | None = None,
        bind: bool = False,
    ) -> bool:
        """Moves a complete chunk file into the store (a rename; the file is in the cache
        directory's filesystem), or stores a chunk filled in memory; False on failure.

        In the same transaction: ``proof``, the proof its version's bytes just passed
        (:meth:`record_proof`), and with ``bind`` the version's ETag (:meth:`bind_etag`)."""
        older: list[str] = []  # the ETag the bind replaced, set inside the transaction

        def also() -> None:
            if proof is not None:
                self._set_proof(key.obj, proof)
            if bind:
                replaced = self._record_etag(key.obj)
                if replaced is not None:
                    older.append(replaced)

        extra = also if proof is not None or bind else None
        if isinstance(file, MemoryChunkFile):
            stored = self._adopt_memory(key, file, extra)
        else:
            stored = self._adopt_file(key, file, extra)
        if not stored:
            if proof is not None:
                self.record_proof(key.obj, proof)
            if bind:
                self.bind_etag(key.obj)
        elif older:
            self._drop_older(key.obj, older[0])
        return stored

    def _adopt_memory(
        self, key: ChunkKey, file: MemoryChunkFile, also: Callable[[], None] | None
    ) -> bool:
        """A chunk filled in RAM goes to disk the way a filled file does (written to
        ``partial/``, then moved in), so it is kept open and, if small, in RAM as well."""
        if self.paused:
            return False
        try:
            disk = self.partial.open(key, file.length)
        except OSError as exc:
            self.pause(exc, key)
            return False
        try:
            disk.write(0, memoryview(file.data))
            return self._adopt_file(key, disk, also)
        except CacheWriteFailed as exc:
            self.pause(exc, key)
            return False
        finally:
            disk.close()

    def contains_each(self, keys: list[ChunkKey]) -> list[bool]:
        """Whether each chunk is stored (one thread hop for a batch of files fetched ahead)."""
        return [self._present(key) for key in keys]

    def _adopt_file(self, key: ChunkKey, file: ChunkFile, also: Callable[[], None] | None) -> bool:
        filled = _FilledFile(file.path)
        stored = self._store(key, filled, read=False, also=also)
        if not stored and filled.placed is not None:
            with contextlib.suppress(OSError):
                os.remove(filled.placed)  # moved in, but the index did not take it
        if stored and filled.placed is not None:
            # Just stored, so just touched in the index: the first read of the chunk (soon:
            # someone wanted it) reads the open file without an index lookup.
            with contextlib.suppress(OSError), open(filled.placed, "rb") as handle:
                kept = self._keep_open(key, file.length, handle)
                if kept is not None:
                    os.close(kept[0])
                    if key.index == 0 and file.length <= min(RECENT_CHUNK, key.chunk_size - 1):
                        data = handle.read(file.length)
                        if len(data) == file.length and blocks_ok(kept[1], 0, memoryview(data)):
                            self._remember(key, data)
        return stored

    def bind_etag(self, obj: ObjectId) -> None:
        """Records the current ETag of an object and drops chunks of any older version."""
        try:
            with self._index_lock, self._cache.transact(retry=True):  # one transaction, not two
                older = self._record_etag(obj)
            if older is not None:
                self._drop_older(obj, older)
        except (OSError, sqlite3.Error) as exc:
            log.warning("cache: could not record ETag of %s: %s", obj.uri, exc)

    def _record_etag(self, obj: ObjectId) -> str | None:
        """Records ``obj``'s ETag as its key's current one (in the caller's transaction);
        returns the ETag it replaces, if any."""
        record = obj.etag_record()
        old = self._cache.get(record, default=None, retry=True)
        if old == obj.etag:
            return None
        self._cache.set(record, obj.etag, retry=True)
        return old if isinstance(old, str) else None

    def _drop_older(self, obj: ObjectId, old: str) -> None:
        """Drops the chunks of the version ``old`` of ``obj``'s key (not if it is pinned: a
        pinned key keeps its old version until the new one is complete)."""
        try:
            if self.pinned(obj):
                return
            older = ObjectId(obj.bucket, obj.key, old)
            with self._index_lock:
                dropped = self._cache.evict(older.tag(), retry=True)
            self._forget_object(older)
        except (OSError, sqlite3.Error) as exc:
            log.warning("cache: could not drop the old version of %s: %s", obj.uri, exc)
            return
        if dropped:
            log.info(
                "object changed: dropped %d cached chunks of %s (ETag %s -> %s)",
                dropped,
                obj.uri,
                old,
                obj.etag,
            )

    def proof(self, obj: ObjectId) -> proofs.Proof | None:
        """The proof recorded for ``obj`` (:meth:`record_proof`), or None."""
        record = obj.proof_record()
        try:
            if record not in self._cache:  # a read: most objects have no record yet
                return None
            with self._index_lock:
                value = self._cache.get(record, default=None, retry=True)
            return proofs.from_record(value) if isinstance(value, str) else None
        except (OSError, sqlite3.Error, ValueError, TypeError):
            return None

    def record_proof(self, obj: ObjectId, proof: proofs.Proof) -> None:
        """Records that the cached chunks of ``obj`` passed S3's proof, with the proof and
        the object's size (part of the checkpoint: a remount does not hash them again, and
        ``verify`` can check them again)."""
        try:
            with self._index_lock:
                self._set_proof(obj, proof)
        except (OSError, sqlite3.Error) as exc:
            log.warning("cache: could not record the proof of %s: %s", obj.uri, exc)

    def _set_proof(self, obj: ObjectId, proof: proofs.Proof) -> None:
        """The proof record of ``obj`` (the caller holds the index lock)."""
        self._cache.set(obj.proof_record(), proofs.to_record(proof), tag=obj.tag(), retry=True)

    def forget_proof(self, obj: ObjectId) -> None:
        record = obj.proof_record()
        with contextlib.suppress(Exception):
            if record in self._cache:  # a read: deleting nothing would still be a write
                with self._index_lock:
                    self._cache.delete(record, retry=True)

    def discard(self, obj: ObjectId, chunk_size: int, count: int) -> int:
        """Deletes the chunks ``0..count-1`` of ``obj`` and its proof record (bytes that
        failed S3's proof are never kept); returns how many chunks were there."""
        self.forget_proof(obj)
        dropped = 0
        for index in range(count):
            key = ChunkKey(obj, chunk_size, index)
            with self._lock:
                self._forget_open(key)
            with contextlib.suppress(Exception):
                dropped += bool(self._cache.delete(key.encode(), retry=True))
        return dropped

    def cached_map(self, obj: ObjectId, chunk_size: int, count: int) -> list[bool]:
        return [self.contains(ChunkKey(obj, chunk_size, i)) for i in range(count)]

    def _warn_once(self, what: str, message: str) -> None:
        if what not in self._reported_bad:
            self._reported_bad.add(what)
            log.warning("cache: %s", message)

    def _drop(self, key: ChunkKey, why: str) -> None:
        self.stats.bad_chunks += 1
        with self._lock:
            self._forget_open(key)
        if key not in self._reported_bad:
            self._reported_bad.add(key)
            log.warning(
                "cache: dropping bad chunk %d of %s (%s); fetching it again",
                key.index,
                key.obj.uri,
                why,
            )
        with contextlib.suppress(Exception):
            self._cache.delete(key.encode(), retry=True)

    def iter_chunk_keys(self) -> Iterator[ChunkKey]:
        for name in self._cache.iterkeys():
            key = ChunkKey.parse(name)
            if key is not None:
                yield key

    def summary(self) -> CacheStats:
        keys = list(self.iter_chunk_keys())
        return CacheStats(
            directory=str(self.directory),
            size_limit=self.size_limit,
            volume=self.volume(),
            chunks=len(keys),
            objects=len({key.obj for key in keys}),
        )

    def verify(self) -> VerifyReport:
        """Re-checks every stored chunk (block digests), then every object version whose
        chunks are all cached against S3's proof (checksum or ETag); what fails is dropped."""
        checked = 0
        bad: list[ChunkKey] = []
        for key in list(self.iter_chunk_keys()):
            checked += 1
            try:
                value = self._cache.get(key.encode(), default=None, retry=True)
            except Exception:
                value = b""
            if value is None and not self._present(key):
                checked -= 1
                continue
            if value is None or decode(value, None) is None:
                bad.append(key)
                self._cache.delete(key.encode(), retry=True)
        proven, disproved = self._verify_proofs()
        return VerifyReport(checked, len(bad), bad, proven, disproved)

    def _verify_proofs(self) -> tuple[int, list[ObjectId]]:
        """Re-hashes each complete cached version against its ETag: catches bytes damaged
        on the wire before they were stored (block digests were computed from them), e.g.
        by rangefs 0.1, which did not check proofs. A version is complete when its chunks
        run from 0 without a gap and the last is short (so the size is known), or when the
        ETag's part count says how many there are; others are left unchecked."""
        groups: dict[tuple[ObjectId, int], set[int]] = {}
        for key in self.iter_chunk_keys():
            groups.setdefault((key.obj, key.chunk_size), set()).add(key.index)
        proven, disproved = 0, []
        for (obj, chunk_size), present in groups.items():
            proof = self._proof_to_verify(obj, chunk_size, present)
            if proof is None:
                continue
            count = len(present)
            got = self._hash_parts(obj, chunk_size, count, proof)
            if got is None:
                continue
            if got == proof.expected:
                proven += 1
                continue
            log.warning(
                "cache: %s failed S3's proof (%s expected %s got %s): dropping its chunks",
                obj.uri, proof.kind, proof.expected, got,
            )  # fmt: skip
            self.discard(obj, chunk_size, count)
            disproved.append(obj)
        return proven, disproved

    def _proof_to_verify(
        self, obj: ObjectId, chunk_size: int, present: set[int]
    ) -> proofs.Proof | None:
        """The proof the cached chunks of ``obj`` can be checked against, if they are all
        there: the recorded one, whose size tells how many chunks there are; else (no record,
        or one by an older rangefs) the ETag's, if the size can be told from a short last
        chunk or the ETag's part count."""
        recorded = self.proof(obj)
        if recorded is not None and recorded.size:
            proof = proofs.for_chunks(recorded, chunk_size)
            whole = present == set(range(-(-recorded.size // chunk_size)))
            return proof if whole and proofs.fits(proof, chunk_size) else None
        count = len(present)
        if not obj.etag or present != set(range(count)):
            return None
        last = self._chunk_bytes(ChunkKey(obj, chunk_size, count - 1))
        if last is None:
            return None
        size = (count - 1) * chunk_size + len(last)
        proof = proofs.proof_for(obj.etag, size, chunk_size)
        complete = len(last) < chunk_size or proof.kind == proofs.MULTIPART
        return proof if proof.verifiable and complete else None

    def _chunk_bytes(self, key: ChunkKey) -> memoryview | None:
        try:
            return decode(self._cache.get(key.encode(), default=None, retry=True), None)
        except Exception:
            return None

    def _hash_parts(
        self, obj: ObjectId, chunk_size: int, count: int, proof: proofs.Proof
    ) -> str | None:
        per_part = -(-proof.part_size // chunk_size)
        digests: list[bytes] = []
        hasher = proofs.part_hash(proof)
        for index in range(count):
            data = self._chunk_bytes(ChunkKey(obj, chunk_size, index))
            if data is None:
                return None
            hasher.update(data)
            if (index + 1) % per_part == 0 or index == count - 1:
                digests.append(hasher.digest())
                hasher = proofs.part_hash(proof)
        return proofs.combine(proof, digests)

    def clear(self) -> tuple[int, int]:
        """Empties the store, pins included; returns (entries removed, versions unpinned)."""
        self._close_open_files()
        self.partial.clear()
        with self._pins() as db:
            unpinned = db.execute(f"DELETE FROM {PINS_TABLE}").rowcount
        return self._cache.clear(retry=True), unpinned
