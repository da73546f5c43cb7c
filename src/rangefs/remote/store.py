"""The object-store interface the rest of rangefs sees, and its async facade.

:class:`ObjectStore` is what :mod:`rangefs.remote.s3` implements with boto3 (blocking calls).
:class:`AsyncStore` is the only way async code reaches it: every call runs in a worker
thread under an explicit :class:`trio.CapacityLimiter`, so the trio loop never blocks.
"""

import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import trio

from rangefs.keys import ChunkKey, ObjectId
from rangefs.remote.reachability import Reachability
from rangefs.remote.retry import PROBE, RetryPolicy


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One object as a listing or HEAD reports it."""

    key: str
    size: int
    etag: str
    mtime: float
    version_id: str = ""  # set by a versioned listing (--version-at) only


@dataclass(frozen=True, slots=True)
class Checksum:
    """An additional checksum S3 keeps for an object (HEAD with ``ChecksumMode=ENABLED``):
    ``algorithm`` (``crc32``, ``crc32c``, ``crc64nvme``, ``sha1``, ``sha256``), ``value`` as
    S3 sends it (base64, ``-N`` after it when composite), ``type`` (``FULL_OBJECT``,
    ``COMPOSITE``, '' if not said), and, from GetObjectAttributes, the parts' sizes and
    checksums (empty when S3 does not list them)."""

    algorithm: str
    value: str
    type: str = ""
    part_sizes: tuple[int, ...] = ()
    part_values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ObjectFacts:
    """What a HEAD of an object's first part says that its ETag cannot: how it is encrypted
    (``aws:kms``, ``AES256``...; '' if not said), whether with a customer key (SSE-C), and the
    length of part 1 and the number of parts (None when S3 does not tell); a HEAD with
    ``ChecksumMode`` also tells the additional checksum, if the object has one."""

    encryption: str = ""
    customer_key: bool = False
    first_part: int | None = None
    parts: int | None = None
    checksum: Checksum | None = None


@dataclass(frozen=True, slots=True)
class Listing:
    """One directory level: objects directly under a prefix and the sub-prefixes."""

    objects: list[ObjectInfo]
    prefixes: list[str]
    marker: ObjectInfo | None = None


@dataclass(frozen=True, slots=True)
class ObjectVersion:
    """What a reader reads: an object identified by (bucket, key, ETag), and its size; on a
    ``--version-at`` mount also by its S3 versionId, which then names it in the cache."""

    bucket: str
    key: str
    etag: str
    size: int
    version_id: str = ""

    @property
    def id(self) -> ObjectId:
        if self.version_id:
            return ObjectId(self.bucket, self.key, "", self.version_id)
        return ObjectId(self.bucket, self.key, self.etag)

    def chunk(self, chunk_size: int, index: int) -> ChunkKey:
        return ChunkKey(self.id, chunk_size, index)


Sink = Callable[[int, memoryview], None]


@dataclass(frozen=True, slots=True)
class RangeGet:
    """One streamed GET: bytes ``[start, end)`` of ``key``, an object of ``size`` bytes, at
    ``etag`` (If-Match) and of version ``version_id`` when one is given; delivered in pieces
    whose length is a multiple of ``align`` except the one ending at ``end``."""

    key: str
    start: int
    end: int
    etag: str
    size: int
    version_id: str = ""
    align: int = 1


"""Receives a GET's body in pieces, in order: (object offset, bytes), in the GET's thread."""


class ObjectStore(Protocol):
    """Blocking access to one bucket. Failures are domain errors (:mod:`rangefs.errors`);
    transient ones have already been retried under the store's :class:`RetryPolicy`."""

    bucket: str

    def with_retries(self, policy: RetryPolicy) -> "ObjectStore":
        """The same store under another retry policy (the mount's quick first check)."""
        ...

    def check_access(self, prefix: str) -> bool:
        """Raises unless the bucket can be listed; True if ``prefix`` holds a key."""
        ...

    def list_dir_pages(self, prefix: str) -> Iterator[Listing]:
        """One directory level under ``prefix`` (delimiter ``/``), page by page."""
        ...

    def list_all(self, prefix: str) -> list[ObjectInfo]: ...

    def head(self, key: str) -> ObjectInfo: ...

    def facts(self, key: str, etag: str, version_id: str = "") -> ObjectFacts:
        """A HEAD of part 1 of version ``etag``: what its ETag cannot say (see ObjectFacts)."""
        ...

    def checksums(self, key: str, etag: str, version_id: str = "") -> ObjectFacts:
        """A HEAD with ``ChecksumMode=ENABLED`` of version ``etag``: its encryption and its
        additional checksum, with the parts' sizes and checksums when it is composite."""
        ...

    def get_range(
        self, key: str, start: int, end: int, etag: str, size: int, version_id: str = ""
    ) -> bytes:
        """Bytes ``[start, end)`` of ``key`` at ``etag`` (If-Match), and of the version
        ``version_id`` when one is given."""
        ...

    def get_range_into(self, get: RangeGet, sink: Sink) -> None:
        """Streams ``get``'s bytes (checked as :meth:`get_range`'s) to ``sink`` in pieces
        whose length is a multiple of its ``align`` except the one ending at its ``end``. An attempt
        cut short delivers its whole ``align`` units and the retry asks only for the rest,
        so ``sink`` sees each byte once."""
        ...


