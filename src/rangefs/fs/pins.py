"""Pins in the daemon: a pin follows its key, not an ETag.

``rangefs pin`` records which object versions are pinned (in the chunk cache, where the
cull skips them) and reads them through the mount. When a pinned key's listing shows a new
version, the daemon:

* pins the new version as well, so its chunks are never evicted either;
* online, fetches all of it in the background (through the reader: proofs are checked as
  for any read), and only once it is complete drops the old version's chunks and pin;
* offline, serves the newest old version whose chunks are all cached, since the new one
  cannot be fetched and the old bytes are what the user pinned to have offline.

So at any moment a pinned key has at least one complete version on disk, once it had one.
"""

import logging
from typing import Any

import trio

from rangefs import chunks
from rangefs.cache.async_cache import AsyncChunkCache
from rangefs.engine.reader import ChunkReader
from rangefs.errors import RangefsError
from rangefs.remote.reachability import Reachability
from rangefs.remote.store import ObjectVersion

log = logging.getLogger(__name__)

FETCH_CHUNKS = 4  # chunks of a new pinned version fetched at once (background work)


class PinKeeper:
    def __init__(
        self,
        cache: AsyncChunkCache,
        reader: ChunkReader,
        reachability: Reachability,
        chunk_size: int,
    ) -> None:
        self.cache = cache
        self.reader = reader
        self.reachability = reachability
        self.chunk_size = chunk_size
        self._nursery: trio.Nursery | None = None
        self._fetching: set[ObjectVersion] = set()
        self._limiter = trio.CapacityLimiter(FETCH_CHUNKS)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Hosts the background fetches of new pinned versions; runs until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    @property
    def fetching(self) -> int:
        """New pinned versions being fetched in the background."""
        return len(self._fetching)

    async def is_pinned(self, version: ObjectVersion) -> bool:
        return bool(await self.cache.pinned(version.id))

    async def version_to_serve(self, listed: ObjectVersion) -> ObjectVersion:
        """The version an open of ``listed``'s key reads: ``listed`` itself, unless the key
        is pinned, ``listed`` is not complete in the cache and S3 cannot be reached; then the
        newest complete pinned version (if any)."""
        pins = await self.cache.pinned(listed.id)
        if not pins or [pin.obj for pin in pins] == [listed.id]:
            return listed  # not pinned, or pinned at this version only (rangefs pin fetches)
        if all(pin.obj != listed.id for pin in pins):
            await self.cache.follow_pin(listed.id, listed.size)
        if await self._complete(listed):
            await self._keep(listed)
            return listed
        if self.reachability.online:
            self._fetch_soon(listed)
            return listed
        for pin in pins:
            old = ObjectVersion(listed.bucket, listed.key, pin.obj.etag, pin.size,
                                pin.obj.version_id)  # fmt: skip
            if old.id != listed.id and await self._complete(old):
                log.info(
                    "offline: serving the pinned version %s of %s (%d B): the new one (%s) "
                    "is not cached yet",
                    pin.obj.token, listed.id.uri, pin.size, listed.id.token,
                )  # fmt: skip
                return old
        return listed

    async def _complete(self, version: ObjectVersion) -> bool:
        count = chunks.chunk_count(version.size, self.chunk_size)
        return all(await self.cache.cached_map(version.id, self.chunk_size, count))

    async def _keep(self, version: ObjectVersion) -> None:
        """``version`` is complete: older pinned versions of its key go."""
        dropped = await self.cache.keep_pinned(version.id)
        if dropped:
            log.info(
                "pinned %s: version %s is cached whole, dropped %d chunks of the old one",
                version.id.uri, version.id.token, dropped,
            )  # fmt: skip

    def _fetch_soon(self, version: ObjectVersion) -> None:
        if version in self._fetching or self._nursery is None:
            return
        self._fetching.add(version)
        self._nursery.start_soon(self._fetch, version)

    async def _fetch(self, version: ObjectVersion) -> None:
        """Reads every missing chunk of ``version`` (so the reader caches it); a failure
        is logged and left for the next open to start again."""
        try:
            count = chunks.chunk_count(version.size, self.chunk_size)
            cached = await self.cache.cached_map(version.id, self.chunk_size, count)
            log.info(
                "pinned %s changed: fetching version %s (%d of %d chunks missing)",
                version.id.uri, version.id.token, cached.count(False), count,
            )  # fmt: skip
            async with trio.open_nursery() as nursery:
                for index in (i for i, present in enumerate(cached) if not present):
                    nursery.start_soon(self._fetch_chunk, version, index)
            if await self._complete(version):
                await self._keep(version)
        except RangefsError as exc:
            log.warning(
                "pinned %s: fetching version %s failed (%s); the next open tries again",
                version.id.uri, version.id.token, exc,
            )  # fmt: skip
        finally:
            self._fetching.discard(version)

    async def _fetch_chunk(self, version: ObjectVersion, index: int) -> None:
        start, end = chunks.chunk_bounds(index, version.size, self.chunk_size)
        async with self._limiter:
            await self.reader.read(version, start, end - start)
