"""The on-disk chunk store that is also the resume checkpoint (the only diskcache user).

A chunk is stored under a key naming everything it depends on — format version, bucket,
object key, ETag, chunk size, chunk index — so a changed object or another chunk size can
never be served old bytes. Each value is ``MAGIC + xxh3_64(data) + data``: diskcache does
not fsync its value files, so after a crash a stored chunk may be short or garbage; every
read checks length and checksum and treats a mismatch (or any read error) as a miss.

Cache trouble is never a read error: a full disk turns caching off for a while (logged) and
reads go on from S3. diskcache is safe for several processes, so two mounts may share one
cache directory.
"""

import contextlib
import errno
import logging
import os
import sqlite3
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import diskcache
import xxhash

from rangefs.stats import Stats
from rangefs.store import ObjectVersion

log = logging.getLogger(__name__)

T = TypeVar("T")

MAGIC = b"RFC2"
BLOCK = 64 * 1024  # checksum granularity: a random read verifies only the blocks it touches
PREFIX = struct.Struct("<4sII")  # magic, block size, data length; then one digest per block
DIGEST = 8
KEY_VERSION = "c2"
ETAG_PREFIX = "etag1"
RETRY_CACHING_AFTER = 30.0  # seconds with caching off after the disk filled up
SQLITE_TIMEOUT = 30.0
CULL_LIMIT = 1  # evict one LRU chunk per store: diskcache's default (10) evicts the newest too
OPEN_FILES = 256  # value files kept open for random reads, each at most TOUCH_EVERY seconds
TOUCH_EVERY = 5.0  # seconds between index lookups (LRU touches) of a chunk read at random


def checksum(data: bytes | memoryview) -> bytes:
    return xxhash.xxh3_64_digest(data)


