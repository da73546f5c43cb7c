"""Serves byte ranges of an object version from chunks: memory, then disk, then S3.

What it guarantees:

* one GET per missing chunk however many readers want it (the in-flight map; nothing awaits
  between looking a chunk up in that map and inserting it, so two tasks cannot both miss);
* a fetch runs in its own task, so a reader that goes away does not cancel a GET that
  others wait on, and the chunk is written to the disk cache after the waiters got it;
* a chunk not in memory is first looked for on disk, reading only the blocks a request
  needs; a miss there goes straight to S3 (the disk is not asked twice);
* sequential readers get read-ahead (after half a chunk in sequence) that starts at one
  chunk and doubles up to ``max_readahead``; a seek resets it;
* memory is bounded globally: chunks in flight plus chunks held in memory (an LRU of
  chunks being served or read ahead) stay within ``memory_limit``; the read-ahead window
  never exceeds that budget less two chunks, so read-ahead does not evict what it fetched
  before the reader gets there; read-ahead never takes the last fetch slot, so a
  reader waiting for its chunk is not starved by read-ahead;
* bytes are checked against S3's proof by a :class:`~rangefs.verifier.Verifier`: each whole
  chunk obtained is handed to it after its waiters got it, and the read that returns an
  object's last bytes to a reader that read the whole file waits until the version is
  proven (only that read waits); a refetch by the verifier makes that read start over, a
  failed proof fails it and every later read of that open file (EIO).
"""

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from rangefs import chunks
from rangefs.async_cache import AsyncChunkCache
from rangefs.errors import BadResponse, ObjectChanged, ProofFailed, RangefsError, RemoteError
from rangefs.keys import ChunkKey
from rangefs.stats import Stats
from rangefs.store import AsyncStore, ObjectVersion
from rangefs.verifier import Verifier

log = logging.getLogger(__name__)

ChunkData = bytes | memoryview
DEMAND_RESERVE = 1  # fetch slots read-ahead may never use


@dataclass
class ReadStream:
    """Per open file: where the next sequential read would start, the bytes read in sequence
    since the last seek, the read-ahead window, and the last chunk read-ahead was started for
    (each chunk is scheduled once a run); ``failed``: the proof error every later read of
    this file raises (bytes it returned before may be wrong)."""

    next_offset: int = 0
    window: int = 0
    ahead_until: int = -1
    run: int = 0
    failed: ProofFailed | None = None


@dataclass
class _Fetch:
    done: trio.Event = field(default_factory=trio.Event)
    data: ChunkData | None = None
    error: Exception | None = None


