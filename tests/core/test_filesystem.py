"""The namespace and metadata operations of :class:`Filesystem`: what ``ls``, ``stat``,
``getfattr`` and ``df`` see, including the keys that cannot be names."""

import errno

import pytest
import trio
import trio.testing

from rangefs.daemon.core import META_THREADS
from rangefs.errors import IsADirectory, NoSuchAttribute, NotADirectory, NotFound
from rangefs.fs import xattrs
from rangefs.fs.filesystem import IO_BLOCK_SIZE
from rangefs.fs.inodes import ROOT_INODE
from tests.core.fakes import FIRST_MTIME
from tests.core.helpers import CHUNK, gate_reached, lookup_path, open_path, settle
from tests.support.readdir import read_dir


async def readdir_names(fs, path=""):
    """The directory's entries past ``.`` and ``..``, which always come first (their inodes
    are tested in tests/unit/test_readdir.py)."""
    ino = ROOT_INODE if not path else (await lookup_path(fs, path)).ino
    fh = await fs.opendir(ino)
    try:
        entries = list(await read_dir(fs, fh, 0))
    finally:
        await fs.releasedir(fh)
    assert [e.name for e in entries[:2]] == [".", ".."]
    return {e.name: e for e in entries[2:]}


async def test_lookup_and_getattr_of_a_file(env):
    data = env.store.put("dir/file.bin", size=3 * CHUNK + 17, seed=1)
    async with env.core(umask=0o022) as core:
        attr = await lookup_path(core.fs, "dir/file.bin")
        assert not attr.is_dir
        assert attr.size == len(data)
        assert attr.mode == 0o100444
        assert attr.nlink == 1
        assert attr.blksize == IO_BLOCK_SIZE
        assert attr.blocks == -(-len(data) // 512)
        assert attr.mtime_ns == int(env.store.object("dir/file.bin").mtime * 1e9)
        again = await core.fs.getattr(attr.ino)
        assert again == attr


async def test_prefixes_are_directories_and_the_root_is_one(env):
    env.store.put("dir/sub/deep.txt", b"deep")
    async with env.core(umask=0o027) as core:
        root = await core.fs.getattr(ROOT_INODE)
        assert root.is_dir and root.mode == 0o040550 and root.nlink == 2
        sub = await lookup_path(core.fs, "dir/sub")
        assert sub.is_dir and sub.size == 0
        assert (await lookup_path(core.fs, "dir/sub/deep.txt")).size == 4


async def test_lookup_of_dot_and_dotdot(env):
    env.store.put("a/b/c", b"x")
    async with env.core() as core:
        b = await lookup_path(core.fs, "a/b")
        a = await lookup_path(core.fs, "a")
        assert (await core.fs.lookup(b.ino, ".")).ino == b.ino
        assert (await core.fs.lookup(b.ino, "..")).ino == a.ino
        assert (await core.fs.lookup(a.ino, "..")).ino == ROOT_INODE


async def test_missing_names_and_files_used_as_directories(env):
    env.store.put("file", b"data")
    async with env.core() as core:
        with pytest.raises(NotFound) as missing:
            await core.fs.lookup(ROOT_INODE, "nope")
        assert missing.value.errno == errno.ENOENT
        f = await core.fs.lookup(ROOT_INODE, "file")
        with pytest.raises(NotADirectory) as below_file:
            await core.fs.lookup(f.ino, "child")
        assert below_file.value.errno == errno.ENOTDIR
        with pytest.raises(NotADirectory):
            await core.fs.opendir(f.ino)
        with pytest.raises(NotFound):
            await core.fs.getattr(987654)


async def test_readdir_lists_files_and_directories_with_attributes(env):
    env.store.put("top/a.txt", b"aaa")
    env.store.put("top/b.bin", size=CHUNK + 1)
    env.store.put("top/sub/c", b"c")
    env.store.put("elsewhere", b"not in top")
    async with env.core() as core:
        entries = await readdir_names(core.fs, "top")
        assert sorted(entries) == ["a.txt", "b.bin", "sub"]
        assert entries["a.txt"].size == 3 and not entries["a.txt"].is_dir
        assert entries["b.bin"].size == CHUNK + 1
        assert entries["sub"].is_dir
        # The inode readdir hands out is the one lookup finds.
        assert entries["sub"].ino == (await lookup_path(core.fs, "top/sub")).ino


async def test_readdir_pages_from_a_stable_snapshot(env):
    for i in range(10):
        env.store.put(f"d/f{i:02d}", b"x")
    async with env.core(metadata_ttl=0) as core:
        d = await lookup_path(core.fs, "d")
        fh = await core.fs.opendir(d.ino)
        first = list(await read_dir(core.fs, fh, 0))[:6]
        env.store.put("d/f00-new", b"y")  # appears in the bucket mid-listing
        rest = list(await read_dir(core.fs, fh, first[-1].next_id))
        names = [e.name for e in first + rest]
        assert names == [".", "..", *(f"f{i:02d}" for i in range(10))]
        assert [e.next_id for e in first + rest] == list(range(1, 13))
        await core.fs.releasedir(fh)
        assert "f00-new" in await readdir_names(core.fs, "d")  # the next opendir sees it


async def test_empty_directory_marker_is_a_directory(env):
    env.store.put("empty/", b"")
    async with env.core() as core:
        attr = await lookup_path(core.fs, "empty")
        assert attr.is_dir
        assert await readdir_names(core.fs, "empty") == {}


@pytest.mark.parametrize(
    "bad_key",
    ["d//b", "d/./x", "d/../escape", "d/" + "n" * 256, "d/nul\0name", "d/"],
    ids=["empty-component", "dot", "dotdot", "too-long", "nul", "marker-only"],
)
async def test_keys_that_cannot_be_names_are_hidden(env, bad_key):
    env.store.put("d/ok", b"ok")
    env.store.put(bad_key, b"hidden")
    async with env.core() as core:
        names = await readdir_names(core.fs, "d")
        assert list(names) == ["ok"]
        for name in ("", "n" * 256, "nul\0name", "b", "x", "escape"):
            with pytest.raises(NotFound):
                await lookup_path(core.fs, f"d/{name}")


async def test_a_name_of_255_bytes_is_visible(env):
    name = "é" * 127 + "x"  # 255 bytes in UTF-8
    env.store.put(f"d/{name}", b"fits")
    async with env.core() as core:
        assert list(await readdir_names(core.fs, "d")) == [name]
        assert (await lookup_path(core.fs, f"d/{name}")).size == 4


async def test_object_and_prefix_of_one_name_the_directory_wins(env):
    env.store.put("a", b"the object a")
    env.store.put("a/b", b"below a")
    async with env.core() as core:
        entries = await readdir_names(core.fs)
        assert list(entries) == ["a"] and entries["a"].is_dir
        a = await lookup_path(core.fs, "a")
        assert a.is_dir
        with pytest.raises(IsADirectory):
            await core.fs.open(a.ino)
        fh = await open_path(core.fs, "a/b")
        assert await core.fs.read(fh, 0, 100) == b"below a"


async def test_hidden_count_is_reported_by_the_listing(env):
    env.store.put("a", b"shadowed")
    env.store.put("a/b", b"b")
    env.store.put("..", b"bad")
    async with env.core() as core:
        listing = await core.fs.namespace.listing("")
        assert listing.hidden == 2
        assert listing.count == 1
        assert list(await readdir_names(core.fs)) == ["a"]


async def test_prefix_mounts_a_subtree(env):
    env.store.put("data/x/file", b"inside")
    env.store.put("datafile", b"outside, same leading bytes")
    env.store.put("other/file", b"outside")
    async with env.core(prefix="data/") as core:
        assert list(await readdir_names(core.fs)) == ["x"]
        fh = await open_path(core.fs, "x/file")
        assert await core.fs.read(fh, 0, 100) == b"inside"
        assert await core.fs.getxattr(ROOT_INODE, xattrs.URI) == b"s3://bucket/data/"


async def test_open_a_directory_is_refused(env):
    env.store.put("d/f", b"x")
    async with env.core() as core:
        d = await lookup_path(core.fs, "d")
        with pytest.raises(IsADirectory) as exc:
            await core.fs.open(d.ino)
        assert exc.value.errno == errno.EISDIR


async def test_xattr_names_per_kind(env):
    env.store.put("d/f", b"x")
    async with env.core() as core:
        assert await core.fs.listxattr(ROOT_INODE) == list(xattrs.ROOT_NAMES)
        d = await lookup_path(core.fs, "d")
        assert await core.fs.listxattr(d.ino) == list(xattrs.DIR_NAMES)
        f = await lookup_path(core.fs, "d/f")
        assert await core.fs.listxattr(f.ino) == list(xattrs.FILE_NAMES)


async def test_xattr_values(env):
    data = env.store.put("d/f", size=2 * CHUNK + 5, seed=3)
    async with env.core() as core:
        d = await lookup_path(core.fs, "d")
        f = await lookup_path(core.fs, "d/f")
        assert await core.fs.getxattr(d.ino, xattrs.URI) == b"s3://bucket/d/"
        assert await core.fs.getxattr(f.ino, xattrs.URI) == b"s3://bucket/d/f"
        etag = env.store.object("d/f").etag
        assert await core.fs.getxattr(f.ino, xattrs.ETAG) == etag.encode()
        assert await core.fs.getxattr(f.ino, xattrs.CHUNKS) == f"{CHUNK} ...".encode()
        assert await core.fs.getxattr(f.ino, xattrs.CACHED) == f"0 {len(data)}".encode()
        fh, _ = await core.fs.open(f.ino)
        await core.fs.read(fh, 2 * CHUNK, 5)  # the short last chunk only
        await settle(core)
        assert await core.fs.getxattr(f.ino, xattrs.CHUNKS) == f"{CHUNK} ..#".encode()
        assert await core.fs.getxattr(f.ino, xattrs.CACHED) == f"5 {len(data)}".encode()
        stats = xattrs.json.loads(await core.fs.getxattr(ROOT_INODE, xattrs.STATS))
        assert stats["gets"] == 1 and stats["bytes_fetched"] == 5


async def test_unknown_xattr_is_enodata(env):
    env.store.put("f", b"x")
    async with env.core() as core:
        f = await lookup_path(core.fs, "f")
        for ino, name in [(f.ino, "user.other"), (f.ino, xattrs.STATS), (ROOT_INODE, xattrs.ETAG)]:
            with pytest.raises(NoSuchAttribute) as exc:
                await core.fs.getxattr(ino, name)
            assert exc.value.errno == errno.ENODATA


async def test_statfs(env):
    async with env.core() as core:
        st = core.fs.statfs()
        assert st.block_size == IO_BLOCK_SIZE and st.name_max == 255 and st.blocks > 0


async def test_forgotten_inode_is_gone_but_open_file_keeps_it(env):
    env.store.put("f", b"content")
    env.store.put("g", b"other")
    async with env.core() as core:
        f = await core.fs.lookup(ROOT_INODE, "f")
        core.fs.forget(f.ino, 1)
        with pytest.raises(NotFound):
            await core.fs.getattr(f.ino)
        g = await core.fs.lookup(ROOT_INODE, "g")
        fh, _ = await core.fs.open(g.ino)
        core.fs.forget(g.ino, 1)  # the kernel forgets the name while the file is open
        assert (await core.fs.getattr(g.ino)).size == 5
        assert await core.fs.read(fh, 0, 10) == b"other"
        core.fs.release(fh)
        with pytest.raises(NotFound):
            await core.fs.getattr(g.ino)


async def test_deleted_object_stays_readable_attributes_while_open(env):
    env.store.put("f", b"will be deleted")
    async with env.core(metadata_ttl=0) as core:
        f = await core.fs.lookup(ROOT_INODE, "f")
        fh, _ = await core.fs.open(f.ino)
        assert await core.fs.read(fh, 0, 4) == b"will"
        env.store.delete("f")
        assert (await core.fs.getattr(f.ino)).size == len(b"will be deleted")
        core.fs.release(fh)
        with pytest.raises(NotFound):
            await core.fs.getattr(f.ino)


async def test_listings_are_cached_for_the_ttl(env):
    env.store.put("d/f", b"x")
    async with env.core(metadata_ttl=3600) as core:
        await lookup_path(core.fs, "d/f")
        listed = env.store.calls["list_dir"]
        env.store.put("d/new", b"y")
        for _ in range(5):
            await lookup_path(core.fs, "d/f")
        assert env.store.calls["list_dir"] == listed
        with pytest.raises(NotFound):
            await lookup_path(core.fs, "d/new")  # not seen until the listing expires
    async with env.core(metadata_ttl=0) as core:
        assert (await lookup_path(core.fs, "d/new")).size == 1


async def test_mtime_of_files_comes_from_the_store(env):
    env.store.put("f", b"x")
    async with env.core() as core:
        f = await lookup_path(core.fs, "f")
        assert f.mtime_ns >= int(FIRST_MTIME * 1e9)


async def test_concurrent_lookups_share_one_listing(env):
    env.store.put("d/f", b"x")
    gate = env.store.hold_list("")
    async with env.core() as core:
        results = []

        async def lookup():
            results.append((await core.fs.lookup(ROOT_INODE, "d")).ino)

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(lookup)
            await gate_reached(gate)
            await trio.testing.wait_all_tasks_blocked()
            gate.release()
        assert len(set(results)) == 1 and len(results) == 5
        assert env.store.calls["list_dir"] == 1


async def test_a_cancelled_lookup_does_not_fail_the_others_waiting_for_its_listing(env):
    for i in range(META_THREADS):
        env.store.put(f"busy{i}/f", b"x")
    env.store.put("d/f", b"x")
    env.store.put("d/g", b"y")
    gates = [env.store.hold_list(f"busy{i}/") for i in range(META_THREADS)]
    async with env.core() as core:
        await core.fs.lookup(ROOT_INODE, "d")  # the root listing is cached
        d = await core.fs.lookup(ROOT_INODE, "d")
        got = []

        async def first(task_status=trio.TASK_STATUS_IGNORED):
            with trio.CancelScope() as scope:
                task_status.started(scope)
                await core.fs.lookup(d.ino, "f")

        async def second():
            got.append((await core.fs.lookup(d.ino, "g")).size)

        async with trio.open_nursery() as nursery:
            for i in range(META_THREADS):  # every listing thread is busy
                nursery.start_soon(lookup_path, core.fs, f"busy{i}/f")
            for gate in gates:
                await gate_reached(gate)
            scope = await nursery.start(first)  # it will list d/ when a thread is free
            nursery.start_soon(second)  # and this one waits for that listing
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()  # the first lookup is interrupted before its listing ran
            await trio.testing.wait_all_tasks_blocked()
            for gate in gates:
                gate.release()
        assert got == [1]
