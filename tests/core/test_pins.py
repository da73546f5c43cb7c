"""Pins over the FUSE-free core: pinned chunks survive any amount of other reads (read-ahead
included), the limit and the read-ahead budget follow ``--pin-limit``, and a pin follows its
key: the new version is fetched in the background online, the old one served offline."""

import json

import pytest

from rangefs.cache.chunk_cache import Pin
from rangefs.errors import Unreachable
from rangefs.fs import xattrs
from rangefs.fs.inodes import ROOT_INODE
from rangefs.keys import ObjectId
from tests.core.helpers import CHUNK, lookup_path, open_path, read_all, settle, until
from tests.core.test_offline import wait_online
from tests.support.patterns import pattern_bytes


async def pin_target(core, path: str) -> ObjectId:
    """``path``'s key at the version the mount reads (its ETag xattr)."""
    attr = await lookup_path(core.fs, path)
    return ObjectId("bucket", path, (await core.fs.getxattr(attr.ino, xattrs.ETAG)).decode())


async def pin(core, path: str) -> ObjectId:
    """What ``rangefs pin`` records for ``path``, under the mount's limit."""
    obj = await pin_target(core, path)
    size = (await lookup_path(core.fs, path)).size
    core.fs.cache.cache.pin([Pin(obj, size)], core.fs.config.pin_bytes)
    return obj


async def read_path(core, path: str, size: int) -> bytes:
    fh = await open_path(core.fs, path)
    try:
        return await read_all(core.fs, fh, size)
    finally:
        core.fs.release(fh)


async def test_read_ahead_and_other_reads_never_evict_pinned_chunks(env):
    pinned = env.store.put("pinned.bin", size=6 * CHUNK, seed=1)
    fillers = {f"fill/{i}.bin": env.store.put(f"fill/{i}.bin", size=8 * CHUNK, seed=10 + i)
               for i in range(10)}  # fmt: skip
    async with env.core(cache_size=32 * CHUNK) as core:
        obj = await pin(core, "pinned.bin")
        assert await read_path(core, "pinned.bin", len(pinned)) == pinned
        await settle(core)
        for path, data in fillers.items():  # 80 chunks, sequential: read-ahead at work
            assert await read_path(core, path, len(data)) == data
            await settle(core)
        cache = core.fs.cache.cache
        assert cache.cached_map(obj, CHUNK, 6) == [True] * 6
        first_filler = await pin_target(core, "fill/0.bin")
        assert not any(cache.cached_map(first_filler, CHUNK, 8)), "evicted, as LRU"
        gets = env.store.get_count("pinned.bin")
        assert await read_path(core, "pinned.bin", len(pinned)) == pinned
        assert env.store.get_count("pinned.bin") == gets, "a pinned chunk was fetched again"


async def test_the_pin_limit_and_read_ahead_budget_follow_the_options(env):
    async with env.core(cache_size=32 * CHUNK) as core:
        info = json.loads(await core.fs.getxattr(ROOT_INODE, xattrs.PINS))
        assert (info["limit"], info["files"], info["bytes"]) == (16 * CHUNK, 0, 0)
        assert core.reader.budget.max_ahead == 8 * CHUNK  # a quarter of the cache
    async with env.core(cache_size=32 * CHUNK, pin_limit=24 * CHUNK) as core:
        info = json.loads(await core.fs.getxattr(ROOT_INODE, xattrs.PINS))
        assert info["limit"] == 24 * CHUNK and info["cache_dir"] == str(env.cache_dir)
        # Half of what pins leave: read-ahead never pushes out bytes not yet read.
        assert core.reader.budget.max_ahead == 4 * CHUNK


async def test_a_pin_follows_its_key_new_version_online_old_one_offline(env):
    old = env.store.put("p.bin", size=3 * CHUNK, seed=1)
    env.store.put("other.bin", size=CHUNK, seed=2)
    async with env.core(metadata_ttl=0) as core:
        fs = core.fs
        first = await pin(core, "p.bin")
        assert await read_path(core, "p.bin", len(old)) == old
        await settle(core)
        attr = await lookup_path(fs, "p.bin")
        assert await fs.getxattr(attr.ino, xattrs.PINNED) == b"yes"
        assert await fs.getxattr((await lookup_path(fs, "other.bin")).ino, xattrs.PINNED) == b"no"

        new = env.store.put("p.bin", pattern_bytes(0, 3 * CHUNK, 9))
        await lookup_path(fs, "p.bin")  # listed: the mount knows the new ETag, fetched nothing
        env.store.unplug()
        fh = await open_path(fs, "other.bin")
        with pytest.raises(Unreachable):  # an uncached read: offline
            await fs.read(fh, 0, 10)
        fs.release(fh)
        assert not core.reachability.online
        gets = env.store.get_count("p.bin")
        assert await read_path(core, "p.bin", len(old)) == old, "offline: the old pinned bytes"
        assert env.store.get_count("p.bin") == gets

        env.store.plug()
        await wait_online(core)
        assert await read_path(core, "p.bin", len(new)) == new, "online: the new version"
        await until(lambda: core.pins.fetching == 0)
        await settle(core)
        pins = fs.cache.cache.pinned(first)
        assert len(pins) == 1 and pins[0].obj != first
        assert fs.cache.cache.cached_map(first, CHUNK, 3) == [False] * 3, "old chunks dropped"
        assert all(fs.cache.cache.cached_map(pins[0].obj, CHUNK, 3))
