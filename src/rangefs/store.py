"""The object-store interface the rest of rangefs sees, and its async facade.

:class:`ObjectStore` is what :mod:`rangefs.s3` implements with boto3 (blocking calls).
:class:`AsyncStore` is the only way async code reaches it: every call runs in a worker
thread under an explicit :class:`trio.CapacityLimiter`, so the trio loop never blocks.
"""

from dataclasses import dataclass
from typing import Protocol

import trio


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One object as a listing or HEAD reports it."""

    key: str
    size: int
    etag: str
    mtime: float


@dataclass(frozen=True, slots=True)
class Listing:
    """One directory level: objects directly under a prefix and the sub-prefixes."""

    objects: list[ObjectInfo]
    prefixes: list[str]
    marker: ObjectInfo | None = None


@dataclass(frozen=True, slots=True)
class ObjectVersion:
    """What a chunk belongs to: an object is identified by (bucket, key, ETag)."""

    bucket: str
    key: str
    etag: str
    size: int


class ObjectStore(Protocol):
    bucket: str

    def check_access(self, prefix: str) -> None: ...

    def list_dir(self, prefix: str) -> Listing: ...

    def list_all(self, prefix: str) -> list[ObjectInfo]: ...

    def head(self, key: str) -> ObjectInfo: ...

    def get_range(self, key: str, start: int, end: int, etag: str, size: int) -> bytes: ...


class AsyncStore:
    """Runs the blocking store calls in threads; ``fetch_limiter`` bounds GETs in flight."""

    def __init__(
        self,
        store: ObjectStore,
        meta_limiter: trio.CapacityLimiter,
        fetch_limiter: trio.CapacityLimiter,
    ) -> None:
        self.store = store
        self.bucket = store.bucket
        self._meta = meta_limiter
        self._fetch = fetch_limiter

    async def list_dir(self, prefix: str) -> Listing:
        return await trio.to_thread.run_sync(self.store.list_dir, prefix, limiter=self._meta)

    async def get_range(self, key: str, start: int, end: int, etag: str, size: int) -> bytes:
        return await trio.to_thread.run_sync(
            self.store.get_range, key, start, end, etag, size, limiter=self._fetch
        )
