"""The pyfuse3 adapter: each handler translates one request to :class:`Filesystem` and back.

Errors become errno here and only here: a :class:`RangefsError` carries its errno; anything
else is a bug, logged once with the operation, and answered with EIO — an exception escaping
a pyfuse3 handler would end the mount.
"""

import errno
import functools
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

import pyfuse3

from rangefs.errors import NotFound, RangefsError, ReadOnly
from rangefs.fs.filesystem import Attributes, Filesystem

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")
Handler = Callable[Concatenate["FuseOperations", P], Coroutine[Any, Any, T]]
WRITE_OPERATIONS = ("setattr", "create", "write", "unlink", "rmdir", "mkdir", "mknod", "rename",
                    "symlink", "link", "setxattr", "removexattr")  # fmt: skip
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
FS_ENCODING, FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()  # os.fsencode


def boundary(fn: Handler[P, T]) -> Handler[P, T]:
    @functools.wraps(fn)
    async def handler(self: "FuseOperations", *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(self, *args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except RangefsError as exc:
            raise pyfuse3.FUSEError(exc.errno) from None
        except Exception:
            log.exception("unexpected error in %s%r", fn.__name__, args[:2])
            raise pyfuse3.FUSEError(errno.EIO) from None

    return handler


def refuse_write(name: str) -> Callable[..., Coroutine[Any, Any, None]]:
    """A write handler: refused with EROFS, through the same boundary as every error."""

    async def handler(self: "FuseOperations", *args: Any) -> None:
        raise ReadOnly(name)

    handler.__name__ = name
    return boundary(handler)


class FuseOperations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, fs: Filesystem) -> None:
        super().__init__()
        self.fs = fs
        self.ttl = fs.config.metadata_ttl
        negative = fs.config.negative_metadata_ttl
        self.negative_ttl = self.ttl if negative is None else negative

    def _blank(self) -> pyfuse3.EntryAttributes:
        """Entry attributes with what is the same for every name: timeouts and such."""
        e = pyfuse3.EntryAttributes()
        e.generation = 0
        e.entry_timeout = self.ttl
        e.attr_timeout = self.ttl
        e.st_rdev = 0
        return e

    def _entry(self, attr: Attributes) -> pyfuse3.EntryAttributes:
        return self._fill(self._blank(), attr)

    @staticmethod
    def _fill(e: pyfuse3.EntryAttributes, attr: Attributes) -> pyfuse3.EntryAttributes:
        e.st_ino = attr.ino
        e.st_mode = attr.mode
        e.st_nlink = attr.nlink
        e.st_uid = attr.uid
        e.st_gid = attr.gid
        e.st_size = attr.size
        e.st_blksize = attr.blksize
        e.st_blocks = attr.blocks
        e.st_atime_ns = e.st_mtime_ns = e.st_ctime_ns = attr.mtime_ns
        return e

    @boundary
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: Any = None
    ) -> pyfuse3.EntryAttributes:
        try:
            return self._entry(await self.fs.lookup(parent_inode, os.fsdecode(name)))
        except NotFound:
            # A negative entry (inode 0): the kernel answers ENOENT itself until it expires.
            e = pyfuse3.EntryAttributes()
            e.st_ino = 0
            e.entry_timeout = self.negative_ttl
            return e

    @boundary
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return self._entry(await self.fs.getattr(inode))

    @boundary
    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for inode, count in inode_list:
            self.fs.forget(inode, count)

    @boundary
    async def opendir(self, inode: int, ctx: Any) -> int:
        return await self.fs.opendir(inode)

    @boundary
    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        """One reply object, refilled for each name with only what differs (readdir_reply
        copies it): setting a field is most of the cost of a name, a time the dearest."""
        fs, send = self.fs, pyfuse3.readdir_reply
        reply, mtime_ns = self._blank(), None
        reply.st_uid, reply.st_gid, reply.st_blksize = fs.common
        for item in await fs.readdir(fh, start_id):
            (name, next_id, reply.st_ino, reply.st_mode, reply.st_nlink, reply.st_size,
             reply.st_blocks, mtime) = item  # fmt: skip
            if mtime != mtime_ns:  # names listed together mostly share their time
                mtime_ns = reply.st_atime_ns = reply.st_mtime_ns = reply.st_ctime_ns = mtime
            if not send(token, name.encode(FS_ENCODING, FS_ERRORS), reply, next_id):
                fs.readdir_refused(item)
                return

    @boundary
    async def releasedir(self, fh: int) -> None:
        await self.fs.releasedir(fh)

    @boundary
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        if flags & WRITE_FLAGS:
            raise ReadOnly(f"open for writing: inode {inode}")
        fh, keep_cache = await self.fs.open(inode)
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep_cache)

    @boundary
    async def read(self, fh: int, off: int, size: int) -> bytes:
        # pyfuse3 sends any buffer (a memoryview spares a copy); its stub says bytes.
        return await self.fs.read(fh, off, size)  # type: ignore[return-value]

    @boundary
    async def release(self, fh: int) -> None:
        self.fs.release(fh)

    @boundary
    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        st = self.fs.statfs()
        out = pyfuse3.StatvfsData()
        out.f_bsize = out.f_frsize = st.block_size
        out.f_blocks = st.blocks
        out.f_bfree = out.f_bavail = 0
        out.f_files = st.files
        out.f_ffree = out.f_favail = 0
        out.f_namemax = st.name_max
        return out

    @boundary
    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        return await self.fs.getxattr(inode, os.fsdecode(name))

    @boundary
    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        return [os.fsencode(n) for n in await self.fs.listxattr(inode)]


# pyfuse3 calls handlers by name; each write operation gets the same refusal.
for _name in WRITE_OPERATIONS:
    setattr(FuseOperations, _name, refuse_write(_name))
