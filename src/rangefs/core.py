"""The FUSE-free core of a mount, assembled from a config, an object store and a cache.

The daemon (:mod:`rangefs.mount`) builds it over boto3; the core test tier builds it over an
in-memory store, with no kernel and no server. Only here are the thread limiters chosen:
each blocking resource (S3 metadata calls, GETs, the disk cache) gets one, so the trio loop
never blocks and no caller passes limiters around.
"""

from dataclasses import dataclass
from typing import Any

import trio

from rangefs.async_cache import AsyncChunkCache
from rangefs.budget import Budget
from rangefs.chunk_cache import ChunkCache
from rangefs.config import Config
from rangefs.filesystem import Filesystem
from rangefs.namespace import Namespace
from rangefs.reader import ChunkReader
from rangefs.stats import Stats
from rangefs.store import AsyncStore, ObjectStore
from rangefs.verifier import Verifier

CACHE_THREADS = 8  # disk cache reads/writes at once (reads are mostly page-cache copies)
META_THREADS = 8  # listings and HEADs at once
READERS_AHEAD = 4  # readers whose full windows the global read-ahead budget holds


@dataclass
class Core:
    fs: Filesystem
    reader: ChunkReader
    store: AsyncStore
    stats: Stats

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Hosts the fetch tasks; ``nursery.start(core.run)`` before serving reads."""
        await self.reader.run(task_status=task_status)


def build_core(config: Config, store: ObjectStore, cache: ChunkCache, stats: Stats) -> Core:
    # Bytes ahead land in the cache: a quarter of it, so they are not evicted before read.
    max_ahead = min(config.cache_size // 4, READERS_AHEAD * config.max_readahead)
    budget = Budget(config.parallel, max_ahead)
    async_store = AsyncStore(store, trio.CapacityLimiter(META_THREADS), budget.get_slots)
    async_cache = AsyncChunkCache(cache, trio.CapacityLimiter(CACHE_THREADS))
    verifier = Verifier(
        async_store,
        async_cache,
        chunk_size=config.chunk_size,
        stats=stats,
        customer_key=config.sse_c_key is not None,
    )
    reader = ChunkReader(
        async_store,
        async_cache,
        budget,
        chunk_size=config.chunk_size,
        memory_limit=config.memory_limit,
        max_readahead=config.max_readahead,
        stats=stats,
        verifier=verifier,
    )
    namespace = Namespace(async_store, config.prefix, config.metadata_ttl)
    fs = Filesystem(config, namespace, reader, async_cache, stats)
    budget.register(fs.walks)  # files fetched ahead of walkers hold bytes ahead too
    return Core(fs, reader, async_store, stats)
