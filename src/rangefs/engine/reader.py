"""Serves byte ranges of object versions: from the chunk store, from chunk files being
filled, or from S3, whose bytes stream into those files as they arrive.

How a read flows (docs/ARCHITECTURE.md):

1. a chunk complete in the store is read there (only the blocks the read needs, checked);
2. otherwise the chunk's *fill* is opened: its file in ``partial/`` with the blocks a previous
   fill left (:mod:`rangefs.cache.chunk_files`) and its
   :class:`~rangefs.engine.arrivals.ArrivalMap`;
3. blocks neither present nor on their way are asked for by a *demand* GET: from the read's
   first missing block to the end of that missing stretch of the chunk; the read waits only
   for its own blocks (a seek's first bytes come after one round trip, not a whole chunk),
   then reads them from the file;
4. a sequential reader's window (:mod:`rangefs.engine.window`) asks for bytes ahead:
   read-ahead GETs, whole chunks once the window spans chunks;
5. when a chunk's last block lands its file is moved into the store (a rename) and handed to
   the verifier.

What it guarantees:

* every GET covers a 64 KiB-aligned range inside one chunk; a block is asked for once however
  many readers want it (the arrival map; nothing awaits between looking blocks up and marking
  them wanted);
* RAM per GET in flight is one receive buffer, whatever the chunk size; GETs in flight and
  bytes ahead are capped for all readers together (:class:`~rangefs.engine.budget.Budget`), and a
  read waiting for its bytes never queues behind read-ahead (queued read-ahead for blocks a
  reader needs is promoted);
* a GET runs in its own task: a reader that goes away does not cancel what others wait on;
  blocks that landed before a GET failed are kept (on disk too: a crash or a cut costs only
  what was in flight);
* bytes are checked against S3's proof by a :class:`~rangefs.engine.verifier.Verifier`: a chunk
  from S3 un-proves a proven version when its GET starts, each completed chunk is handed to
  it, and the read that returns an object's last bytes to a reader that read the whole file
  waits until the version is proven (only that read waits); a refetch by the verifier makes
  that read start over, a failed proof fails it and every later read of that file (EIO).
"""

import logging
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from rangefs import chunks
from rangefs.cache.async_cache import AsyncChunkCache
from rangefs.cache.cache_format import BLOCK, block_count
from rangefs.cache.chunk_files import ChunkFile, MemoryChunkFile
from rangefs.cache.proofs import StretchHash
from rangefs.engine.arrivals import ArrivalMap
from rangefs.engine.budget import Budget
from rangefs.engine.verifier import Verifier
from rangefs.engine.window import FIRST_REQUEST, Limits, Window, advance
from rangefs.errors import CacheWriteFailed, ObjectChanged, ProofFailed, RangefsError, RemoteError
from rangefs.keys import ChunkKey, ObjectId
from rangefs.remote.store import AsyncStore, ObjectVersion, RangeGet
from rangefs.stats import Stats

log = logging.getLogger(__name__)


class _Superseded(RangefsError):
    """The fill a read waited on was retired (its disk failed, its version was dropped): the
    read starts over with the chunk's current state."""


OPEN_FILLS = 256  # chunk files kept open (idle ones beyond this are closed; they stay on disk)
PUSHBACK_CAUSES = ("http_503", "http_429")
WARM_AHEAD = 4  # stored chunks opened (read in from disk) ahead of a sequential reader
WARMED = 256  # chunks opened by _warm_next, remembered so each is asked for once
PENDING_BINDS = 4096  # versions fetched ahead whose ETag is recorded when a chunk is stored
SMALL_AHEAD = 256 * 1024  # files fetched ahead whole, this small, fill in RAM until stored
# A file to fetch ahead: its version, how many first bytes, and whether to bind its ETag.
Prefetch = tuple[ObjectVersion, int, bool]


@dataclass(eq=False)
class ReadStream:
    """Per open file: its read-ahead window; whether a read had to wait for bytes since the
    window last moved (it then grows); ``failed``: the proof error every later read of this
    file raises."""

    window: Window = field(default_factory=Window)
    waited: bool = False
    failed: ProofFailed | None = None
    warmed: int = -1  # the chunk whose followers were last opened for it (_warm_next)

    def ahead(self) -> int:
        return self.window.ahead()


