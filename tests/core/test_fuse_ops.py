"""The pyfuse3 adapter without a kernel: handlers called directly with a duck-typed ctx.

What is checked is what the kernel would get back: entry attributes, file info, bytes, and
``FUSEError`` with the right errno for every failure (an exception of another type escaping
a handler would end the mount).
"""

import errno
import os
import stat
from types import SimpleNamespace

import pyfuse3
import pytest

from rangefs.errors import Transient
from rangefs.fs import xattrs
from rangefs.fs.fuse_ops import FuseOperations
from rangefs.fs.inodes import ROOT_INODE
from tests.core.helpers import CHUNK, settle
from tests.support.readdir import read_dir

CTX = SimpleNamespace(uid=os.getuid(), gid=os.getgid(), pid=os.getpid(), umask=0o022)


def ops_for(core):
    return FuseOperations(core.fs)


async def fuse_errno(call):
    with pytest.raises(pyfuse3.FUSEError) as exc:
        await call
    return exc.value.errno


async def test_lookup_and_getattr_fill_entry_attributes(env):
    data = env.store.put("d/f", size=CHUNK + 3, seed=50)
    async with env.core(metadata_ttl=7.5) as core:
        ops = ops_for(core)
        d = await ops.lookup(ROOT_INODE, b"d", CTX)
        assert stat.S_ISDIR(d.st_mode) and d.st_nlink == 2
        f = await ops.lookup(d.st_ino, b"f", CTX)
        assert stat.S_ISREG(f.st_mode) and stat.S_IMODE(f.st_mode) == 0o444
        assert f.st_size == len(data) and f.st_blocks == -(-len(data) // 512)
        assert f.entry_timeout == f.attr_timeout == 7.5
        assert f.st_uid == CTX.uid and f.st_gid == CTX.gid
        again = await ops.getattr(f.st_ino, CTX)
        assert (again.st_ino, again.st_size, again.st_mtime_ns) == (
            f.st_ino,
            f.st_size,
            f.st_mtime_ns,
        )


async def test_lookup_errors(env):
    env.store.put("f", b"file")
    async with env.core() as core:
        ops = ops_for(core)
        f = await ops.lookup(ROOT_INODE, b"f", CTX)
        assert await fuse_errno(ops.lookup(f.st_ino, b"x", CTX)) == errno.ENOTDIR
        assert await fuse_errno(ops.getattr(424242, CTX)) == errno.ENOENT
        assert await fuse_errno(ops.opendir(f.st_ino, CTX)) == errno.ENOTDIR


@pytest.mark.parametrize(("negative", "expected"), [(None, 60.0), (5.0, 5.0), (0.0, 0.0)])
async def test_a_missing_name_is_a_negative_entry_the_kernel_may_keep(env, negative, expected):
    """ENOENT as a negative entry (inode 0) the kernel remembers for --negative-metadata-ttl
    (default: --metadata-ttl), so probes for names that do not exist stop reaching us."""
    async with env.core(metadata_ttl=60.0, negative_metadata_ttl=negative) as core:
        ops = ops_for(core)
        entry = await ops.lookup(ROOT_INODE, b"missing", CTX)
        assert entry.st_ino == 0 and entry.entry_timeout == expected
        assert core.stats.lookups == 1


async def test_open_read_release(env):
    data = env.store.put("f", size=3 * CHUNK, seed=51)
    async with env.core() as core:
        ops = ops_for(core)
        f = await ops.lookup(ROOT_INODE, b"f", CTX)
        info = await ops.open(f.st_ino, os.O_RDONLY, CTX)
        assert isinstance(info, pyfuse3.FileInfo) and not info.keep_cache
        got = await ops.read(info.fh, CHUNK - 5, 10)
        assert bytes(got) == data[CHUNK - 5 : CHUNK + 5]
        await ops.release(info.fh)
        assert await fuse_errno(ops.read(info.fh, 0, 10)) == errno.ENOENT
        second = await ops.open(f.st_ino, os.O_RDONLY, CTX)
        assert second.keep_cache  # unchanged object: the page cache stays valid


@pytest.mark.parametrize(
    "flags", [os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC, os.O_WRONLY | os.O_APPEND]
)
async def test_open_for_writing_is_erofs(env, flags):
    env.store.put("f", b"x")
    async with env.core() as core:
        ops = ops_for(core)
        f = await ops.lookup(ROOT_INODE, b"f", CTX)
        assert await fuse_errno(ops.open(f.st_ino, flags, CTX)) == errno.EROFS


async def test_open_a_directory_is_eisdir(env):
    env.store.put("d/f", b"x")
    async with env.core() as core:
        ops = ops_for(core)
        d = await ops.lookup(ROOT_INODE, b"d", CTX)
        assert await fuse_errno(ops.open(d.st_ino, os.O_RDONLY, CTX)) == errno.EISDIR


@pytest.mark.parametrize(
    "handler",
    [
        "setattr",
        "create",
        "write",
        "unlink",
        "rmdir",
        "mkdir",
        "mknod",
        "rename",
        "symlink",
        "link",
        "setxattr",
        "removexattr",
    ],
)
async def test_every_write_handler_is_erofs(env, handler):
    async with env.core() as core:
        ops = ops_for(core)
        assert await fuse_errno(getattr(ops, handler)(ROOT_INODE, b"name", CTX)) == errno.EROFS


async def test_xattrs_through_the_adapter(env):
    env.store.put("f", size=CHUNK, seed=52)
    async with env.core() as core:
        ops = ops_for(core)
        f = await ops.lookup(ROOT_INODE, b"f", CTX)
        names = await ops.listxattr(f.st_ino, CTX)
        assert names == [n.encode() for n in xattrs.FILE_NAMES]
        assert await ops.getxattr(f.st_ino, xattrs.URI.encode(), CTX) == b"s3://bucket/f"
        etag = await ops.getxattr(f.st_ino, xattrs.ETAG.encode(), CTX)
        assert etag == env.store.object("f").etag.encode()
        assert await fuse_errno(ops.getxattr(f.st_ino, b"user.nope", CTX)) == errno.ENODATA
        assert await fuse_errno(ops.getxattr(ROOT_INODE, b"security.selinux", CTX)) == (
            errno.ENODATA
        )


async def test_statfs_through_the_adapter(env):
    async with env.core() as core:
        st = await ops_for(core).statfs(CTX)
        assert st.f_bsize == st.f_frsize == core.fs.statfs().block_size
        assert st.f_namemax == 255 and st.f_bfree == st.f_bavail == 0


async def test_estale_and_eio_reach_the_kernel_as_errno(env):
    data = env.store.put("f", size=2 * CHUNK, seed=53)
    async with env.core(metadata_ttl=0) as core:
        ops = ops_for(core)
        f = await ops.lookup(ROOT_INODE, b"f", CTX)
        info = await ops.open(f.st_ino, os.O_RDONLY, CTX)
        assert bytes(await ops.read(info.fh, 0, 10)) == data[:10]
        await settle(core)
        env.store.put("f", size=2 * CHUNK, seed=54)
        assert await fuse_errno(ops.read(info.fh, CHUNK, 10)) == errno.ESTALE
        fresh = await ops.open(f.st_ino, os.O_RDONLY, CTX)
        env.store.fail_transient("f", at=CHUNK)
        assert await fuse_errno(ops.read(fresh.fh, CHUNK, 10)) == errno.EIO


async def test_an_unexpected_exception_is_eio_and_the_adapter_keeps_serving(env):
    env.store.put("d/f", b"fine")
    env.store.fail_list("d/", lambda: KeyError("a bug in listing"), times=1)
    async with env.core() as core:
        ops = ops_for(core)
        d = await ops.lookup(ROOT_INODE, b"d", CTX)
        assert await fuse_errno(ops.lookup(d.st_ino, b"f", CTX)) == errno.EIO
        f = await ops.lookup(d.st_ino, b"f", CTX)  # the next request is served
        assert f.st_size == 4


async def test_a_transient_listing_error_is_retried_below_the_adapter(env):
    env.store.put("f", b"x")
    env.store.fail_list("", lambda: Transient("injected", "http_503"), times=1)
    async with env.core() as core:
        f = await ops_for(core).lookup(ROOT_INODE, b"f", CTX)
        assert f.st_size == 1


async def test_forget_through_the_adapter_drops_the_inode(env):
    env.store.put("f", b"x")
    async with env.core() as core:
        ops = ops_for(core)
        f = await ops.lookup(ROOT_INODE, b"f", CTX)
        await ops.lookup(ROOT_INODE, b"f", CTX)
        await ops.forget([(f.st_ino, 1)])
        assert (await ops.getattr(f.st_ino, CTX)).st_size == 1  # one lookup still held
        await ops.forget([(f.st_ino, 1)])
        assert await fuse_errno(ops.getattr(f.st_ino, CTX)) == errno.ENOENT


async def test_readdir_sends_what_lookup_answers_and_gives_back_what_did_not_fit(env, monkeypatch):
    """The adapter refills one reply per name with only what changed (a time is set only
    when it differs from the last name's): each name must still carry exactly what lookup
    answers. The name the kernel's full buffer refused is given back, not left in the
    inode table."""
    env.store.put("d/a/x", b"1")
    env.store.put("d/b/y", b"2")  # directories a and b share their time
    env.store.put("d/c", b"333")
    env.store.put("d/e", size=CHUNK + 1)
    fields = ("st_ino", "st_mode", "st_nlink", "st_size", "st_blocks", "st_atime_ns",
              "st_mtime_ns", "st_ctime_ns", "st_uid", "st_gid", "st_blksize")  # fmt: skip
    sent = []

    def reply(room, name, attr, next_id):  # the token: how many names the buffer holds
        if len(sent) == room:
            return False
        sent.append((name, next_id, tuple(getattr(attr, f) for f in fields)))
        return True

    monkeypatch.setattr(pyfuse3, "readdir_reply", reply)
    async with env.core() as core:
        ops = ops_for(core)
        d = await ops.lookup(ROOT_INODE, b"d", CTX)
        fh = await ops.opendir(d.st_ino, CTX)
        await ops.readdir(fh, 0, 4)
        assert [name for name, _, _ in sent] == [b".", b"..", b"a", b"b"]
        assert len(core.fs.inodes) == 4, "root, d, a, b: c was refused and given back"
        await ops.readdir(fh, sent[-1][1], 6)
        await ops.releasedir(fh)
        assert [(name, next_id) for name, next_id, _ in sent] == [
            (b".", 1), (b"..", 2), (b"a", 3), (b"b", 4), (b"c", 5), (b"e", 6),
        ]  # fmt: skip
        dot = tuple(getattr(d, f) for f in fields)  # "." and "..": the directory's attributes
        expected = [dot, (ROOT_INODE, *dot[1:])]
        for name, _, _ in sent[2:]:
            e = await ops.lookup(d.st_ino, name, CTX)
            expected.append(tuple(getattr(e, f) for f in fields))
        assert [values for _, _, values in sent] == expected
        assert sent[2][2][6] == sent[3][2][6] != sent[4][2][6]  # a, b share a time; c not


async def test_opendir_and_releasedir_through_the_adapter(env):
    env.store.put("d/a", b"1")
    env.store.put("d/b", b"2")
    async with env.core() as core:
        ops = ops_for(core)
        d = await ops.lookup(ROOT_INODE, b"d", CTX)
        fh = await ops.opendir(d.st_ino, CTX)
        # readdir needs the kernel's token; the listing behind it is the Filesystem's.
        assert [e.name for e in await read_dir(core.fs, fh, 0)] == [".", "..", "a", "b"]
        await ops.releasedir(fh)
        assert list(await read_dir(core.fs, fh, 0)) == []


async def test_flush_is_not_implemented_so_the_kernel_stops_sending_it(env):
    """Nothing to flush on a read-only mount: ENOSYS once and the kernel sends no more FLUSH
    (fs/fuse/file.c, ``no_flush``), so a close costs no round trip (rsync closes each file)."""
    env.store.put("f", b"x")
    async with env.core() as core:
        ops = ops_for(core)
        f = await ops.lookup(ROOT_INODE, b"f", CTX)
        info = await ops.open(f.st_ino, os.O_RDONLY, CTX)
        assert await fuse_errno(ops.flush(info.fh)) == errno.ENOSYS