class AsyncStore:
    """Runs the blocking store calls in threads; ``fetch_limiter`` bounds GETs in flight.

    Every call goes through ``reachability``: refused at once while the mount is offline, and
    its outcome (an answer, or none) keeps the online/offline state. Only :meth:`probe` is
    let through while offline.
    """

    def __init__(
        self,
        store: ObjectStore,
        meta_limiter: trio.CapacityLimiter,
        fetch_limiter: trio.CapacityLimiter,
        reachability: Reachability | None = None,
    ) -> None:
        self.store = store
        self.bucket = store.bucket
        self._meta = meta_limiter
        self._fetch = fetch_limiter
        self.reachability = reachability or Reachability()
        self._probe_store = store.with_retries(PROBE)

    async def list_dir_pages(
        self, prefix: str, on_page: Callable[[Listing], Awaitable[None]]
    ) -> None:
        """Lists one directory level, awaiting ``on_page`` for each page before the next is
        asked for: memory holds one page, whatever the size of the directory.

        The listing thread stops at the next page once the caller is cancelled (the thread
        itself cannot be interrupted mid-request)."""
        stop = threading.Event()

        def pump() -> None:
            for page in self.store.list_dir_pages(prefix):
                if stop.is_set():
                    return
                trio.from_thread.run(on_page, page)

        try:
            with self.reachability.guard(f"list s3://{self.bucket}/{prefix}"):
                await trio.to_thread.run_sync(pump, limiter=self._meta, cancellable=True)
        finally:
            stop.set()

    async def facts(self, key: str, etag: str, version_id: str = "") -> ObjectFacts:
        with self.reachability.guard(f"head s3://{self.bucket}/{key}"):
            return await trio.to_thread.run_sync(
                self.store.facts, key, etag, version_id, limiter=self._meta
            )

    async def checksums(self, key: str, etag: str, version_id: str = "") -> ObjectFacts:
        with self.reachability.guard(f"head s3://{self.bucket}/{key}"):
            return await trio.to_thread.run_sync(
                self.store.checksums, key, etag, version_id, limiter=self._meta
            )

    async def get_range(
        self, key: str, start: int, end: int, etag: str, size: int, version_id: str = ""
    ) -> bytes:
        with self.reachability.guard(f"GET s3://{self.bucket}/{key}"):
            return await trio.to_thread.run_sync(
                self.store.get_range, key, start, end, etag, size, version_id, limiter=self._fetch
            )

    async def probe(self, prefix: str) -> bool:
        """One listing of at most one key under ``prefix``, one attempt, even while offline:
        the question :class:`Reachability` asks to learn that S3 answers again."""
        return await trio.to_thread.run_sync(
            self._probe_store.check_access, prefix, limiter=self._meta
        )

    async def get_range_into(self, get: RangeGet, sink: Sink) -> None:
        with self.reachability.guard(f"GET s3://{self.bucket}/{get.key}"):
            await trio.to_thread.run_sync(self.store.get_range_into, get, sink, limiter=self._fetch)