class ChunkReader:
    def __init__(
        self,
        store: AsyncStore,
        cache: AsyncChunkCache,
        *,
        chunk_size: int,
        memory_limit: int,
        max_readahead: int,
        parallel: int,
        stats: Stats | None = None,
        verifier: Verifier | None = None,
    ) -> None:
        self.store = store
        self.cache = cache
        self.chunk_size = chunk_size
        self.stats = stats or Stats()
        self.verifier = verifier or Verifier(store, cache, chunk_size=chunk_size, stats=self.stats)
        budget = max(3, memory_limit // chunk_size)
        slots = max(1, min(parallel, budget - 2))
        self.fetch_slots = trio.CapacityLimiter(slots)
        self._readahead_slots = trio.Semaphore(max(1, slots - DEMAND_RESERVE))
        self._memory: OrderedDict[ChunkKey, ChunkData] = OrderedDict()
        self._memory_bytes = 0
        self.memory_limit = budget * chunk_size
        self.peak_bytes = 0  # most chunk bytes ever held in memory and in flight at once
        self.max_readahead = max(chunk_size, min(max_readahead, (budget - 2) * chunk_size))
        self._inflight: dict[ChunkKey, _Fetch] = {}
        self._readahead_pending: set[ChunkKey] = set()
        self._unread: set[ChunkKey] = set()  # chunks read ahead that no reader has touched yet
        self._nursery: trio.Nursery | None = None
        self._writing: dict[ChunkKey, trio.Event] = {}  # chunks being written to the disk

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Hosts the fetch tasks; runs until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    async def read(
        self, version: ObjectVersion, offset: int, length: int, stream: ReadStream | None = None
    ) -> bytes | memoryview:
        started = trio.current_time()
        if stream is not None and stream.failed is not None:
            raise stream.failed
        parts = chunks.pieces(offset, length, version.size, self.chunk_size)
        if not parts:
            return b""
        if stream is not None:
            self._follow(stream, version, offset, length, parts[-1].index)
        first, last = parts[0].index, parts[-1].index
        self.verifier.reading(version, first, last)
        out: list[memoryview] = []
        for part in parts:
            key = version.chunk(self.chunk_size, part.index)
            checked_disk = False
            # A chunk not in memory may be on disk: read just the blocks this request needs
            # (a random reader, or a chunk evicted while many readers share the budget).
            if key not in self._memory and key not in self._inflight:
                piece = await self.cache.read_range(
                    key,
                    chunks.chunk_length(part.index, version.size, self.chunk_size),
                    part.start,
                    part.end,
                )
                if piece is not None:
                    self.stats.range_hits += 1
                    out.append(memoryview(piece))
                    continue
                checked_disk = True
            got = self._lookup_or_start(key, version, check_disk=not checked_disk)
            data = got if not isinstance(got, _Fetch) else await self._wait(got)
            out.append(memoryview(data)[part.start : part.end])
        if offset + length >= version.size and self.verifier.read_whole(version):
            # The last bytes of a whole-file read: not returned before the proof holds.
            try:
                replaced = await self.verifier.settle(version, self, first, last)
            except ProofFailed as exc:
                if stream is not None:
                    stream.failed = exc
                raise
            if replaced:
                return await self.read(version, offset, length)
        self.stats.reads += 1
        self.stats.bytes_read += sum(len(v) for v in out)
        self.stats.observe_read(trio.current_time() - started)
        return out[0] if len(out) == 1 else b"".join(out)

    def _lookup_or_start(
        self, key: ChunkKey, version: ObjectVersion, *, check_disk: bool
    ) -> ChunkData | _Fetch:
        """The chunk from memory, or the fetch that brings it (started here if none runs);
        ``check_disk`` False when the caller just found it missing from the disk cache."""
        self._unread.discard(key)  # a reader wants it: no longer only read ahead
        data = self._memory.get(key)
        if data is not None:
            self._memory.move_to_end(key)
            self.stats.memory_hits += 1
            return data
        fetch = self._inflight.get(key)
        if fetch is None:
            fetch = _Fetch()
            self._inflight[key] = fetch
            self._spawn(self._fetch, key, version, fetch, check_disk)
        return fetch

    def _spawn(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        if self._nursery is None:
            raise RuntimeError("ChunkReader.run() is not running")
        self._nursery.start_soon(fn, *args)

    async def _wait(self, fetch: _Fetch) -> ChunkData:
        await fetch.done.wait()
        if fetch.error is not None:
            raise fetch.error
        assert fetch.data is not None
        return fetch.data

    def _follow(
        self, stream: ReadStream, version: ObjectVersion, offset: int, length: int, last: int
    ) -> None:
        """Grows read-ahead while the reader stays sequential; a seek resets it.

        Read-ahead starts once the reader has read half a chunk in sequence since its last
        seek: a media player that seeks and reads a frame should not pull in chunks it will
        not read. "Sequential" tolerates a chunk of slack: the kernel's own read-ahead
        requests run concurrently and may arrive slightly out of order.
        """
        sequential = abs(offset - stream.next_offset) <= self.chunk_size
        crossed = last > (stream.next_offset - 1) // self.chunk_size
        stream.next_offset = offset + length
        if not sequential:
            stream.window = 0
            stream.run = length
            stream.ahead_until = last
            return
        stream.run += length
        if stream.run < self.chunk_size // 2:
            return
        if stream.window == 0:
            stream.window = self.chunk_size
        elif crossed:
            stream.window = min(stream.window * 2, self.max_readahead)
        count = chunks.chunk_count(version.size, self.chunk_size)
        ahead = max(1, stream.window // self.chunk_size)
        first = max(last + 1, stream.ahead_until + 1)
        end = min(count, last + 1 + ahead)
        # All readers share the budget: read-ahead waits while the chunks already read ahead
        # (in flight or not yet read) fill it, instead of evicting each other's chunks.
        room = (
            self.memory_limit // self.chunk_size - 2 - len(self._unread | self._readahead_pending)
        )
        for index in range(first, end):
            key = version.chunk(self.chunk_size, index)
            held = key in self._memory or key in self._inflight or key in self._readahead_pending
            if not held:
                if room <= 0:
                    break
                room -= 1
                self._readahead_pending.add(key)
                self._spawn(self._readahead, key, version)
            stream.ahead_until = index

    async def _readahead(self, key: ChunkKey, version: ObjectVersion) -> None:
        try:
            async with self._readahead_slots:
                if key in self._memory or key in self._inflight:
                    return
                fetch = _Fetch()
                self._inflight[key] = fetch
                self._unread.add(key)
                await self._fetch(key, version, fetch)
        finally:
            self._readahead_pending.discard(key)

    async def _fetch(
        self, key: ChunkKey, version: ObjectVersion, fetch: _Fetch, check_disk: bool = True
    ) -> None:
        index = key.index
        start, end = chunks.chunk_bounds(index, version.size, self.chunk_size)
        try:
            async with self.fetch_slots:
                self.stats.bytes_in_flight += end - start
                self._evict()  # the chunk on its way counts against the budget from now on
                self._note_peak()
                try:
                    data: ChunkData | None = None
                    if check_disk:
                        data = await self.cache.get(key, end - start)
                    fetched = data is None
                    if fetched:
                        self.stats.misses += 1
                        body = await self.store.get_range(
                            version.key, start, end, version.etag, version.size, version.version_id
                        )
                        if len(body) != end - start:
                            raise BadResponse(f"store returned {len(body)} bytes for {end - start}")
                        self.stats.gets += 1
                        self.stats.bytes_fetched += len(body)
                        data = body
                        log.debug(
                            "fetched s3://%s/%s bytes=%d-%d",
                            version.bucket,
                            version.key,
                            start,
                            end - 1,
                        )
                    else:
                        self.stats.disk_hits += 1
                finally:
                    self.stats.bytes_in_flight -= end - start
                assert data is not None
                if fetched:
                    self.verifier.fetched(version, index, data)
                self._publish(key, fetch, data)
                if fetched:
                    written = self._writing[key] = trio.Event()
                    try:
                        stored = await self.cache.put(key, data)
                    finally:
                        del self._writing[key]
                        written.set()
                    if stored:
                        self.stats.chunks_stored += 1
                    else:
                        self.stats.store_failures += 1
                await self._arrived(version, index, data)
        except ObjectChanged as exc:
            log.warning(
                "object changed while open: s3://%s/%s bytes=%d-%d (ETag %s): %s",
                version.bucket,
                version.key,
                start,
                end - 1,
                version.etag,
                exc,
            )
            self._fail(key, fetch, exc)
        except RangefsError as exc:
            log.error(
                "read failed: s3://%s/%s bytes=%d-%d: %s",
                version.bucket,
                version.key,
                start,
                end - 1,
                exc,
            )
            self._fail(key, fetch, exc)
        except Exception as exc:
            log.exception(
                "unexpected error fetching s3://%s/%s chunk %d", version.bucket, version.key, index
            )
            self._fail(key, fetch, RemoteError(f"unexpected: {exc!r}"))
        finally:
            if not fetch.done.is_set():
                self._fail(key, fetch, RemoteError("fetch cancelled"))

    async def _arrived(self, version: ObjectVersion, index: int, data: ChunkData) -> None:
        """Hands a chunk its waiters already have to the verifier; its trouble is not theirs
        (the proof is completed at the last read anyway)."""
        try:
            await self.verifier.arrived(version, index, data, self)
        except Exception:
            log.exception("verifier failed on chunk %d of %s", index, version.id.uri)

    def _publish(self, key: ChunkKey, fetch: _Fetch, data: ChunkData) -> None:
        fetch.data = data
        self._remember(key, data)
        if self._inflight.get(key) is fetch:
            del self._inflight[key]
        fetch.done.set()

    def _fail(self, key: ChunkKey, fetch: _Fetch, exc: Exception) -> None:
        self.stats.read_errors += 1
        self._unread.discard(key)
        fetch.error = exc
        if self._inflight.get(key) is fetch:
            del self._inflight[key]
        fetch.done.set()

    def _remember(self, key: ChunkKey, data: ChunkData) -> None:
        old = self._memory.pop(key, None)
        if old is not None:
            self._memory_bytes -= len(old)
        self._memory[key] = data
        self._memory_bytes += len(data)
        self._evict(keep=key)
        self._note_peak()

    def _evict(self, keep: ChunkKey | None = None) -> None:
        """Drops chunks from memory until they and the chunks in flight fit the budget."""
        limit = self.memory_limit - self.stats.bytes_in_flight
        if self._memory_bytes <= limit:
            return
        # Chunks read ahead and not read yet go last: evicting the next chunk a reader needs
        # would only make it load again.
        read_first = [k for k in self._memory if k not in self._unread]
        for victim in [*read_first, *(k for k in self._memory if k in self._unread)]:
            if self._memory_bytes <= limit or len(self._memory) <= 1:
                break
            if victim == keep:
                continue
            self._memory_bytes -= len(self._memory.pop(victim))
            self._unread.discard(victim)

    def _note_peak(self) -> None:
        self.peak_bytes = max(self.peak_bytes, self._memory_bytes + self.stats.bytes_in_flight)

    @property
    def pending_fetches(self) -> int:
        """Chunks being fetched or waiting to be read ahead now (0: nothing on its way)."""
        return len(self._inflight.keys() | self._readahead_pending)

    @property
    def memory_bytes(self) -> int:
        """Chunk bytes held in memory now (in-flight bytes are in ``stats.bytes_in_flight``)."""
        return self._memory_bytes

    def in_memory(self, key: ChunkKey) -> ChunkData | None:
        """The chunk if held in memory now (for the verifier; not an LRU touch)."""
        return self._memory.get(key)

    async def pending(self, key: ChunkKey) -> ChunkData | None:
        """The chunk a fetch already running brings, else None (for the verifier)."""
        fetch = self._inflight.get(key)
        if fetch is None:
            return None
        await fetch.done.wait()
        return fetch.data if fetch.error is None else None

    async def writes_done(self, version: ObjectVersion) -> None:
        """Waits until no chunk of ``version`` is being written to the disk cache (so the
        verifier's drop is not undone by a write that finishes after it)."""
        for key, written in list(self._writing.items()):
            if key.obj == version.id:
                await written.wait()

    def forget_version(self, version: ObjectVersion) -> None:
        """Drops in-memory chunks of a version no longer current."""
        for key in [k for k in self._memory if k.obj == version.id]:
            self._memory_bytes -= len(self._memory.pop(key))
            self._unread.discard(key)
