"""Chunk files being filled: where a GET's bytes land as they arrive (blocking; threads only).

A chunk that is not complete yet lives in ``CACHE_DIR/partial/`` as a file laid out exactly
like a finished cache value (:mod:`rangefs.cache.cache_format`): header, one digest slot per 64 KiB
block, data. Each block is written at its offset as soon as it has arrived, then its digest
into its slot. When the last block lands, the file is moved (renamed, not copied) into the
chunk store (:meth:`rangefs.cache.chunk_cache.ChunkCache.adopt`).

Why a file and not memory: RAM per GET in flight is one receive buffer, so GETs in flight
are limited by the network, not by RAM; and blocks of a chunk cut short (kill -9, a cut
connection) stay on disk, so the next read fetches only the missing blocks.

Crash rules: a block counts as present only when its slot holds the digest of the bytes at
its offset (a zero slot: never written; a digest without its data, after a power cut: the
check fails). Nothing is fsynced, as for the rest of the cache: every load re-checks.
"""

import contextlib
import errno
import fcntl
import hashlib
import itertools
import logging
import os
from pathlib import Path

from rangefs.cache.cache_format import (
    BLOCK,
    DIGEST,
    PREFIX,
    block_count,
    block_digests,
    block_span,
    blocks_ok,
    checksum,
    digest_offset,
    empty_header,
    header_size,
    parse_prefix,
)
from rangefs.errors import CacheWriteFailed
from rangefs.keys import ChunkKey

log = logging.getLogger(__name__)

