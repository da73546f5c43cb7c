"""--version-at over the in-memory store: the bucket as it was, read by versionId, cached by
versionId (immutable, so never revalidated nor dropped for a newer version)."""

import pytest

from rangefs.daemon.mount import check_bucket
from rangefs.errors import NotFound, UserError
from rangefs.fs import xattrs
from rangefs.fs.inodes import ROOT_INODE
from rangefs.remote.versions import NotVersioned, VersionedStore
from tests.core.helpers import CHUNK, lookup_path, open_path, read_all, settle
from tests.support.readdir import read_dir


def history(env):
    """``a`` written three times, ``b`` written then deleted, ``c`` created last; returns
    (the three bytes of ``a``, T between a's first two versions and b's delete)."""
    env.store.enable_versioning()
    a1 = env.store.put("a", size=3 * CHUNK + 5, seed=1)
    env.store.put("b", size=100, seed=9)
    at = env.store.object("b").mtime + 0.5
    a2 = env.store.put("a", size=2 * CHUNK, seed=2)
    env.store.delete("b")
    a3 = env.store.put("a", size=CHUNK, seed=3)
    env.store.put("d/x", size=10, seed=4)  # d/ appears only after T
    return (a1, a2, a3), at


async def names(fs, ino=ROOT_INODE):
    fh = await fs.opendir(ino)
    try:
        return [e.name for e in await read_dir(fs, fh, 0)][2:]
    finally:
        await fs.releasedir(fh)


async def test_a_read_as_of_t_gets_the_old_bytes_by_version_id(env):
    (a1, _, _), at = history(env)
    v1 = env.store.versions("a")[0].version_id
    async with env.core(version_at=at) as core:
        attr = await lookup_path(core.fs, "a")
        assert attr.size == len(a1)
        fh = await open_path(core.fs, "a")
        assert await read_all(core.fs, fh, len(a1)) == a1
        await settle(core)
        gets = [g for g in env.store.gets if g.key == "a"]
        assert sorted(g.start // CHUNK for g in gets) == [0, 1, 2, 3]
        assert {g.version_id for g in gets} == {v1}
        assert await core.fs.getxattr(attr.ino, xattrs.VERSION) == v1.encode()
        assert xattrs.VERSION in await core.fs.listxattr(attr.ino)


async def test_delete_markers_and_later_keys_as_of_t(env):
    _, at = history(env)
    async with env.core(version_at=at) as core:
        # b not yet deleted; d/x not yet there, but its prefix is shown, empty (documented)
        assert await names(core.fs) == ["a", "b", "d"]
        assert (await lookup_path(core.fs, "b")).size == 100
        assert await names(core.fs, (await lookup_path(core.fs, "d")).ino) == []
    async with env.core(version_at=env.store.object("a").mtime) as core:
        assert await names(core.fs) == ["a", "d"]  # b deleted by then
        with pytest.raises(NotFound):
            await lookup_path(core.fs, "b")
    async with env.core(version_at=0.0) as core:  # before anything: no key, only the prefix
        assert await names(core.fs) == ["d"]


async def test_a_reopen_after_a_new_put_still_reads_the_t_version(env):
    (a1, _, _), at = history(env)
    async with env.core(version_at=at, metadata_ttl=0.0) as core:
        fh = await open_path(core.fs, "a")
        assert await read_all(core.fs, fh, len(a1)) == a1
        core.fs.release(fh)
        env.store.put("a", size=7 * CHUNK, seed=7)  # a newer version: not as of T
        attr = await lookup_path(core.fs, "a")
        assert attr.size == len(a1)
        fh, keep_cache = await core.fs.open(attr.ino)
        assert keep_cache  # same versionId: the kernel's page cache stays valid
        assert await read_all(core.fs, fh, len(a1)) == a1
        await settle(core)
        assert env.store.get_count("a") == 4  # the second read came from memory/disk


async def test_the_cache_is_keyed_by_version_id(env):
    (a1, _, a3), at = history(env)
    async with env.core(version_at=at) as core:
        fh = await open_path(core.fs, "a")
        assert await read_all(core.fs, fh, len(a1)) == a1
        await settle(core)
    fetched = env.store.get_count()
    async with env.core(version_at=at) as core:  # a fresh core over the same cache dir
        fh = await open_path(core.fs, "a")
        assert await read_all(core.fs, fh, len(a1)) == a1
        await settle(core)
        assert core.stats.gets == 0
    assert env.store.get_count() == fetched
    async with env.core() as core:  # a normal mount: the current version, by ETag
        fh = await open_path(core.fs, "a")
        assert await read_all(core.fs, fh, len(a3)) == a3
        await settle(core)
        assert core.stats.gets == 1
    async with env.core(version_at=at) as core:  # binding a's ETag dropped no version chunk
        fh = await open_path(core.fs, "a")
        assert await read_all(core.fs, fh, len(a1)) == a1
        await settle(core)
        assert core.stats.gets == 0


async def test_a_bucket_without_versioning_fails_the_mount_check(env, tmp_path):
    env.store.put("a", size=10)
    store = VersionedStore(env.store, 0.0)
    with pytest.raises(NotVersioned):
        store.check_access("")
    with pytest.raises(UserError, match="has no versioning: --version-at needs") as caught:
        check_bucket(store, env.config(version_at=0.0))
    assert "\n" not in str(caught.value)
    env.store.enable_versioning("Suspended")  # a suspended bucket keeps its history
    assert check_bucket(store, env.config(version_at=0.0))
