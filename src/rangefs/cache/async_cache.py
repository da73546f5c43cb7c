"""The chunk cache as async code sees it: every call in a worker thread under one limiter.

:class:`~rangefs.cache.chunk_cache.ChunkCache` blocks (SQLite, file I/O); the filesystem and the
reader reach it only through this facade, so no caller passes limiters around and the
number of threads touching the disk at once is set in one place. The one exception is a
read that cannot block, from a small chunk kept in RAM or the kernel's page cache
(:meth:`~rangefs.cache.chunk_cache.ChunkCache.read_range_cached`): done on the trio thread.
"""

import functools

import trio

from rangefs.cache.chunk_cache import ChunkCache, Pin, PinSummary
from rangefs.cache.chunk_files import ChunkFile
from rangefs.cache.proofs import Proof
from rangefs.keys import ChunkKey, ObjectId


class AsyncChunkCache:
    def __init__(self, cache: ChunkCache, limiter: trio.CapacityLimiter) -> None:
        self.cache = cache
        self._limiter = limiter

    async def get(self, key: ChunkKey, length: int) -> memoryview | None:
        data = self.cache.recent(key, 0, length)
        if data is not None and len(data) == length:
            return memoryview(data)
        return await trio.to_thread.run_sync(self.cache.get, key, length, limiter=self._limiter)

    async def read_range(
        self, key: ChunkKey, length: int, start: int, end: int
    ) -> bytes | memoryview | None:
        """Without a thread when that cannot block (a small chunk stored lately, from RAM;
        else the page cache), else in a worker."""
        piece: bytes | memoryview | None = self.cache.recent(key, start, end)
        if piece is None:
            piece = self.cache.read_range_cached(key, length, start, end)
        if piece is not None:
            return piece
        return await trio.to_thread.run_sync(
            self.cache.read_range, key, length, start, end, limiter=self._limiter
        )

    def is_open(self, key: ChunkKey) -> bool:
        """Whether ``key``'s value file is open for reading (never blocks)."""
        return self.cache.is_open(key)

    async def contains_each(self, keys: list[ChunkKey]) -> list[bool]:
        return await trio.to_thread.run_sync(self.cache.contains_each, keys, limiter=self._limiter)

    async def warm(self, key: ChunkKey, length: int) -> None:
        await trio.to_thread.run_sync(self.cache.warm, key, length, limiter=self._limiter)

    async def put(self, key: ChunkKey, data: bytes | memoryview) -> bool:
        return await trio.to_thread.run_sync(self.cache.put, key, data, limiter=self._limiter)

    async def bind_etag(self, obj: ObjectId) -> None:
        await trio.to_thread.run_sync(self.cache.bind_etag, obj, limiter=self._limiter)

    async def cached_map(self, obj: ObjectId, chunk_size: int, count: int) -> list[bool]:
        return await trio.to_thread.run_sync(
            self.cache.cached_map, obj, chunk_size, count, limiter=self._limiter
        )

    async def proof(self, obj: ObjectId) -> Proof | None:
        return await trio.to_thread.run_sync(self.cache.proof, obj, limiter=self._limiter)

    async def record_proof(self, obj: ObjectId, proof: Proof) -> None:
        await trio.to_thread.run_sync(self.cache.record_proof, obj, proof, limiter=self._limiter)

    async def forget_proof(self, obj: ObjectId) -> None:
        await trio.to_thread.run_sync(self.cache.forget_proof, obj, limiter=self._limiter)

    async def discard(self, obj: ObjectId, chunk_size: int, count: int) -> int:
        return await trio.to_thread.run_sync(
            self.cache.discard, obj, chunk_size, count, limiter=self._limiter
        )

    async def open_fill(self, key: ChunkKey, length: int) -> ChunkFile | None:
        return await trio.to_thread.run_sync(
            self.cache.open_fill, key, length, limiter=self._limiter
        )

    async def read_file(self, file: ChunkFile, start: int, end: int) -> bytes:
        return await trio.to_thread.run_sync(file.read, start, end, limiter=self._limiter)

    async def adopt(
        self, key: ChunkKey, file: ChunkFile, *, proof: Proof | None = None, bind: bool = False
    ) -> bool:
        adopt = functools.partial(self.cache.adopt, key, file, proof=proof, bind=bind)
        return await trio.to_thread.run_sync(adopt, limiter=self._limiter)

    async def pinned(self, obj: ObjectId) -> list[Pin]:
        return await trio.to_thread.run_sync(self.cache.pinned, obj, limiter=self._limiter)

    async def pinned_each(self, objs: list[ObjectId]) -> list[list[Pin]]:
        return await trio.to_thread.run_sync(self.cache.pinned_each, objs, limiter=self._limiter)

    async def follow_pin(self, obj: ObjectId, size: int) -> bool:
        return await trio.to_thread.run_sync(
            self.cache.follow_pin, obj, size, limiter=self._limiter
        )

    async def keep_pinned(self, obj: ObjectId) -> int:
        return await trio.to_thread.run_sync(self.cache.keep_pinned, obj, limiter=self._limiter)

    async def pin_summary(self) -> PinSummary:
        return await trio.to_thread.run_sync(self.cache.pin_summary, limiter=self._limiter)

    @property
    def paused(self) -> bool:
        return self.cache.paused

    async def pause(self, exc: BaseException, key: ChunkKey) -> None:
        await trio.to_thread.run_sync(self.cache.pause, exc, key, limiter=self._limiter)

    async def discard_fill(self, key: ChunkKey) -> None:
        await trio.to_thread.run_sync(self.cache.partial.discard, key, limiter=self._limiter)
