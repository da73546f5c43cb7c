"""Checks the bytes of each object version against S3's proof (its ETag), per version.

The reader hands every whole chunk it obtains to :meth:`Verifier.arrived` (after its
waiters got it: a streaming reader is never held back) and calls :meth:`Verifier.settle`
before it returns the object's last bytes to a reader that read the whole file; only that
read waits. The integration surface with the reader is these calls plus :meth:`fetched`
(a chunk came from S3), :meth:`reading` and :meth:`read_whole` (which chunks were read), and
:class:`ChunkSource` (what the verifier needs back: chunks still in memory, and forgetting a
version's chunks).

What it guarantees:

* a version is "proven" when the MD5s of its parts (:mod:`rangefs.proofs`), hashed from the
  bytes as they arrived, give its ETag; the fact is recorded in the chunk cache (the
  checkpoint), so a remount does not hash again. A chunk of a proven version that comes from
  S3 again (evicted, then refetched) un-proves it until the next whole read;
* on a mismatch every chunk of the version is dropped from memory and disk and fetched once
  more (one GET each, by the verifier itself, in order, one chunk in memory at a time); if
  the refetched bytes still fail, they are dropped too and :class:`ProofFailed` (EIO) is
  raised, with one log line naming the key, the range and both checksums;
* if the refetched bytes pass but a chunk that differed had already been returned to a
  reader, that reader got wrong bytes: the waiting read fails all the same (EIO), and the
  version is marked *suspect* so the next open drops the kernel's page cache
  (:meth:`take_suspect`). The cache then holds proven bytes: reading again succeeds.

Concurrency: hashing runs in worker threads (hashlib releases the GIL), serialised per
part by a lock held only while hashing, never while fetching; whoever feeds a part's next
chunk first (an arrival or :meth:`settle`) wins, the other sees it done. :meth:`settle` of
one version runs once at a time.
"""

import hashlib
import logging
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio
import xxhash

from rangefs import chunks, proofs
from rangefs.async_cache import AsyncChunkCache
from rangefs.errors import BadResponse, ProofFailed, RangefsError, Unreachable
from rangefs.keys import ChunkKey, ObjectId
from rangefs.stats import Stats
from rangefs.store import AsyncStore, ObjectVersion

log = logging.getLogger(__name__)

ChunkData = bytes | memoryview
HASH_THREADS = 2  # MD5 runs at ~600 MB/s per core: one per core of the machines we target
VERSIONS = 1024  # per-version states kept; a state evicted early only costs a re-hash


class ChunkSource(Protocol):
    """What the verifier asks of the reader."""

    def in_memory(self, key: ChunkKey) -> ChunkData | None:
        """The chunk if the reader holds it in memory now (no I/O)."""
        ...

    async def pending(self, key: ChunkKey) -> ChunkData | None:
        """The chunk a fetch already running brings (awaited), else None."""
        ...

    async def writes_done(self, version: ObjectVersion) -> None:
        """Waits until no chunk of the version is being written to the disk cache."""
        ...

    def forget_version(self, version: ObjectVersion) -> None:
        """Drops the version's chunks from memory."""
        ...


def _hash_into(hasher: Any, data: ChunkData) -> int:
    """Feeds ``data`` to an MD5 state; returns its xxh3 fingerprint (to tell later which
    chunks a refetch changed)."""
    hasher.update(data)
    return int(xxhash.xxh3_64_intdigest(data))


@dataclass
class _Part:
    first: int  # first chunk index of the part
    end: int  # one past its last chunk
    next: int
    hasher: Any = field(default_factory=hashlib.md5)
    digest: bytes | None = None
    lock: trio.Lock = field(default_factory=trio.Lock)


@dataclass
class _State:
    version: ObjectVersion
    proof: proofs.Proof
    parts: list[_Part]
    proven: bool = False
    record_stale: bool = False  # a proof record in the cache must go (new bytes came)
    refetching: bool = False  # the verifier's own GETs feed it; arrivals are ignored
    record_checked: bool = False
    fingerprints: dict[int, int] = field(default_factory=dict)
    served: Counter[int] = field(default_factory=Counter)  # reads started, per chunk
    settling: trio.Lock = field(default_factory=trio.Lock)


