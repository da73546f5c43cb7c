"""Checks the bytes of each object version against S3's proof (a checksum, its ETag).

The reader hands every whole chunk it obtains to :meth:`Verifier.arrived` (after its
waiters got it: a streaming reader is never held back) and calls :meth:`Verifier.settle`
before it returns the object's last bytes to a reader that read the whole file; only that
read waits. The integration surface with the reader is these calls plus :meth:`fetched`
(a chunk came from S3), :meth:`reading` and :meth:`read_whole` (which chunks were read), and
:class:`ChunkSource` (what the verifier needs back: chunks still in memory, and forgetting a
version's chunks).

Which proof, and what learning it costs (docs/SEMANTICS.md, "Proof of the bytes"):

* the ETag, when it proves the bytes and the object is small (fewer than
  ``checksum_chunks`` chunks): no request;
* otherwise an additional checksum, learned by one HEAD with ``ChecksumMode`` (plus one
  GetObjectAttributes per 1000 parts for a composite one, and a HEAD of part 1 for a
  composite one that says neither its part count nor its parts) the first time the process
  checks the version, and not at all once the checkpoint records the version proven. Until
  it is learned the proof is *pending*: chunks arriving meanwhile wait for the HEAD. A
  full-object CRC is cheaper to check than the ETag (order-free, several GB/s), which is why
  large objects ask; an object with no checksum falls back to its ETag;
* after an ETag mismatch whose HEAD of part 1 shows the ETag cannot be an MD5 (SSE-KMS,
  SSE-C), the checksum is learned then, and the bytes are checked against it;
* a checksum whose type the server does not say (moto; SeaweedFS for single-part objects)
  is taken as full-object; after a mismatch, a HEAD of part 1 tells whether the object has
  several parts, and then the checksum is composite and the bytes are checked against that.

What it guarantees:

* a version is "proven" when the digests of its parts (:mod:`rangefs.cache.proofs`), hashed from
  the bytes as they arrived, give its checksum or ETag; the fact is recorded in the chunk
  cache (the checkpoint) with the proof and the object's size, so a remount does not hash
  again. A chunk of a proven version that comes from S3 again (evicted, then refetched)
  un-proves it until the next whole read;
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

import logging
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import trio
import xxhash

from rangefs import chunks
from rangefs.cache import proofs
from rangefs.cache.async_cache import AsyncChunkCache
from rangefs.errors import BadResponse, ProofFailed, RangefsError, Unreachable
from rangefs.keys import ChunkKey, ObjectId
from rangefs.remote.store import AsyncStore, ObjectFacts, ObjectVersion
from rangefs.stats import Stats

log = logging.getLogger(__name__)

ChunkData = bytes | memoryview
HASH_THREADS = 2  # MD5 runs at ~600 MB/s per core: one per core of the machines we target
VERSIONS = 1024  # per-version states kept; a state evicted early only costs a re-hash
CHECKSUM_CHUNKS = 16  # from this many chunks on, a HEAD for the checksum adds <= 1/16 requests


class ChunkSource(Protocol):
    """What the verifier asks of the reader."""

    async def settled(self, key: ChunkKey) -> None:
        """Waits until no GET of the chunk is on its way (its bytes are then in the store,
        or will not be)."""
        ...

    async def forget_version(self, version: ObjectVersion) -> None:
        """Drops what the reader holds of the version (chunks being filled)."""
        ...


def _hash_into(hasher: proofs.PartHash, data: ChunkData) -> int:
    """Feeds ``data`` to a part's hash (MD5 or SHA of several chunks); returns its xxh3
    fingerprint (to tell later which chunks a refetch changed)."""
    hasher.update(data)
    return int(xxhash.xxh3_64_intdigest(data))


@dataclass
class _Part:
    first: int  # first chunk index of the part
    end: int  # one past its last chunk
    next: int
    hasher: proofs.PartHash
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
    digests: dict[int, bytes] = field(default_factory=dict)  # own digests hashed on arrival
    learn_asked: bool = False
    served: Counter[int] = field(default_factory=Counter)  # reads started, per chunk
    settling: trio.Lock = field(default_factory=trio.Lock)
    learning: trio.Lock = field(default_factory=trio.Lock)
    recording: trio.Lock = field(default_factory=trio.Lock)  # the record: deleted, written


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
        checksum_chunks: int = CHECKSUM_CHUNKS,
        enabled: bool = True,
    ) -> None:
        """``customer_key``: objects are read with an SSE-C key (``--sse-c-key-file``), so
        their ETags prove nothing. ``checksum_chunks``: objects of at least this many chunks
        ask S3 for their checksum even when the ETag would prove them (0: never).
        ``enabled`` False (``--proofs off``) checks nothing and says so."""
        self.store = store
        self.cache = cache
        self.chunk_size = chunk_size
        self.stats = stats or Stats()
        self._part_size = part_size or (lambda version: None)
        self._hash_limiter = trio.CapacityLimiter(HASH_THREADS)
        # Chunks read back from the store to be hashed, held in RAM at once (each up to
        # --chunk-size): arrivals of many chunks must not each hold one.
        self._chunks_held = trio.Semaphore(HASH_THREADS)
        self._states: OrderedDict[ObjectId, _State] = OrderedDict()
        self._customer_key = customer_key
        self._checksum_chunks = checksum_chunks
        self._enabled = enabled
        self._learned: OrderedDict[ObjectId, proofs.Proof] = OrderedDict()  # by a HEAD
        self._suspect: set[ObjectId] = set()

    # -- what the reader calls ---------------------------------------------------------------

    def proof(self, version: ObjectVersion) -> proofs.Proof:
        """The proof known for ``version`` now; ``pending`` while S3 must be asked."""
        known = self._learned.get(version.id)
        if known is not None:
            return known
        if not self._enabled:
            return proofs.Proof(proofs.NONE, reason=proofs.TURNED_OFF)
        etag = self._etag_proof(version)
        if not etag.verifiable and version.size > 0:
            return proofs.Proof(proofs.PENDING, reason=etag.reason)
        count = chunks.chunk_count(version.size, self.chunk_size)
        if self._checksum_chunks and count >= self._checksum_chunks:
            return proofs.Proof(proofs.PENDING)
        return etag

    def _etag_proof(self, version: ObjectVersion) -> proofs.Proof:
        if self._customer_key:
            return proofs.Proof(proofs.NONE, reason=proofs.CUSTOMER_KEY)
        return proofs.proof_for(
            version.etag, version.size, self.chunk_size, self._part_size(version)
        )

    def _remember(self, version: ObjectVersion, proof: proofs.Proof) -> None:
        self._learned[version.id] = proof
        while len(self._learned) > VERSIONS:
            self._learned.popitem(last=False)

    def fetched(self, version: ObjectVersion, index: int, start: int) -> proofs.StretchHash | None:
        """A GET of chunk ``index`` from chunk offset ``start`` starts (before any reader gets
        its bytes): a proof that did not hash these very bytes does not cover them any more.
        Returns the hash the GET feeds as it writes (so the chunk needs no read-back to be
        hashed), or None if the proof needs none or is not known yet."""
        state = self._state(version)
        if not state.proof.verifiable:
            return None
        if state.proven:
            state = self._restart(version, keep_served=True)
            state.record_stale = True
        elif not state.record_checked:
            state.record_checked = True  # whatever a record says, it is not about these bytes
            state.record_stale = True
        state.digests.pop(index, None)
        if state.refetching or not self._hashed_alone(state, index):
            return None
        return proofs.StretchHash(state.proof.algorithm, start)

    def wants_proof(self, version: ObjectVersion) -> bool:
        """True once per version whose proof S3 must be asked for (a HEAD): the reader then
        runs :meth:`learn` beside the first GET, so the chunks that follow are hashed as
        they arrive rather than read back."""
        state = self._state(version)
        if not state.proof.pending or state.learn_asked:
            return False
        state.learn_asked = True
        return True

    async def learn(self, version: ObjectVersion) -> None:
        try:
            await self._checked_state(version)
        except Exception as exc:
            log.info("%s: could not learn its proof yet: %s", version.id.uri, exc)

    async def known(self, version: ObjectVersion) -> None:
        """Waits while the version's proof is being learned (read-ahead waits, so the chunks
        it fetches are hashed as they arrive; a demand read never does)."""
        if self._state(version).proof.pending:
            await self.learn(version)

    def hashed(
        self, version: ObjectVersion, index: int, stretches: Sequence[proofs.StretchHash]
    ) -> proofs.Proof | None:
        """Chunk ``index`` is complete: ``stretches`` are what its GETs hashed as they wrote
        it. Told before the chunk moves into the store, so whoever hashes it next never reads
        it back; a chunk they do not cover (blocks left by an earlier fill) will be.

        If that digest completes the version's proof and the proof holds (a small file: its
        only chunk), the version passes here, at once, and the proof is returned: the caller
        records it with the chunk, in one transaction (:meth:`arrived` then has nothing to
        do). None otherwise."""
        state = self._states.get(version.id)
        if state is None or state.version != version or not state.proof.verifiable:
            return None
        if state.proven or state.refetching or not self._hashed_alone(state, index):
            return None
        length = self._length(version, index)
        digest = proofs.stretches_digest(state.proof.algorithm, stretches, length)
        if digest is None:
            return None
        state.digests[index] = digest
        return self._passes_now(state, index)

    def _passes_now(self, state: _State, index: int) -> proofs.Proof | None:
        """Feeds chunk ``index``'s digest to its part if it is the part's next and nobody
        hashes that part now (what :meth:`_feed` would do, without a wait), then passes the
        version if every part is hashed and they give its proof."""
        part = state.parts[self._part_index(state, index)]
        if part.next != index or part.digest is not None or part.lock.locked():
            return None
        own = state.digests.pop(index)
        state.fingerprints[index] = int.from_bytes(own[:8], "big")
        if isinstance(part.hasher, proofs.CrcHash):
            part.hasher.extend(own, self._length(state.version, index))
        part.next += 1
        if part.next == part.end:
            crc = isinstance(part.hasher, proofs.CrcHash)
            part.digest = part.hasher.digest() if crc else own
        if not state.record_checked or state.settling.locked() or state.recording.locked():
            return None  # the record is looked up first; a settle passes it itself
        if any(p.digest is None for p in state.parts):
            return None
        digests = [p.digest or b"" for p in state.parts]
        if proofs.combine(state.proof, digests) != state.proof.expected:
            return None  # the last read's settle refetches and says so
        self._mark_passed(state)  # the record written with the chunk replaces any older one
        return state.proof

    async def arrived(self, version: ObjectVersion, index: int, source: ChunkSource) -> None:
        """Chunk ``index`` is complete in the store: hashed now if it is its part's next (from
        its digest, else read back from the store, one chunk at a time), so the last read
        rarely waits; once all are hashed and match, the version passes here, so that read
        does not wait for the proof's record either (files fetched ahead of a walker)."""
        state = await self._checked_state(version)
        if not state.proof.verifiable or state.refetching or state.proven:
            return
        await self._forget_stale_record(state)
        await self._advance(state, state.parts[self._part_index(state, index)])
        if not state.parts or any(p.digest is None for p in state.parts):
            return
        async with state.settling:
            digests = [p.digest or b"" for p in state.parts]
            if state.proven or state.refetching or self._states.get(version.id) is not state:
                return
            if proofs.combine(state.proof, digests) == state.proof.expected:
                await self._passed(state)

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
        for index in range(first, last + 1):
            # Outside the lock: a GET of these chunks still ending (the reader woke as its
            # bytes landed) then passes the version itself, with the chunk's transaction.
            await source.settled(version.chunk(self.chunk_size, index))
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
        return _State(version, proof, self._parts(version, proof))

    def _parts(self, version: ObjectVersion, proof: proofs.Proof) -> list[_Part]:
        if not proof.verifiable or proof.pending:
            return []
        per_part = -(-proof.part_size // self.chunk_size)
        count = chunks.chunk_count(version.size, self.chunk_size)
        return [
            _Part(i, min(i + per_part, count), i, proofs.part_hash(proof))
            for i in range(0, count, per_part)
        ]

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
        """The state, with the checkpoint's proof record looked up once per process, and a
        pending proof learned (one HEAD, shared by whoever asks meanwhile)."""
        state = self._state(version)
        if state.proof.verifiable and not state.record_checked:
            recorded = await self.cache.proof(version.id)
            if not state.record_checked:
                state.record_checked = True
                self._adopt_record(state, recorded)
        if state.proof.pending:
            async with state.learning:
                if state.proof.pending:
                    await self._learn(state)
        return state

    def _adopt_record(self, state: _State, recorded: proofs.Proof | None) -> None:
        """Marks the state proven if the checkpoint says its bytes passed a proof: a full
        record (with the proof itself) becomes the version's proof, so a remount asks S3 for
        nothing; a record of an older rangefs (the kind only) counts if it names the proof
        the ETag gives."""
        if recorded is None or recorded.size not in (0, state.version.size):
            return
        version = state.version
        if recorded.expected:
            proof = proofs.for_chunks(recorded, self.chunk_size)
            if not proofs.fits(proof, self.chunk_size):
                return
        elif state.proof.pending and recorded.kind == self._etag_proof(version).kind:
            proof = self._etag_proof(version)
        else:
            state.proven = state.proven or recorded.kind == state.proof.kind
            return
        if proof != state.proof:
            self._remember(version, proof)
            state.proof, state.parts = proof, self._parts(version, proof)
        state.proven = True

    async def _learn(self, state: _State) -> None:
        """Asks S3 for the version's checksum (a HEAD with ``ChecksumMode``) and makes it
        the proof; the ETag's when there is none (and S3 does not show the ETag useless)."""
        version = state.version
        try:
            facts = await self.store.checksums(version.key, version.etag, version.version_id)
        except RangefsError as exc:
            log.info("%s: could not HEAD for its checksum: %s", version.id.uri, exc)
            facts = None
        proof = self._checksum_proof(version, facts)
        self._remember(version, proof)
        state.proof, state.parts = proof, self._parts(version, proof)

    def _checksum_proof(self, version: ObjectVersion, facts: ObjectFacts | None) -> proofs.Proof:
        etag = self._etag_proof(version)
        checksum = facts.checksum if facts is not None else None
        if checksum is not None:
            reason = "" if etag.verifiable else etag.reason
            proof = proofs.checksum_proof(checksum, version.size, self.chunk_size, reason)
            if proof.verifiable or not etag.verifiable:
                return proof
        if etag.verifiable:
            return proofs.confirm(etag, facts, self.chunk_size) if facts is not None else etag
        why = "S3 has no additional checksum for it" if facts else "its checksum HEAD failed"
        return proofs.Proof(proofs.NONE, reason=f"{etag.reason}, and {why}")

    def _restart(self, version: ObjectVersion, *, keep_served: bool) -> _State:
        old = self._states.pop(version.id, None)
        state = self._state(version)
        state.record_checked = True
        if keep_served and old is not None:
            state.served = old.served
        return state

    def _part_index(self, state: _State, index: int) -> int:
        return state.proof.part_of(index * self.chunk_size)

    def _hashed_alone(self, state: _State, index: int) -> bool:
        """Whether chunk ``index`` is hashed on its own (its digest then feeds its part): a
        CRC combines, and a part of one chunk is that chunk; MD5 and SHA parts of several
        chunks are hashed in order, from the bytes."""
        if not state.parts:
            return False
        part = state.parts[self._part_index(state, index)]
        return state.proof.algorithm in proofs.CRCS or part.end - part.first == 1

    # -- hashing -----------------------------------------------------------------------------

    async def _feed(self, state: _State, part: _Part, data: ChunkData | None = None) -> None:
        """Hashes the part's next chunk, from its digest hashed on arrival or from ``data``
        (one of them is at hand); the caller holds ``part.lock``.

        A chunk hashed alone is fingerprinted by its own digest, any other by xxh3, on the
        first pass and on a refetch alike (the fingerprints tell which chunks a refetch
        changed)."""
        index = part.next
        own = state.digests.pop(index, None)
        if own is None:
            assert data is not None, "neither the chunk's digest nor its bytes"
            if self._hashed_alone(state, index):
                own = await trio.to_thread.run_sync(
                    proofs.own_digest, state.proof.algorithm, data, limiter=self._hash_limiter
                )
        if own is not None:
            state.fingerprints[index] = int.from_bytes(own[:8], "big")
            if isinstance(part.hasher, proofs.CrcHash):
                part.hasher.extend(own, self._length(state.version, index))
        else:
            assert data is not None
            state.fingerprints[index] = await trio.to_thread.run_sync(
                _hash_into, part.hasher, data, limiter=self._hash_limiter
            )
        part.next += 1
        if part.next == part.end:
            crc = isinstance(part.hasher, proofs.CrcHash)
            part.digest = own if own is not None and not crc else part.hasher.digest()

    async def _advance(self, state: _State, part: _Part) -> None:
        """Feeds the part's next chunks while their digests are at hand or the store holds
        them (read back one at a time: whoever holds the part's lock reads its next chunk)."""
        while True:
            async with part.lock, self._chunks_held:
                if part.digest is not None or state.refetching:
                    return
                data: ChunkData | None = None
                if part.next not in state.digests:
                    data = await self._read_back(state.version, part.next)
                    if data is None:
                        return
                    # Not counted if its digest came meanwhile: the bytes are then not used.
                    self.stats.proof_read_backs += part.next not in state.digests
                await self._feed(state, part, data)
                del data

    async def _complete(self, state: _State, source: ChunkSource, *, fresh: bool) -> str:
        """Hashes every chunk not hashed yet, in order: from their digests, the store or S3
        (``fresh``: from S3 only); returns the ETag the bytes give."""
        version = state.version
        for part in state.parts:
            while part.digest is None:
                index = part.next
                key = version.chunk(self.chunk_size, index)
                if not fresh and index not in state.digests:
                    await source.settled(key)
                async with part.lock:
                    if part.digest is not None or part.next != index:
                        continue
                    if not fresh and index in state.digests:
                        await self._feed(state, part)
                        continue
                    async with self._chunks_held:
                        data = None if fresh else await self._read_back(version, index)
                        self.stats.proof_read_backs += data is not None
                        if data is None:
                            data = await self._fetch(version, index)
                        await self._feed(state, part, data)
                        del data
        return proofs.combine(state.proof, [p.digest or b"" for p in state.parts])

    async def _read_back(self, version: ObjectVersion, index: int) -> ChunkData | None:
        """Chunk ``index``'s bytes from the store, to hash (None if it does not hold them)."""
        key = version.chunk(self.chunk_size, index)
        return await self.cache.get(key, self._length(version, index))

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
        """Deletes a record about bytes no longer cached; under ``state.recording``, so a
        record of the new bytes written meanwhile (by another task) is never the one deleted."""
        async with state.recording:
            if state.record_stale and not state.proven:
                state.record_stale = False
                await self.cache.forget_proof(state.version.id)

    async def _passed(self, state: _State) -> None:
        self._mark_passed(state)  # the record written now replaces any older one
        async with state.recording:
            await self.cache.record_proof(state.version.id, state.proof)

    def _mark_passed(self, state: _State) -> None:
        state.record_stale = False
        state.proven = True
        self.stats.proofs_passed += 1
        log.debug("proof passed: %s (%s)", state.version.id.uri, state.proof.describe())

    async def _confirm(self, state: _State) -> tuple[proofs.Proof, ObjectFacts | None]:
        """The proof, unless a HEAD of part 1 shows its ETag cannot be one (SSE-KMS, SSE-C,
        another part layout): asked only after a mismatch, so a proof that holds costs no
        request, and a disproved one costs a HEAD instead of a refetch and a false EIO. Also
        what that HEAD said (None if it was not made or failed)."""
        version, proof = state.version, state.proof
        if proof.algorithm != "md5" and not proof.kind.endswith(proofs.COMPOSITE) and proof.said:
            return proof, None  # a full-object checksum, as S3 said: it assumes no layout
        try:
            facts = await self.store.facts(version.key, version.etag, version.version_id)
        except Unreachable:
            raise  # offline: EIO for now, the cached chunks kept until S3 can say
        except RangefsError as exc:
            log.info("%s: could not HEAD part 1 to confirm the proof: %s", version.id.uri, exc)
            return proof, None
        return proofs.confirm(proof, facts, self.chunk_size), facts

    async def _checksum_instead(
        self, state: _State, disproved: proofs.Proof, part1: ObjectFacts | None
    ) -> proofs.Proof:
        """After the ETag was shown to be no MD5: the checksum S3 has, else ``disproved``;
        ``part1`` (the HEAD of part 1) tells a composite checksum's layout if S3 does not."""
        version = state.version
        try:
            facts = await self.store.checksums(version.key, version.etag, version.version_id)
        except RangefsError as exc:
            log.info("%s: could not HEAD for its checksum: %s", version.id.uri, exc)
            return disproved
        if facts.checksum is None:
            return disproved
        return proofs.checksum_proof(
            facts.checksum,
            version.size,
            self.chunk_size,
            disproved.reason,
            parts=part1.parts if part1 else None,
            part_size=part1.first_part if part1 else None,
        )

    def _which_parts(self, state: _State) -> str:
        """`` (parts at bytes A-B, ...)`` whose checksum S3 listed and the bytes missed."""
        proof = state.proof
        wrong = proofs.wrong_parts(proof, [p.digest or b"" for p in state.parts])
        spans = [
            f"{i * proof.part_size}-{min(proof.size, (i + 1) * proof.part_size) - 1}" for i in wrong
        ]
        return f" (parts at bytes {', '.join(spans)})" if spans else ""

    async def _drop(self, state: _State, source: ChunkSource) -> None:
        version = state.version
        await source.forget_version(version)
        count = chunks.chunk_count(version.size, self.chunk_size)
        await self.cache.discard(version.id, self.chunk_size, count)

    async def _refetch_after(
        self, state: _State, got: str, source: ChunkSource, current: range
    ) -> bool:
        version = state.version
        uri = version.id.uri
        what = f"{uri} bytes=0-{version.size - 1}"
        confirmed, part1 = await self._confirm(state)
        learned = version.id in self._learned
        if not confirmed.verifiable and state.proof.algorithm == "md5" and not learned:
            confirmed = await self._checksum_instead(state, confirmed, part1)
        if not confirmed.verifiable:
            log.info("%s: %s", uri, confirmed.describe())
            self._remember(version, confirmed)
            self._restart(version, keep_served=True)
            return False
        if confirmed is not state.proof:  # a checksum instead of an ETag shown useless
            self._remember(version, confirmed)
            state = self._restart(version, keep_served=True)
            got = await self._complete(state, source, fresh=False)
            if got == state.proof.expected:
                await self._passed(state)
                return False
        self.stats.proofs_failed += 1
        log.warning(
            "proof failed: %s %s expected %s got %s%s; dropping and refetching its chunks",
            what,
            state.proof.kind,
            state.proof.expected,
            got,
            self._which_parts(state),
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
