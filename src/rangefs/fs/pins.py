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
from collections import OrderedDict
from typing import Any

import trio

from rangefs import chunks
from rangefs.cache.async_cache import AsyncChunkCache
from rangefs.cache.chunk_cache import Pin
from rangefs.engine.reader import ChunkReader
from rangefs.errors import RangefsError
from rangefs.keys import ObjectId
from rangefs.remote.reachability import Reachability
from rangefs.remote.store import ObjectVersion

log = logging.getLogger(__name__)

FETCH_CHUNKS = 4  # chunks of a new pinned version fetched at once (background work)
# A walker's next files have their pins read ahead, so their opens need no thread hop (one
# costs milliseconds on a daemon busy fetching: most of an open, rsync pays it per file).
AHEAD_ANSWERS = 256  # answers kept (files asked for ahead of walkers, not opened yet)
AHEAD_FRESH = 5.0  # seconds an answer read ahead stands for the open


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
        self._ahead: OrderedDict[ObjectId, tuple[list[Pin], float]] = OrderedDict()
        self.looking_ahead = 0  # look-ahead reads of pins in progress

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

    def look_ahead(self, versions: list[ObjectVersion]) -> None:
        """``versions`` will be opened soon (files fetched ahead of a walker): their keys'
        pins are read now, in the background, and the opens within :data:`AHEAD_FRESH`
        seconds take that answer from RAM. A pin recorded in between is seen by the key's
        next open (online, the version served is the listed one either way)."""
        if self._nursery is not None and versions:
            self.looking_ahead += 1
            self._nursery.start_soon(self._look_ahead, [v.id for v in versions])

    async def _look_ahead(self, objs: list[ObjectId]) -> None:
        try:
            answers = await self.cache.pinned_each(objs)
        except Exception as exc:  # the opens will ask themselves
            log.debug("reading pins ahead failed: %s", exc)
            return
        finally:
            self.looking_ahead -= 1
        now = trio.current_time()
        for obj, pins in zip(objs, answers, strict=True):
            self._ahead[obj] = (pins, now)
            self._ahead.move_to_end(obj)
        while len(self._ahead) > AHEAD_ANSWERS:
            self._ahead.popitem(last=False)

    async def _pinned(self, obj: ObjectId) -> list[Pin]:
        """The pins of ``obj``'s key: the answer read ahead if fresh, else asked now."""
        ahead = self._ahead.pop(obj, None)
        if ahead is not None and trio.current_time() - ahead[1] < AHEAD_FRESH:
            return ahead[0]
        return await self.cache.pinned(obj)

    async def version_to_serve(self, listed: ObjectVersion) -> ObjectVersion:
        """The version an open of ``listed``'s key reads: ``listed`` itself, unless the key
        is pinned, ``listed`` is not complete in the cache and S3 cannot be reached; then the
        newest complete pinned version (if any)."""
        pins = await self._pinned(listed.id)
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