class Verifier:
    def __init__(
        self,
        store: AsyncStore,
        cache: AsyncChunkCache,
        *,
        chunk_size: int,
        stats: Stats | None = None,
        part_size: Callable[[ObjectVersion], int | None] | None = None,
        customer_key: bool = False,
    ) -> None:
        """``customer_key``: objects are read with an SSE-C key (``--sse-c-key-file``), so
        their ETags prove nothing."""
        self.store = store
        self.cache = cache
        self.chunk_size = chunk_size
        self.stats = stats or Stats()
        self._part_size = part_size or (lambda version: None)
        self._hash_limiter = trio.CapacityLimiter(HASH_THREADS)
        self._states: OrderedDict[ObjectId, _State] = OrderedDict()
        self._customer_key = customer_key
        self._disproved: OrderedDict[ObjectId, proofs.Proof] = OrderedDict()  # by a HEAD
        self._suspect: set[ObjectId] = set()

    # -- what the reader calls ---------------------------------------------------------------

    def proof(self, version: ObjectVersion) -> proofs.Proof:
        known = self._disproved.get(version.id)
        if known is not None:
            return known
        if self._customer_key:
            return proofs.Proof(proofs.NONE, reason=proofs.CUSTOMER_KEY)
        return proofs.proof_for(
            version.etag, version.size, self.chunk_size, self._part_size(version)
        )

    def fetched(self, version: ObjectVersion, index: int, data: ChunkData) -> None:
        """Chunk ``index`` came from S3 (called before its waiters get it): a proof that did
        not hash these very bytes does not cover them any more."""
        state = self._state(version)
        if not state.proof.verifiable:
            return
        if state.proven:
            if state.fingerprints.get(index) == xxhash.xxh3_64_intdigest(data):
                return  # hashed for the proof already (the proof's own chunk, late)
            state = self._restart(version, keep_served=True)
            state.record_stale = True
        elif not state.record_checked:
            state.record_checked = True  # whatever a record says, it is not about these bytes
            state.record_stale = True

    async def arrived(
        self, version: ObjectVersion, index: int, data: ChunkData, source: ChunkSource
    ) -> None:
        """A whole chunk reached the reader (from S3 or the disk) and its waiters."""
        state = await self._checked_state(version)
        if not state.proof.verifiable or state.refetching or state.proven:
            return
        await self._forget_stale_record(state)
        if source.in_memory(version.chunk(self.chunk_size, index)) is not data:
            return  # dropped meanwhile (a failed proof) or evicted: settle() reads it again
        await self._feed(state, index, data)
        await self._advance(state, state.parts[self._part_index(state, index)], source)

    def reading(self, version: ObjectVersion, first: int, last: int) -> None:
        """A read of chunks ``first..last`` of ``version`` starts (its bytes will be returned
        unless it fails). Called when the read starts: the kernel sends a file's requests in
        order but they finish in any order."""
        state = self._state(version)
        if state.proof.verifiable:  # proven too: a chunk fetched again may un-prove it
            state.served.update(range(first, last + 1))

    def read_whole(self, version: ObjectVersion) -> bool:
        """Whether every chunk of ``version`` has been read (since the last proof failure):
        the read of its last bytes then waits for :meth:`settle`. A reader that jumped to
        the end (a trailer, an index) does not make the verifier fetch the rest."""
        state = self._state(version)
        if not state.proof.verifiable or state.proven:
            return False
        return len(state.served) == chunks.chunk_count(version.size, self.chunk_size)

    async def settle(
        self, version: ObjectVersion, source: ChunkSource, first: int, last: int
    ) -> bool:
        """Waits until ``version`` is proven (hashing, from memory, disk or S3, the chunks
        not hashed yet), for the read of chunks ``first..last`` (its bytes not returned
        yet). True if its chunks were replaced by a refetch (the caller reads again); raises
        :class:`ProofFailed` if it cannot be proven or another read already returned wrong
        bytes. Returns False at once for a version with no proof."""
        state = await self._checked_state(version)
        if not state.proof.verifiable or state.proven:
            return False
        async with state.settling:
            state = await self._checked_state(version)
            if state.proven:
                return False
            got = await self._complete(state, source, fresh=False)
            if got == state.proof.expected:
                await self._passed(state)
                return False
            return await self._refetch_after(state, got, source, range(first, last + 1))

    def take_suspect(self, obj: ObjectId) -> bool:
        """True once after wrong bytes of ``obj`` may have reached the page cache: the next
        open must not keep it."""
        if obj in self._suspect:
            self._suspect.discard(obj)
            return True
        return False

    async def status(self, version: ObjectVersion) -> tuple[proofs.Proof, bool]:
        """The proof that covers ``version`` and whether its bytes passed it yet."""
        state = await self._checked_state(version)
        return state.proof, state.proven

    # -- state -------------------------------------------------------------------------------

    def _new_state(self, version: ObjectVersion) -> _State:
        proof = self.proof(version)
        parts = []
        if proof.verifiable:
            per_part = -(-proof.part_size // self.chunk_size)
            count = chunks.chunk_count(version.size, self.chunk_size)
            parts = [_Part(i, min(i + per_part, count), i) for i in range(0, count, per_part)]
        return _State(version, proof, parts)

    def _state(self, version: ObjectVersion) -> _State:
        state = self._states.get(version.id)
        if state is None or state.version != version:
            state = self._new_state(version)
            self._states[version.id] = state
            while len(self._states) > VERSIONS:
                self._states.popitem(last=False)
        self._states.move_to_end(version.id)
        return state

    async def _checked_state(self, version: ObjectVersion) -> _State:
        """The state, with the checkpoint's proof record looked up once per process."""
        state = self._state(version)
        if state.proof.verifiable and not state.record_checked:
            recorded = await self.cache.proof(version.id)
            if not state.record_checked:
                state.record_checked = True
                state.proven = state.proven or recorded == state.proof.kind
        return state

    def _restart(self, version: ObjectVersion, *, keep_served: bool) -> _State:
        old = self._states.pop(version.id, None)
        state = self._state(version)
        state.record_checked = True
        if keep_served and old is not None:
            state.served = old.served
        return state

    def _part_index(self, state: _State, index: int) -> int:
        return state.proof.part_of(index * self.chunk_size)

    # -- hashing -----------------------------------------------------------------------------

    async def _feed(self, state: _State, index: int, data: ChunkData) -> bool:
        """Hashes chunk ``index`` if it is its part's next; False if it is not (yet)."""
        part = state.parts[self._part_index(state, index)]
        async with part.lock:
            if part.digest is not None or index != part.next:
                return False
            state.fingerprints[index] = await trio.to_thread.run_sync(
                _hash_into, part.hasher, data, limiter=self._hash_limiter
            )
            part.next += 1
            if part.next == part.end:
                part.digest = part.hasher.digest()
            return True

    async def _advance(self, state: _State, part: _Part, source: ChunkSource) -> None:
        """Feeds the part's next chunks while the reader still holds them in memory."""
        while part.digest is None:
            data = source.in_memory(state.version.chunk(self.chunk_size, part.next))
            if data is None or not await self._feed(state, part.next, data):
                return

    async def _complete(self, state: _State, source: ChunkSource, *, fresh: bool) -> str:
        """Hashes every chunk not hashed yet, in order: from memory, the disk cache or S3
        (``fresh``: from S3 only); returns the ETag the bytes give."""
        version = state.version
        for part in state.parts:
            while part.digest is None:
                index = part.next
                key = version.chunk(self.chunk_size, index)
                data = None if fresh else source.in_memory(key)
                if data is None and not fresh:
                    data = await source.pending(key)
                if data is None and not fresh:
                    data = await self.cache.get(key, self._length(version, index))
                if data is None:
                    data = await self._fetch(version, index)
                await self._feed(state, index, data)
        return proofs.combine(state.proof, [p.digest or b"" for p in state.parts])

    async def _fetch(self, version: ObjectVersion, index: int) -> bytes:
        """One GET of chunk ``index``, stored in the disk cache before it is hashed."""
        start, end = chunks.chunk_bounds(index, version.size, self.chunk_size)
        body = await self.store.get_range(version.key, start, end, version.etag, version.size)
        if len(body) != end - start:
            raise BadResponse(f"store returned {len(body)} bytes for {end - start}")
        self.stats.gets += 1
        self.stats.bytes_fetched += len(body)
        if await self.cache.put(version.chunk(self.chunk_size, index), body):
            self.stats.chunks_stored += 1
        else:
            self.stats.store_failures += 1
        return body

    def _length(self, version: ObjectVersion, index: int) -> int:
        return chunks.chunk_length(index, version.size, self.chunk_size)

    # -- outcomes ----------------------------------------------------------------------------

    async def _forget_stale_record(self, state: _State) -> None:
        if state.record_stale:
            state.record_stale = False
            await self.cache.forget_proof(state.version.id)

    async def _passed(self, state: _State) -> None:
        await self._forget_stale_record(state)
        state.proven = True
        self.stats.proofs_passed += 1
        await self.cache.record_proof(state.version.id, state.proof.kind)
        log.debug("proof passed: %s (%s)", state.version.id.uri, state.proof.describe())

    async def _confirm(self, state: _State) -> proofs.Proof:
        """The proof, unless a HEAD of part 1 shows its ETag cannot be one (SSE-KMS, SSE-C,
        another part layout): asked only after a mismatch, so a proof that holds costs no
        request, and a disproved one costs a HEAD instead of a refetch and a false EIO."""
        version = state.version
        try:
            facts = await self.store.facts(version.key, version.etag, version.version_id)
        except Unreachable:
            raise  # offline: EIO for now, the cached chunks kept until S3 can say
        except RangefsError as exc:
            log.info("%s: could not HEAD part 1 to confirm the proof: %s", version.id.uri, exc)
            return state.proof
        return proofs.confirm(state.proof, facts)

    async def _drop(self, state: _State, source: ChunkSource) -> None:
        version = state.version
        await source.writes_done(version)
        source.forget_version(version)
        count = chunks.chunk_count(version.size, self.chunk_size)
        await self.cache.discard(version.id, self.chunk_size, count)

    async def _refetch_after(
        self, state: _State, got: str, source: ChunkSource, current: range
    ) -> bool:
        version = state.version
        uri = version.id.uri
        what = f"{uri} bytes=0-{version.size - 1}"
        confirmed = await self._confirm(state)
        if not confirmed.verifiable:
            log.info("%s: %s", uri, confirmed.describe())
            self._disproved[version.id] = confirmed
            while len(self._disproved) > VERSIONS:
                self._disproved.popitem(last=False)
            self._restart(version, keep_served=True)
            return False
        self.stats.proofs_failed += 1
        log.warning(
            "proof failed: %s %s expected %s got %s; dropping and refetching its chunks",
            what,
            state.proof.kind,
            state.proof.expected,
            got,
        )
        first = dict(state.fingerprints)
        await self._drop(state, source)
        fresh = self._restart(version, keep_served=True)
        fresh.refetching = True
        try:
            again = await self._complete(fresh, source, fresh=True)
        except BaseException:
            await self._drop(fresh, source)
            self._restart(version, keep_served=False)
            raise
        fresh.refetching = False
        if again != state.proof.expected:
            self.stats.proofs_failed += 1
            await self._drop(fresh, source)
            self._restart(version, keep_served=False)
            self._suspect.add(version.id)
            log.error(
                "proof failed twice, read fails (EIO), nothing kept: %s %s expected %s got %s",
                what,
                state.proof.kind,
                state.proof.expected,
                again,
            )
            raise ProofFailed(f"{what}: {state.proof.kind} expected {state.proof.expected} "
                              f"got {again}")  # fmt: skip
        changed = {i for i, fp in first.items() if fresh.fingerprints.get(i) != fp} or set(first)
        wrong_served = sorted(i for i in changed if fresh.served[i] > (1 if i in current else 0))
        await self._passed(fresh)
        if wrong_served:
            self._suspect.add(version.id)
            log.error(
                "proof passed after a refetch, but chunks %s of %s had been returned wrong "
                "(expected %s got %s): read fails (EIO); reading again gives the proven bytes",
                wrong_served,
                uri,
                state.proof.expected,
                got,
            )
            raise ProofFailed(f"{uri}: bytes already returned failed {state.proof.kind}")
        log.info("proof passed after a refetch: %s", uri)
        return True