def block_count(length: int) -> int:
    return -(-length // BLOCK)


def header_size(length: int) -> int:
    return PREFIX.size + DIGEST * block_count(length)


def encode_header(data: bytes | memoryview) -> bytes:
    view = memoryview(data)
    digests = b"".join(checksum(view[i : i + BLOCK]) for i in range(0, len(view), BLOCK))
    return PREFIX.pack(MAGIC, BLOCK, len(view)) + digests


class _TidyDisk(diskcache.Disk):
    """diskcache's Disk, but a value file whose write failed (ENOSPC) is removed, not left
    behind half-written to keep the disk full."""

    def _write(self, full_path, iterator, mode, encoding=None):  # type: ignore[no-untyped-def]
        try:
            return super()._write(full_path, iterator, mode, encoding)
        except FileExistsError:
            raise  # not ours to remove
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(full_path)
            raise


class _EncodedReader:
    """Header + data as a file-like object, so diskcache writes the chunk without a copy."""

    def __init__(self, data: bytes) -> None:
        self._parts = [memoryview(encode_header(data)), memoryview(data)]

    def read(self, size: int = -1) -> bytes | memoryview:
        while self._parts and not len(self._parts[0]):
            self._parts.pop(0)
        if not self._parts:
            return b""
        head = self._parts[0]
        n = len(head) if size < 0 else min(size, len(head))
        self._parts[0] = head[n:]
        return head[:n]


def _parse_prefix(raw: bytes, expected_length: int | None) -> int | None:
    """The data length recorded in a value's prefix, or None if it is not one of ours."""
    if len(raw) < PREFIX.size:
        return None
    magic, block, length = PREFIX.unpack_from(raw)
    if magic != MAGIC or block != BLOCK:
        return None
    if expected_length is not None and length != expected_length:
        return None
    return int(length)


def _blocks_ok(digests: bytes | memoryview, first_block: int, data: memoryview) -> bool:
    for n, offset in enumerate(range(0, len(data), BLOCK)):
        at = (first_block + n) * DIGEST
        if checksum(data[offset : offset + BLOCK]) != digests[at : at + DIGEST]:
            return False
    return True


def decode(value: object, expected_length: int | None) -> memoryview | None:
    """The chunk bytes (a view, not a copy) if ``value`` is intact, else None."""
    if not isinstance(value, bytes):
        return None
    length = _parse_prefix(value, expected_length)
    if length is None or len(value) != header_size(length) + length:
        return None
    view = memoryview(value)
    data = view[header_size(length) :]
    if not _blocks_ok(view[PREFIX.size : header_size(length)], 0, data):
        return None
    return data


def chunk_key(version: ObjectVersion, chunk_size: int, index: int) -> str:
    return f"{KEY_VERSION}\0{version.bucket}\0{version.key}\0{version.etag}\0{chunk_size}\0{index}"


def version_tag(bucket: str, key: str, etag: str) -> str:
    return f"{bucket}\0{key}\0{etag}"


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
    bad_keys: list[str]


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
            "eviction_policy": "least-recently-used",
            "tag_index": True,
            "cull_limit": CULL_LIMIT,
        }
        if size_limit is not None:
            settings["size_limit"] = size_limit
        self._cache = diskcache.Cache(str(self.directory), timeout=SQLITE_TIMEOUT, **settings)
        self.size_limit = int(self._cache.size_limit)
        self._lock = threading.Lock()
        self._index_lock = threading.Lock()
        self._open_files: OrderedDict[str, tuple[int, bytes, float]] = OrderedDict()
        self._disabled_until = 0.0
        self._reported_bad: set[str] = set()

    def close(self) -> None:
        self._close_open_files()
        self._cache.close()

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

    def get(
        self, version: ObjectVersion, chunk_size: int, index: int, length: int
    ) -> memoryview | None:
        """The verified chunk, or None (a miss) if absent, damaged or unreadable."""
        key = chunk_key(version, chunk_size, index)
        return self._miss_on_error(
            key, version, index, lambda: self._get(key, version, index, length)
        )

    def read_range(
        self, version: ObjectVersion, chunk_size: int, index: int, length: int, start: int, end: int
    ) -> bytes | None:
        """Bytes ``[start, end)`` of a cached chunk, verifying only the blocks they touch.

        A random 64 KiB read then costs one block read, not a whole-chunk read and checksum.
        The value files of recently read chunks stay open (with their block digests), so a
        random reader does not pay an index lookup per read; the index is still told of the
        access now and then, for LRU eviction. None is a miss (absent or damaged: a damaged
        chunk is dropped whole).
        """
        key = chunk_key(version, chunk_size, index)
        return self._miss_on_error(
            key, version, index, lambda: self._read_range(key, version, index, length, start, end)
        )

    def _miss_on_error(
        self, key: str, version: ObjectVersion, index: int, read: Callable[[], T | None]
    ) -> T | None:
        """Cache trouble is a miss: an unusable index is logged once, an unreadable value
        file is dropped."""
        try:
            return read()
        except sqlite3.Error as exc:
            self._warn_once("index", f"cache index unusable, reading from S3: {exc}")
        except Exception as exc:
            self._drop(key, version, index, f"unreadable: {exc}")
        return None

    def _lookup(self, key: str, version: ObjectVersion, index: int) -> Any:
        """The value file (open) or inline value of ``key``, or None; an index entry whose
        value file is gone is dropped.

        The lookup also records the access for LRU eviction (a SQLite write), so it is
        serialised in this process: concurrent SQLite writers otherwise meet SQLite's busy
        handler, which sleeps in steps of milliseconds. The file is read outside the lock.
        """
        with self._index_lock:
            handle = self._cache.get(key, default=None, read=True, retry=True)
        if handle is None and self._present(key):
            self._drop(key, version, index, "value file missing")
        return handle

    def _get(self, key: str, version: ObjectVersion, index: int, length: int) -> memoryview | None:
        handle = self._lookup(key, version, index)
        if handle is None:
            return None
        if isinstance(handle, bytes):
            value = handle
        else:
            with handle:
                value = handle.read()
        data = decode(value, length)
        if data is None:
            self._drop(key, version, index, "checksum or length mismatch")
        return data

    def _read_range(
        self, key: str, version: ObjectVersion, index: int, length: int, start: int, end: int
    ) -> bytes | None:
        opened = self._opened(key) or self._open(key, version, index, length)
        if opened is None:
            return None
        fd, digests = opened
        first, last = start // BLOCK, block_count(end)
        want = min(last * BLOCK, length) - first * BLOCK
        try:
            raw = os.pread(fd, want, header_size(length) + first * BLOCK)
        finally:
            os.close(fd)
        if len(raw) != want or not _blocks_ok(digests, first, memoryview(raw)):
            self._drop(key, version, index, "short value file or checksum mismatch")
            return None
        offset = start - first * BLOCK
        return raw[offset : offset + end - start]

    def _opened(self, key: str) -> tuple[int, bytes] | None:
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

    def _open(
        self, key: str, version: ObjectVersion, index: int, length: int
    ) -> tuple[int, bytes] | None:
        """Looks ``key`` up in the index (an LRU touch) and keeps its value file open."""
        handle = self._lookup(key, version, index)
        if handle is None:
            return None
        if isinstance(handle, bytes):
            self._drop(key, version, index, "not a value file")
            return None
        with handle:
            prefix = handle.read(PREFIX.size)
            digests = handle.read(DIGEST * block_count(length))
            if _parse_prefix(prefix, length) is None or len(digests) != DIGEST * block_count(
                length
            ):
                self._drop(key, version, index, "bad header")
                return None
            fd = os.dup(handle.fileno())
        now = time.monotonic()
        with self._lock:
            for stale in [k for k, e in self._open_files.items() if now - e[2] > TOUCH_EVERY]:
                self._forget_open(stale)  # an evicted file is not kept on disk by us
            self._forget_open(key)
            self._open_files[key] = (fd, digests, now)
            while len(self._open_files) > OPEN_FILES:
                self._forget_open(next(iter(self._open_files)))
            return os.dup(fd), digests

    def _forget_open(self, key: str) -> None:
        entry = self._open_files.pop(key, None)
        if entry is not None:
            os.close(entry[0])

    def _present(self, key: str) -> bool:
        try:
            return key in self._cache
        except Exception:
            return False

    def contains(self, version: ObjectVersion, chunk_size: int, index: int) -> bool:
        try:
            return chunk_key(version, chunk_size, index) in self._cache
        except Exception:
            return False

    def put(self, version: ObjectVersion, chunk_size: int, index: int, data: bytes) -> bool:
        """Stores a chunk; False (and caching paused) if the disk is full or failing."""
        if time.monotonic() < self._disabled_until:
            return False
        key = chunk_key(version, chunk_size, index)
        try:
            self._cache.set(
                key,
                _EncodedReader(data),
                read=True,
                tag=version_tag(version.bucket, version.key, version.etag),
                retry=True,
            )
            return True
        except (OSError, sqlite3.Error) as exc:
            full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
            full = full or "full" in str(exc)
            with self._lock:
                self._disabled_until = time.monotonic() + RETRY_CACHING_AFTER
            log.warning(
                "cache %s: not caching for %.0fs, reads continue from S3 (%s s3://%s/%s chunk %d)",
                "full" if full else "write failed",
                RETRY_CACHING_AFTER,
                exc,
                version.bucket,
                version.key,
                index,
            )
            with contextlib.suppress(Exception):
                self._cache.delete(key, retry=True)
            return False

    def bind_etag(self, bucket: str, key: str, etag: str) -> None:
        """Records the current ETag of an object and drops chunks of any older version."""
        meta = f"{ETAG_PREFIX}\0{bucket}\0{key}"
        try:
            old = self._cache.get(meta, default=None, retry=True)
            if old == etag:
                return
            if isinstance(old, str):
                dropped = self._cache.evict(version_tag(bucket, key, old), retry=True)
                if dropped:
                    log.info(
                        "object changed: dropped %d cached chunks of s3://%s/%s (ETag %s -> %s)",
                        dropped,
                        bucket,
                        key,
                        old,
                        etag,
                    )
            self._cache.set(meta, etag, retry=True)
        except (OSError, sqlite3.Error) as exc:
            log.warning("cache: could not record ETag of s3://%s/%s: %s", bucket, key, exc)

    def cached_map(self, version: ObjectVersion, chunk_size: int, count: int) -> list[bool]:
        return [self.contains(version, chunk_size, i) for i in range(count)]

    def _warn_once(self, what: str, message: str) -> None:
        if what not in self._reported_bad:
            self._reported_bad.add(what)
            log.warning("cache: %s", message)

    def _drop(self, key: str, version: ObjectVersion, index: int, why: str) -> None:
        self.stats.bad_chunks += 1
        with self._lock:
            self._forget_open(key)
        if key not in self._reported_bad:
            self._reported_bad.add(key)
            log.warning(
                "cache: dropping bad chunk %d of s3://%s/%s (%s); fetching it again",
                index,
                version.bucket,
                version.key,
                why,
            )
        with contextlib.suppress(Exception):
            self._cache.delete(key, retry=True)

    def iter_chunk_keys(self) -> Iterator[str]:
        for key in self._cache.iterkeys():
            if isinstance(key, str) and key.startswith(KEY_VERSION + "\0"):
                yield key

    def summary(self) -> CacheStats:
        chunks = 0
        objects: set[tuple[str, str, str]] = set()
        for key in self.iter_chunk_keys():
            parts = key.split("\0")
            chunks += 1
            objects.add((parts[1], parts[2], parts[3]))
        return CacheStats(
            directory=str(self.directory),
            size_limit=self.size_limit,
            volume=self.volume(),
            chunks=chunks,
            objects=len(objects),
        )

    def verify(self) -> VerifyReport:
        """Re-checks every stored chunk; bad ones are dropped."""
        checked = 0
        bad: list[str] = []
        for key in list(self.iter_chunk_keys()):
            checked += 1
            try:
                value = self._cache.get(key, default=None, retry=True)
            except Exception:
                value = b""
            if value is None and not self._present(key):
                checked -= 1
                continue
            if value is None or decode(value, None) is None:
                bad.append(key)
                self._cache.delete(key, retry=True)
        return VerifyReport(checked, len(bad), bad)

    def clear(self) -> int:
        self._close_open_files()
        return self._cache.clear(retry=True)
