"""The FUSE-free core of a mount, assembled from a config, an object store and a cache.

The daemon (:mod:`rangefs.daemon.mount`) builds it over boto3; the core test tier builds it over an
in-memory store, with no kernel and no server. Only here are the thread limiters chosen:
each blocking resource (S3 metadata calls, GETs, the disk cache) gets one, so the trio loop
never blocks and no caller passes limiters around.
"""

from dataclasses import dataclass
from functools import partial
from typing import Any

import trio

from rangefs.cache.async_cache import AsyncChunkCache
from rangefs.cache.chunk_cache import ChunkCache
from rangefs.cache.metadata_index import AsyncMetadataIndex, MetadataIndex, Scope
from rangefs.config import Config
from rangefs.engine.budget import Budget
from rangefs.engine.reader import ChunkReader
from rangefs.engine.verifier import CHECKSUM_CHUNKS, Verifier
from rangefs.fs.filesystem import Filesystem
from rangefs.fs.namespace import Namespace
from rangefs.fs.pins import PinKeeper
from rangefs.remote.reachability import Reachability
from rangefs.remote.store import AsyncStore, ObjectStore
from rangefs.stats import Stats

CACHE_THREADS = 8  # disk cache reads/writes at once (reads are mostly page-cache copies)
META_THREADS = 8  # listings and HEADs at once
READERS_AHEAD = 4  # readers whose full windows the global read-ahead budget holds
INDEX_THREADS = 2  # metadata index calls at once (they take turns on one connection)


@dataclass
class Core:
    fs: Filesystem
    reader: ChunkReader
    store: AsyncStore
    stats: Stats
    reachability: Reachability
    pins: PinKeeper

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Hosts the fetch tasks and the offline probe; ``nursery.start(core.run)`` before
        serving reads."""
        prefix = self.fs.namespace.prefix
        async with trio.open_nursery() as nursery:
            await nursery.start(self.reachability.run, partial(self.store.probe, prefix))
            await nursery.start(self.reader.run)
            await nursery.start(self.pins.run)
            task_status.started()


def build_core(
    config: Config,
    store: ObjectStore,
    cache: ChunkCache,
    index: MetadataIndex,
    stats: Stats,
    online: bool = True,
) -> Core:
    """The core over ``store``; ``online=False`` starts it offline (``--allow-offline``)."""
    where = f"S3 at {config.endpoint_url}" if config.endpoint_url else "S3"
    reachability = Reachability(stats, where, online=online)
    # Bytes ahead land in the cache: at most half of what pins leave of it (a quarter with
    # the default --pin-limit), so they are not evicted before read.
    unpinned = config.cache_size - config.pin_bytes
    max_ahead = min(config.cache_size // 4, unpinned // 2, READERS_AHEAD * config.max_readahead)
    budget = Budget(config.parallel, max_ahead)
    async_store = AsyncStore(
        store, trio.CapacityLimiter(META_THREADS), budget.get_slots, reachability
    )
    async_cache = AsyncChunkCache(cache, trio.CapacityLimiter(CACHE_THREADS))
    verifier = Verifier(
        async_store,
        async_cache,
        chunk_size=config.chunk_size,
        stats=stats,
        customer_key=config.sse_c_key is not None,
        checksum_chunks=CHECKSUM_CHUNKS if config.proofs == "auto" else 0,
        enabled=config.proofs != "off",
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
    async_index = AsyncMetadataIndex(index, trio.CapacityLimiter(INDEX_THREADS))
    namespace = Namespace(
        async_store, async_index, Scope.of(config), config.prefix, config.metadata_ttl
    )
    pins = PinKeeper(async_cache, reader, reachability, config.chunk_size)
    fs = Filesystem(config, namespace, reader, async_cache, stats, pins)
    budget.register(fs.walks)  # files fetched ahead of walkers hold bytes ahead too
    return Core(fs, reader, async_store, stats, reachability, pins)