PARTIAL_DIR = "partial"
MAX_PARTIAL_FILES = 512  # chunks left incomplete (random readers, crashes) kept for resume


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """pwrite that writes everything or raises (a full disk may write part and say so)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(errno.ENOSPC, "short write")
        view, offset = view[written:], offset + written


class ChunkFile:
    """One chunk's file in ``partial/``; thread-safe for writes of distinct blocks. Keeps
    the block digests in memory too, and checks every block it reads against them: a block
    that does not match (a disk that lost or mangled a write) is an error, never served."""

    def __init__(self, path: Path, fd: int, length: int, digests: bytes | bytearray) -> None:
        self.path = path
        self.fd = fd
        self.length = length
        self.digests = bytearray(digests)
        zero = bytes(DIGEST)
        self.present = bytearray(  # one flag per block, as loaded or written by this process
            self.digests[b * DIGEST : (b + 1) * DIGEST] != zero for b in range(self.blocks)
        )

    @property
    def blocks(self) -> int:
        return block_count(self.length)

    def write(self, offset: int, data: memoryview) -> None:
        """Writes whole blocks starting at chunk offset ``offset`` (block-aligned), data
        first and digests after."""
        digests = block_digests(data)
        first = offset // BLOCK
        try:
            _pwrite_all(self.fd, data, header_size(self.length) + offset)
            _pwrite_all(self.fd, digests, digest_offset(first))
        except OSError as exc:
            raise CacheWriteFailed(f"cache write failed: {exc}") from exc
        self.digests[first * DIGEST : first * DIGEST + len(digests)] = digests
        for block in range(first, first + len(digests) // DIGEST):
            self.present[block] = 1

    def read(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the chunk, whose blocks the caller knows are present."""
        first = start // BLOCK
        stop = min(block_count(end) * BLOCK, self.length)
        raw = os.pread(self.fd, stop - first * BLOCK, header_size(self.length) + first * BLOCK)
        intact = blocks_ok(memoryview(self.digests), first, memoryview(raw))
        if len(raw) != stop - first * BLOCK or not intact:
            raise CacheWriteFailed(f"chunk file {self.path.name}: a block does not match")
        skip = start - first * BLOCK
        return raw[skip : skip + end - start]

    @property
    def complete(self) -> bool:
        return all(self.present)

    def close(self) -> None:
        """Closes the file once: a second close must not close a descriptor number reused
        meanwhile by another file (the reader may close a retired fill more than once)."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


class MemoryChunkFile(ChunkFile):
    """A chunk filled in RAM, when the cache disk cannot take bytes (full or failing): reads
    go on from S3 as with a cache turned off. The reader bounds how many exist."""

    def __init__(self, length: int) -> None:
        super().__init__(Path(), -1, length, bytes(DIGEST * block_count(length)))
        self.data = bytearray(length)

    def write(self, offset: int, data: memoryview) -> None:
        self.data[offset : offset + len(data)] = data
        first = offset // BLOCK
        for block in range(first, first + block_count(len(data))):
            self.present[block] = 1

    def read(self, start: int, end: int) -> bytes:
        return bytes(self.data[start:end])

    def close(self) -> None:
        self.data = bytearray()


class PartialFiles:
    """The ``partial/`` directory of a cache: opens, creates and prunes chunk files."""

    def __init__(self, cache_dir: Path, max_files: int = MAX_PARTIAL_FILES) -> None:
        self.directory = Path(cache_dir) / PARTIAL_DIR
        self.directory.mkdir(mode=0o700, exist_ok=True)
        self.max_files = max_files
        self._created = 0
        self._serial = itertools.count()

    def path(self, key: ChunkKey) -> Path:
        name = hashlib.sha256(key.encode().encode()).hexdigest()[:40]
        return self.directory / name

    def open(self, key: ChunkKey, length: int) -> ChunkFile:
        """The chunk file of ``key``, with the blocks a previous fill left (checked), or a new
        empty one; a file that is not ours or not for this length is started again.

        The file is held with an exclusive ``flock`` while it fills (released when closed,
        also by a crash): another process sharing the cache dir that fills the same chunk
        at the same time gets a file of its own instead, so neither replaces the other's."""
        path = self.path(key)
        for _ in range(3):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return self._private(path, length)
            try:
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    return self._opened(path, fd, length)
            except FileNotFoundError:
                pass
            os.close(fd)  # moved into the store (or removed) meanwhile: open the path again
        return self._private(path, length)

    def _opened(self, path: Path, fd: int, length: int) -> ChunkFile:
        try:
            digests = self._load(fd, length) if os.fstat(fd).st_size else None
            if digests is None:
                if os.fstat(fd).st_size:
                    log.info("cache: starting over an unusable partial chunk file %s", path.name)
                self._count_created()
                os.ftruncate(fd, 0)
                _pwrite_all(fd, empty_header(length), 0)
                os.ftruncate(fd, header_size(length) + length)
                digests = bytearray(DIGEST * block_count(length))
            else:
                os.utime(fd)
        except BaseException:
            os.close(fd)
            raise
        return ChunkFile(path, fd, length, digests)

    def _private(self, path: Path, length: int) -> ChunkFile:
        """A file only this fill uses (another process holds the shared one)."""
        own = path.with_name(f"{path.name}.{os.getpid()}.{next(self._serial)}")
        fd = os.open(own, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        return self._opened(own, fd, length)

    def _count_created(self) -> None:
        self._created += 1
        if self._created % 64 == 1:
            self.prune()

    @staticmethod
    def _load(fd: int, length: int) -> bytearray | None:
        """The digest slots of an existing file, each zeroed unless the bytes of its block
        match it (a block never written, or written only in part before a crash)."""
        head = os.pread(fd, header_size(length), 0)
        if parse_prefix(head, length) is None or len(head) != header_size(length):
            return None
        digests = bytearray(head[PREFIX.size :])
        zero = bytes(DIGEST)
        base = header_size(length)
        for block in range(block_count(length)):
            slot = digests[block * DIGEST : (block + 1) * DIGEST]
            if slot == zero:
                continue
            start, end = block_span(block, length)
            if checksum(os.pread(fd, end - start, base + start)) != slot:
                digests[block * DIGEST : (block + 1) * DIGEST] = zero
        return digests

    def discard(self, key: ChunkKey) -> None:
        with contextlib.suppress(OSError):
            self.path(key).unlink()

    def clear(self) -> None:
        for entry in os.scandir(self.directory):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)

    def prune(self) -> int:
        """Deletes the least recently used chunk files beyond ``max_files``."""
        try:
            entries = [(e.stat().st_mtime, e.path) for e in os.scandir(self.directory)]
        except OSError:
            return 0
        entries.sort()
        removed = 0
        for _, path in entries[: max(0, len(entries) - self.max_files)]:
            with contextlib.suppress(OSError):
                os.unlink(path)
                removed += 1
        return removed