@dataclass(eq=False)
class _Request:
    """One GET of blocks ``[first, end)`` of a fill, queued or in flight."""

    first: int
    end: int
    demand: bool
    started: bool = False
    queue_scope: trio.CancelScope | None = None
    landed: int = 0  # bytes written so far


@dataclass(eq=False)
class _Fill:
    """A chunk not complete in the store: its file, which blocks it holds, its GETs."""

    key: ChunkKey
    version: ObjectVersion
    start: int
    file: ChunkFile
    arrivals: ArrivalMap
    requests: list[_Request] = field(default_factory=list)
    stretches: list[StretchHash] = field(default_factory=list)  # hashed by its GETs
    users: int = 0
    finishing: bool = False
    retired: bool = False
    finished: bool = False  # moved into the store, or refused by it
    changed: trio.Event = field(default_factory=trio.Event)  # set when a GET ends (renewed)

    @property
    def length(self) -> int:
        return self.file.length

    @property
    def idle(self) -> bool:
        return not self.requests and not self.users and not self.finishing


class ChunkReader:
    def __init__(
        self,
        store: AsyncStore,
        cache: AsyncChunkCache,
        budget: Budget,
        *,
        chunk_size: int,
        max_readahead: int,
        memory_limit: int,
        stats: Stats | None = None,
        verifier: Verifier | None = None,
    ) -> None:
        self.store = store
        self.cache = cache
        self.budget = budget
        self.chunk_size = chunk_size
        self.stats = stats or Stats()
        self.verifier = verifier or Verifier(store, cache, chunk_size=chunk_size, stats=self.stats)
        self.limits = Limits(
            first=min(FIRST_REQUEST, max(BLOCK, max_readahead // 8)),
            largest=max(max_readahead, BLOCK),
            slack=chunk_size,
            chunk=chunk_size,
        )
        # RAM for fills held in memory (cache paused; small files fetched ahead, until stored)
        self.memory_bytes = max(2, memory_limit // chunk_size) * chunk_size
        self._fills: OrderedDict[ChunkKey, _Fill] = OrderedDict()
        self._opening: dict[ChunkKey, trio.Event] = {}
        self._nursery: trio.Nursery | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._landings: list[tuple[_Fill, _Request, int, int, int]] = []
        self._landings_lock = threading.Lock()  # the list, and queuing its drain, in one step
        self._pushbacks = 0
        self._finishing = 0
        self._reading: dict[ChunkKey, int] = {}  # reads of each chunk in progress
        self._progress = trio.Event()  # set (and renewed) when a read or a GET ends...
        self._settling = 0  # ...if a task waits for it (in settled)
        self._following = 0  # read-ahead tasks still opening their fills or chunks
        self._around: set[tuple[ChunkKey, int]] = set()  # pieces queued by _complete_around
        self._warmed: OrderedDict[ChunkKey, None] = OrderedDict()  # by _warm_next
        self._binds: OrderedDict[ObjectId, bool] = OrderedDict()  # ETags to record on storing

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Hosts the GET tasks; runs until cancelled."""
        self._token = trio.lowlevel.current_trio_token()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            for fill in list(self._fills.values()):
                fill.file.close()
            self._fills.clear()

    # -- reads -------------------------------------------------------------------------------

    async def read(
        self, version: ObjectVersion, offset: int, length: int, stream: ReadStream | None = None
    ) -> bytes | memoryview:
        started = trio.current_time()
        if stream is not None and stream.failed is not None:
            raise stream.failed
        parts = chunks.pieces(offset, length, version.size, self.chunk_size)
        if not parts:
            return b""
        around = self._follow(stream, version, offset, length) if stream is not None else []
        first, last = parts[0].index, parts[-1].index
        self.verifier.reading(version, first, last)
        out: list[bytes | memoryview] = []
        waited = False
        for part in parts:
            data, had_to_wait = await self._read_piece(version, part)
            out.append(data)
            waited = waited or had_to_wait
        if stream is not None and waited:
            stream.waited = True  # until the window next moves: concurrent reads all count
        self._complete_around(version, around)
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

    async def _read_piece(
        self, version: ObjectVersion, part: chunks.Piece
    ) -> tuple[bytes | memoryview, bool]:
        """Bytes ``[part.start, part.end)`` of one chunk, and whether the read waited for S3."""
        key = version.chunk(self.chunk_size, part.index)
        reading = self._reading
        reading[key] = reading.get(key, 0) + 1
        try:
            return await self._read_chunk_piece(version, key, part)
        finally:
            left = reading[key] - 1
            if left:
                reading[key] = left
            else:
                del reading[key]
            self._note_progress()

    async def _read_chunk_piece(
        self, version: ObjectVersion, key: ChunkKey, part: chunks.Piece
    ) -> tuple[bytes | memoryview, bool]:
        length = chunks.chunk_length(part.index, version.size, self.chunk_size)
        while True:
            if key not in self._fills and key not in self._opening:
                piece = await self.cache.read_range(key, length, part.start, part.end)
                if piece is not None:
                    self.stats.range_hits += 1
                    return piece, False
            fill = await self._fill(version, part.index)
            if fill is None:
                continue
            first, end = part.start // BLOCK, block_count(part.end)
            fill.users += 1
            try:
                waited = not fill.arrivals.has(first, end)
                if waited:
                    self._demand(fill, first, end)
                    await fill.arrivals.wait(first, end)
                else:
                    self.stats.fill_hits += 1
                return await self.cache.read_file(fill.file, part.start, part.end), waited
            except CacheWriteFailed as exc:
                # The disk refused or lost the bytes: caching pauses, the next fill is in RAM.
                if not isinstance(fill.file, MemoryChunkFile) and not self.cache.paused:
                    await self.cache.pause(exc, key)
                self._retire(fill)
                continue
            except _Superseded:
                continue
            finally:
                fill.users -= 1
                self._close_if_retired(fill)

    # -- fills -------------------------------------------------------------------------------

    async def _fill(self, version: ObjectVersion, index: int) -> _Fill | None:
        """The fill of chunk ``index`` (opened, with what its file holds), or None if the
        chunk is complete in the store."""
        key = version.chunk(self.chunk_size, index)
        while True:
            fill = self._fills.get(key)
            if fill is not None:
                self._fills.move_to_end(key)
                return fill
            opening = self._opening.get(key)
            if opening is None:
                break
            await opening.wait()
            if key not in self._fills:
                return None
        event = self._opening[key] = trio.Event()
        try:
            length = chunks.chunk_length(index, version.size, self.chunk_size)
            file = await self.cache.open_fill(key, length)
            if file is None:
                return None
            arrivals = ArrivalMap(file.blocks, file.present)
            fill = _Fill(key, version, index * self.chunk_size, file, arrivals)
            self._fills[key] = fill
            self._trim()
            if fill.arrivals.complete:  # left complete by a fill whose move into the store failed
                self._schedule_finish(fill)
            return fill
        finally:
            del self._opening[key]
            event.set()

    def _trim(self) -> None:
        """Retires the least recently used idle fills beyond :data:`OPEN_FILLS`, and beyond
        ``memory_bytes`` of those held in RAM (their files, if any, stay on disk)."""
        fills = self._fills.values()
        in_memory = sum(f.length for f in fills if isinstance(f.file, MemoryChunkFile))
        for fill in list(fills):
            if len(self._fills) <= OPEN_FILLS and in_memory <= self.memory_bytes:
                break
            if fill.idle and fill.arrivals.idle:
                in_memory -= fill.length if isinstance(fill.file, MemoryChunkFile) else 0
                self._retire(fill)

    def _retire(self, fill: _Fill) -> None:
        if self._fills.get(fill.key) is fill:
            del self._fills[fill.key]
        fill.retired = True
        self._changed(fill)
        self._close_if_retired(fill)

    def _changed(self, fill: _Fill) -> None:
        fill.changed.set()
        fill.changed = trio.Event()
        self._note_progress()

    def _note_progress(self) -> None:
        """Wakes :meth:`settled`'s waiters, if any (most reads have none to wake)."""
        if self._settling:
            self._progress.set()
            self._progress = trio.Event()

    @staticmethod
    def _close_if_retired(fill: _Fill) -> None:
        if fill.retired and not fill.users and not fill.requests:
            fill.file.close()

    # -- GETs --------------------------------------------------------------------------------

    def _demand(self, fill: _Fill, first: int, end: int) -> None:
        """Asks for the missing blocks of ``[first, end)`` now: queued read-ahead for them is
        promoted, and a new GET runs on to the end of the missing stretch of the chunk (its
        first bytes wake the reader as soon as they land, so a long GET costs no latency, and
        a random reader fills whole chunks rather than paying a round trip per read)."""
        for request in fill.requests:
            if request.first < end and first < request.end and not request.started:
                request.demand = True
                if request.queue_scope is not None:
                    request.queue_scope.cancel()
        for a, b in fill.arrivals.missing_runs(first, fill.arrivals.blocks):
            if a < end:
                self.stats.misses += 1
                self._request(fill, a, b, demand=True)

    def _request(self, fill: _Fill, first: int, end: int, *, demand: bool) -> _Request:
        fill.arrivals.want(first, end)
        request = _Request(first, end, demand)
        fill.requests.append(request)
        self._spawn(self._get, fill, request)
        return request

    def _spawn(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        if self._nursery is None:
            raise RuntimeError("ChunkReader.run() is not running")
        self._nursery.start_soon(fn, *args)

    async def _get(self, fill: _Fill, request: _Request) -> None:
        version = fill.version
        start = fill.start + request.first * BLOCK
        stop = fill.start + min(request.end * BLOCK, fill.length)
        what = f"s3://{version.bucket}/{version.key} bytes={start}-{stop - 1}"
        borrowed = False
        stretch: StretchHash | None = None
        try:
            if not request.demand:
                with trio.CancelScope() as request.queue_scope:
                    # So its bytes are hashed as they land: a HEAD, sent beside the first GET.
                    await self.verifier.known(version)
                    await self.budget.readahead_slots.acquire_on_behalf_of(request)
                    borrowed = True
            request.started = True
            if fill.retired:
                raise _Superseded("chunk file retired")
            stretch = self.verifier.fetched(version, fill.key.index, start - fill.start)
            if self.verifier.wants_proof(version):
                self._spawn(self.verifier.learn, version)
            self.stats.bytes_in_flight += stop - start
            get = RangeGet(
                version.key, start, stop, version.etag, version.size, version.version_id, BLOCK
            )
            await self.store.get_range_into(get, self._sink(fill, request, stretch))
            self.stats.gets += 1
            self.budget.succeeded()
            log.debug("fetched %s", what)
        except CacheWriteFailed as exc:
            await self.cache.pause(exc, fill.key)
            self._retire(fill)
            fill.arrivals.failed(request.first, request.end, exc)
        except _Superseded as exc:
            fill.arrivals.failed(request.first, request.end, exc)
        except ObjectChanged as exc:
            log.warning("object changed while open: %s (ETag %s): %s", what, version.etag, exc)
            fill.arrivals.failed(request.first, request.end, exc)
        except RangefsError as exc:
            self.stats.read_errors += 1
            log.error("read failed: %s: %s", what, exc)
            fill.arrivals.failed(request.first, request.end, exc)
        except Exception as exc:
            self.stats.read_errors += 1
            log.exception("unexpected error fetching %s", what)
            fill.arrivals.failed(request.first, request.end, RemoteError(f"unexpected: {exc!r}"))
        finally:
            if borrowed:
                self.budget.readahead_slots.release_on_behalf_of(request)
            if request.started:
                self.stats.bytes_in_flight -= (stop - start) - request.landed
            fill.requests.remove(request)
            if stretch is not None:
                fill.stretches.append(stretch)
            if not request.started:  # cancelled with the reader (shutdown)
                fill.arrivals.failed(request.first, request.end, RemoteError("fetch cancelled"))
            self._note_pushback()
            if fill.arrivals.complete and not fill.requests:
                # Every block can land before the last GET ends: its stretch comes with its end.
                self._schedule_finish(fill)
            self._changed(fill)
            self._close_if_retired(fill)

    def _sink(
        self, fill: _Fill, request: _Request, stretch: StretchHash | None
    ) -> Callable[[int, memoryview], None]:
        """Writes a GET's pieces into the chunk file and feeds the verifier's hash (in the
        GET's thread, while the bytes are in the receive buffer), and tells the arrival map
        on the trio thread (in order: before the GET's own return)."""
        token = self._token
        assert token is not None

        def sink(offset: int, data: memoryview) -> None:
            relative = offset - fill.start
            fill.file.write(relative, data)
            if stretch is not None:
                stretch.update(data)
            first = relative // BLOCK
            landing = (fill, request, first, first + block_count(len(data)), len(data))
            with self._landings_lock:
                self._landings.append(landing)
                if len(self._landings) == 1:
                    token.run_sync_soon(self._drain_landings)

        return sink

    def _drain_landings(self) -> None:
        """Tells the arrival map of the pieces GET threads wrote. One trio wake-up serves all
        the pieces that landed meanwhile (about 4,000 a GiB): each wake-up costs the GIL and a
        write to trio's wake-up socket. A piece is queued, and its drain scheduled if none is,
        under one lock, so the drain that serves a GET's last piece is scheduled before the
        GET's own return (trio runs thread callbacks in order). Runs as a trio-token callback:
        must not raise."""
        with self._landings_lock:
            landings, self._landings = self._landings, []
        for fill, request, first, end, size in landings:
            request.landed += size
            self.stats.bytes_in_flight -= size
            self.stats.bytes_fetched += size
            fill.arrivals.landed(first, end)

    def _note_pushback(self) -> None:
        count = sum(self.stats.retries[cause] for cause in PUSHBACK_CAUSES)
        if count > self._pushbacks:
            self._pushbacks = count
            self.budget.pushback()

    def _schedule_finish(self, fill: _Fill) -> None:
        """Marks the fill finishing at once (so the verifier waits for it), then finishes it."""
        if fill.finishing or fill.retired or fill.finished:
            return
        fill.finishing = True
        self._finishing += 1
        self._spawn(self._finish, fill)

    async def _finish(self, fill: _Fill) -> None:
        """A fill's last block landed: its file goes into the store (then the fill retires),
        and the verifier gets the chunk. A chunk the store refused (caching paused) stays
        a fill and serves reads until trimmed."""
        proof = self.verifier.hashed(fill.version, fill.key.index, fill.stretches)
        bind = self._binds.pop(fill.version.id, False)
        try:
            try:
                stored = await self.cache.adopt(fill.key, fill.file, proof=proof, bind=bind)
            finally:
                fill.finishing = False
                fill.finished = True
            if stored:
                self.stats.chunks_stored += 1
                self._retire(fill)
            else:
                self.stats.store_failures += 1
                self._changed(fill)
                self._trim()
            if proof is None:
                await self.verifier.arrived(fill.version, fill.key.index, self)
        except Exception:
            log.exception("finishing chunk %d of %s failed", fill.key.index, fill.version.id.uri)
        finally:
            self._finishing -= 1

    # -- read-ahead --------------------------------------------------------------------------

    def _follow(
        self, stream: ReadStream, version: ObjectVersion, offset: int, length: int
    ) -> list[tuple[int, int]]:
        """Moves the reader's window and asks for the bytes it now wants ahead; returns what
        a random reader wants around its read, asked for once the read's own GET is out."""
        self.budget.register(stream)
        stream.window, ranges = advance(
            stream.window,
            offset,
            length,
            version.size,
            self.limits,
            waited=stream.waited,
            room=self.budget.room(excluding=stream),
        )
        stream.waited = False
        if stream.window.random and stream.window.reads == 1:
            return ranges
        for start, end in ranges:
            for part in chunks.pieces(start, end - start, version.size, self.chunk_size):
                key = version.chunk(self.chunk_size, part.index)
                if key not in self._fills and self.cache.is_open(key):
                    continue  # complete in the store and opened for reading: nothing to do
                self._spawn(self._readahead, version, part)
        if stream.window.reads > 1 and (offset + length) // self.chunk_size != stream.warmed:
            self._warm_next(stream, version, offset + length)
        return []

    def _complete_around(self, version: ObjectVersion, ranges: list[tuple[int, int]]) -> None:
        """Queues, as read-ahead, the pieces of ``ranges`` with blocks still missing in chunks
        being filled (a random reader's read has just opened them; a chunk complete in the
        store costs nothing). After the read, so its own demand GET comes first."""
        if self.cache.paused:
            return
        for start, end in ranges:
            for part in chunks.pieces(start, end - start, version.size, self.chunk_size):
                key = version.chunk(self.chunk_size, part.index)
                fill = self._fills.get(key)
                if fill is None or fill.retired or (key, part.start) in self._around:
                    continue
                if fill.arrivals.missing_runs(part.start // BLOCK, block_count(part.end)):
                    self._around.add((key, part.start))
                    self._spawn(self._fetch_around, fill, part)

    async def _fetch_around(self, fill: _Fill, part: chunks.Piece) -> None:
        """Fetches a piece of a random reader's chunk once one of the few slots for such
        GETs is free (:attr:`Budget.around_slots`): a handful in flight fill chunks about as
        fast as many, and leave the server to the random reads waiting for their blocks."""
        try:
            async with self.budget.around_slots:
                if fill.retired:
                    return
                runs = fill.arrivals.missing_runs(part.start // BLOCK, block_count(part.end))
                requests = [self._request(fill, a, b, demand=False) for a, b in runs]
                while any(r in fill.requests for r in requests) and not fill.retired:
                    await fill.changed.wait()
        finally:
            self._around.discard((fill.key, part.start))

    def prefetch(self, wanted: list[Prefetch]) -> None:
        """Asks for the first ``end`` bytes of versions no reader has open yet, as read-ahead
        (the next files of a directory being walked, :mod:`rangefs.fs.walk`): same GET slots,
        so a demand read never waits behind it; blocks present or on their way are not asked
        for again. ``bind``: the version's ETag is recorded as its key's current one (what
        its open would otherwise wait for), with its first chunk stored (one transaction), or
        at once if that chunk needs no GET.

        Small whole files (up to :data:`SMALL_AHEAD`) are looked up in the store together
        (one thread hop for the batch) and those missing fill in RAM until stored: no thread
        hop of their own before their GET."""
        for version, _, bind in wanted:
            if bind:
                self._binds[version.id] = True
        while len(self._binds) > PENDING_BINDS:  # GETs failed: bind those now
            self._spawn(self.cache.bind_etag, self._binds.popitem(last=False)[0])
        self._spawn(self._prefetch, wanted)

    async def _prefetch(self, wanted: list[Prefetch]) -> None:
        """Opens the batch's small files as one (their fills are *opening* meanwhile, so a
        read of one waits for its fill rather than starting its own GET); the others, and
        small files already stored or being filled, go the way of any read-ahead."""
        self._following += 1
        opening = trio.Event()
        small: dict[ChunkKey, ObjectVersion] = {}
        if not self.cache.paused:
            for version, end, _ in wanted:
                key = version.chunk(self.chunk_size, 0)
                if 0 < end == version.size <= SMALL_AHEAD and not self._busy(key):
                    small[key] = version
                    self._opening[key] = opening
        try:
            stored = await self.cache.contains_each(list(small)) if small else []
            for (key, version), there in zip(small.items(), stored, strict=True):
                if not there and not self.cache.paused:
                    self._fill_in_memory(version, key)
        except Exception as exc:  # read-ahead is a bonus: the opens fetch what it did not
            log.warning("read-ahead of %d files: %s", len(small), exc)
        finally:
            for key in small:
                del self._opening[key]
            opening.set()
            self._following -= 1
        for version, end, _ in wanted:
            key = version.chunk(self.chunk_size, 0)
            if key not in small or key not in self._fills:
                for part in chunks.pieces(0, end, version.size, self.chunk_size):
                    self._spawn(self._readahead, version, part)

    def _busy(self, key: ChunkKey) -> bool:
        """A fill of ``key`` exists or opens, or it was stored lately by this process."""
        return key in self._fills or key in self._opening or self.cache.is_open(key)

    def _fill_in_memory(self, version: ObjectVersion, key: ChunkKey) -> None:
        """A small file's only chunk, missing from the store: filled in RAM, moved to disk
        when complete (:meth:`AsyncChunkCache.adopt`), its whole object asked for."""
        file = MemoryChunkFile(version.size)
        fill = _Fill(key, version, 0, file, ArrivalMap(file.blocks, file.present))
        self._fills[key] = fill
        self._trim()
        self._request(fill, 0, fill.arrivals.blocks, demand=False)

    async def _readahead(self, version: ObjectVersion, part: chunks.Piece) -> None:
        self._following += 1
        try:
            fill = None
            if not self.cache.paused:  # else chunks would fill in memory: only for reads
                fill = await self._fill(version, part.index)
            if fill is None:
                if self._binds.pop(version.id, False):
                    await self.cache.bind_etag(version.id)
                if not self.cache.paused:
                    await self._warm(version, part.index)
                return
            for a, b in fill.arrivals.missing_runs(part.start // BLOCK, block_count(part.end)):
                self._request(fill, a, b, demand=False)
        except Exception as exc:
            log.warning("read-ahead of %s chunk %d: %s", version.id.uri, part.index, exc)
        finally:
            self._following -= 1

    def _warm_next(self, stream: ReadStream, version: ObjectVersion, offset: int) -> None:
        """A sequential reader in a chunk read from the store: the next
        :data:`WARM_AHEAD` chunks are opened now, so the kernel reads them in from disk
        before the reader gets there (8 MiB takes ~7 ms from this machine's disk, the reader
        ~10 ms at 800 MB/s). Opened only when the window reached them, every other chunk was
        still on its way from disk at the reader's first reads in it, which then waited in a
        thread."""
        index = offset // self.chunk_size
        key = version.chunk(self.chunk_size, index)
        if key in self._fills or not self.cache.is_open(key):
            return
        stream.warmed = index  # once a chunk: the next reads in it need not look
        for at in range(index + 1, index + 1 + WARM_AHEAD):
            if at * self.chunk_size >= version.size:
                return
            following = version.chunk(self.chunk_size, at)
            if following in self._fills or following in self._warmed:
                continue
            if self.cache.is_open(following):
                continue
            self._warmed[following] = None
            if len(self._warmed) > WARMED:
                self._warmed.popitem(last=False)
            self._spawn(self._warm_one, version, at)

    async def _warm_one(self, version: ObjectVersion, index: int) -> None:
        length = chunks.chunk_length(index, version.size, self.chunk_size)
        self._following += 1
        try:
            await self.cache.warm(version.chunk(self.chunk_size, index), length)
        except Exception as exc:
            log.warning("read-ahead from disk of %s chunk %d: %s", version.id.uri, index, exc)
        finally:
            self._following -= 1

    async def _warm(self, version: ObjectVersion, index: int) -> None:
        """Chunk ``index`` is complete in the store: the kernel is asked to read it and the
        next chunk in from disk (a stored chunk costs no GET, so the disk is read a chunk
        further ahead than S3 would be: reading 8 MiB in takes a few ms, and the reader's
        hits should find them in the page cache, not wait in a worker thread)."""
        for at in (index, index + 1):
            if at * self.chunk_size >= version.size:
                return
            length = chunks.chunk_length(at, version.size, self.chunk_size)
            await self.cache.warm(version.chunk(self.chunk_size, at), length)

    # -- what the verifier and the filesystem ask --------------------------------------------

    @property
    def pending_fetches(self) -> int:
        """GETs queued or in flight, chunks being opened, moved into the store or handed to
        the verifier (0: quiet)."""
        requests = sum(len(f.requests) for f in self._fills.values()) + len(self._around)
        return requests + len(self._opening) + self._finishing + self._following

    async def settled(self, key: ChunkKey) -> None:
        """Waits until no read of chunk ``key`` and no GET of it is on its way (for the
        verifier, which would otherwise fetch again what a read is about to bring)."""
        while True:
            fill = self._fills.get(key)
            busy = key in self._opening or key in self._reading
            if fill is not None and not fill.retired:
                busy = busy or bool(fill.requests) or fill.finishing
            if not busy:
                return
            self._settling += 1
            try:
                await self._progress.wait()
            finally:
                self._settling -= 1

    async def forget_version(self, version: ObjectVersion) -> None:
        """Drops the fills of ``version`` (a failed proof, or a version no longer current):
        their blocks are not kept."""
        for key, fill in list(self._fills.items()):
            if key.obj == version.id:
                self._retire(fill)
                await self.cache.discard_fill(key)
