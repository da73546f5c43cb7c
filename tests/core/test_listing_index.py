"""Listings through the metadata index, over the in-memory store: a remount within the TTL
asks S3 nothing, big directories page in and out, and a listing that fails half-way never
shows half a directory."""

import pytest

from rangefs.cache.metadata_index import MetadataIndex, Scope
from rangefs.errors import RemoteError
from rangefs.fs.filesystem import READDIR_PAGE
from rangefs.fs.inodes import ROOT_INODE
from tests.core.helpers import lookup_path
from tests.support.readdir import read_dir


async def all_entries(fs, ino=ROOT_INODE, take=37):
    """readdir as the kernel does it: ``take`` entries per request, each resuming at the
    offset of the last entry taken (a small buffer makes many requests)."""
    fh = await fs.opendir(ino)
    try:
        out, offset = [], 0
        while page := list(await read_dir(fs, fh, offset))[:take]:
            out += page
            offset = page[-1].next_id
        return out
    finally:
        await fs.releasedir(fh)


async def test_a_remount_within_the_ttl_lists_nothing(env):
    env.store.put("d/a.bin", size=10)
    env.store.put("d/sub/b.bin", size=20)
    async with env.core() as core:
        first = [(e.name, e.size) for e in await all_entries(core.fs)]
        assert (await lookup_path(core.fs, "d/sub/b.bin")).size == 20
    listed = env.store.calls["list_dir"]
    async with env.core() as core:
        assert [(e.name, e.size) for e in await all_entries(core.fs)] == first
        assert (await lookup_path(core.fs, "d/sub/b.bin")).size == 20
        assert (await lookup_path(core.fs, "d/a.bin")).size == 10
    assert env.store.calls["list_dir"] == listed, "answered from the index"
    assert env.store.calls["head"] == 0
    env.store.put("d/new.bin", size=1)
    async with env.core(metadata_ttl=0) as core:  # expired: listed again, sees the change
        assert (await lookup_path(core.fs, "d/new.bin")).size == 1
    assert env.store.calls["list_dir"] > listed


async def test_a_big_directory_pages_in_and_out(env):
    env.store.page_size = 1000
    names = [f"k{i:05d}" for i in range(2500)]
    for name in names:
        env.store.put(f"big/{name}", b"x")
    env.store.put("big/zdir/inner", b"y")
    async with env.core() as core:
        big = await lookup_path(core.fs, "big")
        entries = await all_entries(core.fs, big.ino)
        assert env.store.calls["list_dir"] == 1 + 3  # the root, then big/ in three pages
        assert [e.name for e in entries] == [".", "..", *names, "zdir"]
        assert [e.next_id for e in entries] == list(range(1, len(entries) + 1))
        fh = await core.fs.opendir(big.ino)
        try:  # a seek far in (telldir/seekdir): served by offset
            assert [e.name for e in await read_dir(core.fs, fh, 2 + 2000)][:2] == names[2000:2002]
            assert len(list(await read_dir(core.fs, fh, 2))) <= READDIR_PAGE
        finally:
            await core.fs.releasedir(fh)
        assert len(core.fs.namespace._entries) <= 2, "readdir holds no listing in RAM"


async def test_a_listing_that_fails_half_way_shows_the_last_complete_one(env):
    env.store.page_size = 2
    for name in "abc":
        env.store.put(f"d/{name}", b"old")
    async with env.core() as core:
        assert [e.name for e in await all_entries(core.fs, (await lookup_path(core.fs, "d")).ino)][
            2:
        ] == ["a", "b", "c"]
    for name in "defg":
        env.store.put(f"d/{name}", b"new")
    env.store.fail_list("d/", RemoteError("injected: the bucket went away"), after=1)
    async with env.core(metadata_ttl=0) as core:
        with pytest.raises(RemoteError):
            await lookup_path(core.fs, "d/e")
    index = MetadataIndex(env.cache_dir)
    try:
        info = index.listing(Scope("bucket"), "d/")
        assert info is not None and info.count == 3, "the old complete listing, not a half one"
        assert index.stats().entries == 3 + 1, "d/ and the root; the pending rows are gone"
    finally:
        index.close()
    env.store.clear_faults()
    async with env.core(metadata_ttl=0) as core:
        d = await lookup_path(core.fs, "d")
        assert [e.name for e in await all_entries(core.fs, d.ino)][2:] == list("abcdefg")
