"""The FUSE-free core: lookup, getattr, readdir, open, read, xattrs and statfs.

It returns plain dataclasses and raises :mod:`rangefs.errors` exceptions; the pyfuse3
adapter only translates. An open file pins the object version (key, ETag, size) it was
opened with: every read of that handle is served from that version or fails with ESTALE,
never a mix of two versions.
"""

import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from rangefs import chunks
from rangefs.cache.async_cache import AsyncChunkCache
from rangefs.cache.metadata_index import DirRow, IndexFailed, ListingInfo
from rangefs.config import Config
from rangefs.engine.reader import ChunkReader, Prefetch, ReadStream
from rangefs.errors import IsADirectory, NoSuchAttribute, NotADirectory, NotFound
from rangefs.fs import xattrs
from rangefs.fs.inodes import ROOT_INODE, InodeTable
from rangefs.fs.namespace import Entry, Namespace, join, split
from rangefs.fs.pins import PinKeeper
from rangefs.fs.walk import Walks
from rangefs.remote.store import ObjectVersion
from rangefs.stats import Stats

log = logging.getLogger(__name__)

BLOCK_SIZE = 512
IO_BLOCK_SIZE = 1024 * 1024  # st_blksize: cp and friends size their buffers by it


class Attributes(NamedTuple):
    """What getattr and lookup answer (readdir hands out :data:`Listed` items)."""

    ino: int
    is_dir: bool
    size: int
    mtime_ns: int
    mode: int
    nlink: int
    uid: int
    gid: int
    blksize: int
    blocks: int


class Common(NamedTuple):
    """The attributes every name shares, left out of :data:`Listed`."""

    uid: int
    gid: int
    blksize: int


# One name readdir hands out: (name, next_id, ino, mode, nlink, size, blocks, mtime_ns), the
# fields of :class:`Attributes` that differ between names (:class:`Common` has the rest). A
# plain tuple: a directory of a million names makes a million, and a named tuple costs
# several times more to make.
Listed = tuple[str, int, int, int, int, int, int, int]

DOT_NAMES = (".", "..")


READDIR_PAGE = 1024  # entries read from the index at once for an open directory (~150 KB)


@dataclass(slots=True)
class DirHandle:
    """An open directory: its own and its parent's inode, the listing (index generation) at
    opendir, which stays readable until releasedir, and the page of it read last."""

    ino: int
    parent_ino: int
    entry: Entry
    listing: ListingInfo
    page_start: int = 0  # position in the listing of page[0]
    page: list[DirRow] = field(default_factory=list)


@dataclass
class OpenFile:
    ino: int
    path: str
    version: ObjectVersion
    stream: ReadStream = field(default_factory=ReadStream)


@dataclass(frozen=True, slots=True)
class FsStats:
    block_size: int
    blocks: int
    files: int
    name_max: int


class Filesystem:
    def __init__(
        self,
        config: Config,
        namespace: Namespace,
        reader: ChunkReader,
        cache: AsyncChunkCache,
        stats: Stats,
        pins: PinKeeper,
    ) -> None:
        self.config = config
        self.namespace = namespace
        self.reader = reader
        self.cache = cache
        self.pins = pins
        self.stats = stats
        self.inodes = InodeTable()
        self._handles: dict[int, OpenFile] = {}
        self._dir_handles: dict[int, DirHandle] = {}
        self._fh = itertools.count(1)
        self._last_version: dict[str, ObjectVersion] = {}  # per key, the last version opened
        self._dir_mode = 0o040000 | config.dir_mode
        self._file_mode = 0o100000 | config.file_mode
        self._uid, self._gid = config.uid, config.gid
        self.common = Common(config.uid, config.gid, IO_BLOCK_SIZE)
        self.walks = Walks(stats, config.chunk_size, namespace.files_after)

    def _attributes(self, ino: int, entry: Entry) -> Attributes:
        """As :meth:`_listed` hands them out: the same modes, nlink and blocks."""
        if entry.is_dir:
            return Attributes(
                ino, True, 0, int(entry.mtime * 1e9), self._dir_mode, 2, self._uid, self._gid,
                IO_BLOCK_SIZE, 0,
            )  # fmt: skip
        size = entry.size
        return Attributes(
            ino, False, size, int(entry.mtime * 1e9), self._file_mode, 1, self._uid, self._gid,
            IO_BLOCK_SIZE, -(-size // BLOCK_SIZE),
        )  # fmt: skip

    async def lookup(self, parent_ino: int, name: str) -> Attributes:
        self.stats.lookups += 1
        parent = self.inodes.path_of(parent_ino)
        if name == ".":
            path = parent
        elif name == "..":
            path = parent.rpartition("/")[0]
        else:
            path = join(parent, name)
        entry = await self.namespace.entry(path)
        return self._attributes(self.inodes.take(path), entry)

    def _version(self, path: str, entry: Entry) -> ObjectVersion:
        return ObjectVersion(
            self.namespace.store.bucket,
            self.namespace.key_of(path),
            entry.etag,
            entry.size,
            entry.version_id,
        )

    def _open_handle(self, ino: int) -> OpenFile | None:
        """An open file of ``ino``: its pinned version outlives the listing entry."""
        return next((h for h in self._handles.values() if h.ino == ino), None)

    async def getattr(self, ino: int) -> Attributes:
        path = self.inodes.path_of(ino)
        handle = self._open_handle(ino)
        try:
            entry = await self.namespace.entry(path)
        except NotFound:
            if handle is None:
                raise
            entry = Entry(path.rpartition("/")[2], False, handle.version.size)
        return self._attributes(ino, entry)

    def forget(self, ino: int, count: int) -> None:
        self.inodes.forget(ino, count)

    async def opendir(self, ino: int) -> int:
        path = self.inodes.path_of(ino)
        entry = await self.namespace.entry(path)
        if not entry.is_dir:
            raise NotADirectory(path)
        listing = await self.namespace.listing(path)
        parent_ino = self.inodes.ino_for(path.rpartition("/")[0]) if path else ROOT_INODE
        fh = next(self._fh)
        self.namespace.index.pin(listing.id)
        self._dir_handles[fh] = DirHandle(ino, parent_ino, entry, listing)
        return fh

    async def _page_at(self, handle: DirHandle, first: int) -> int:
        """Makes ``handle.page`` hold position ``first`` of the listing (if it exists) and
        returns its index in the page: the page is read from the index after the last
        page's last name (a cursor), or at an offset after a seek."""
        end = handle.page_start + len(handle.page)
        if first >= handle.listing.count:
            return len(handle.page)
        if handle.page_start <= first < end:
            return first - handle.page_start
        index, listing = self.namespace.index, handle.listing.id
        if first == end and handle.page:
            page = await index.entries(listing, handle.page[-1][0], READDIR_PAGE)
        else:
            page = await index.entries_at(listing, first, READDIR_PAGE)
        handle.page_start, handle.page = first, page
        return 0

    async def readdir(self, fh: int, start_id: int) -> Iterator[Listed]:
        """Names after offset ``start_id``: ``.`` (offset 1), ``..`` (offset 2), then the
        listing taken at opendir (offsets 3...), so paging is stable. At most a page is read
        from the index per call; the iterator is lazy: the caller stops when the kernel's
        buffer is full, and no inode is made for a name never offered.

        Each name but ``.`` and ``..`` is handed out with a kernel reference on its inode
        (readdirplus links it, as a lookup would; the kernel does not link ``.`` and ``..``:
        fs/fuse/readdir.c, ``fuse_direntplus_link``): give back the one the kernel refused
        with :meth:`readdir_refused`. ``.`` carries the directory's inode, ``..`` its
        parent's (the root's ``..`` is the root); both have the directory's attributes.
        """
        handle = self._dir_handles.get(fh)
        if handle is None:
            return iter(())
        first = max(start_id - len(DOT_NAMES), 0)
        at = await self._page_at(handle, first)
        return self._listed(handle, start_id, first, handle.page, at)

    def _listed(
        self, handle: DirHandle, start_id: int, first: int, page: list[DirRow], at: int
    ) -> Iterator[Listed]:
        """The loop runs once per name listed: plain tuples, locals, one inode call."""
        dir_mode, file_mode = self._dir_mode, self._file_mode
        if start_id < len(DOT_NAMES):
            mtime_ns = int(handle.entry.mtime * 1e9)
            dots = ((".", handle.ino), ("..", handle.parent_ino))
            for next_id, (name, ino) in enumerate(dots[start_id:], start_id + 1):
                yield name, next_id, ino, dir_mode, 2, 0, 0, mtime_ns
        below = join(self.inodes.path_of(handle.ino), "")
        take = self.inodes.take
        rows = itertools.islice(page, at, None)
        start = first + len(DOT_NAMES) + 1
        for next_id, (name, is_dir, size, mtime_ns) in enumerate(rows, start):
            if is_dir:
                yield name, next_id, take(below + name), dir_mode, 2, 0, 0, mtime_ns
            else:
                blocks = -(-size // BLOCK_SIZE)
                yield name, next_id, take(below + name), file_mode, 1, size, blocks, mtime_ns

    def readdir_refused(self, item: Listed) -> None:
        """The kernel's buffer was full before ``item``: its reference goes back (and its
        inode, if nothing else holds it; a directory of a million keys would otherwise leave
        one behind per request)."""
        if item[0] not in DOT_NAMES:
            self.inodes.forget(item[2], 1)

    async def releasedir(self, fh: int) -> None:
        handle = self._dir_handles.pop(fh, None)
        if handle is not None:
            await self.namespace.index.unpin(handle.listing.id)

    async def open(self, ino: int) -> tuple[int, bool]:
        """Opens a file at its current version; returns (fh, keep_cache).

        ``keep_cache`` is true only when the version (ETag, or versionId on a ``--version-at``
        mount) is the one the previous open saw, so the kernel's page cache is reused for an
        unchanged object and dropped for a changed one. A versionId names bytes that never
        change: its chunks are never bound to an ETag nor dropped for a newer one. A pinned
        key may be read at an older version while offline (:class:`PinKeeper`).
        """
        path = self.inodes.path_of(ino)
        entry = await self.namespace.entry(path)
        if entry.is_dir:
            raise IsADirectory(path)
        version = await self.pins.version_to_serve(self._version(path, entry))
        previous = self._last_version.get(version.key)
        # Wrong bytes may sit in the page cache after a failed proof: drop it on this open.
        suspect = self.reader.verifier.take_suspect(version.id)
        same = previous is not None and previous.id == version.id
        if not same:
            self._last_version[version.key] = version
            if not version.version_id:
                await self.cache.bind_etag(version.id)
            if previous is not None:
                await self.reader.forget_version(previous)
        keep_cache = same and not suspect
        fh = next(self._fh)
        self._handles[fh] = OpenFile(ino, path, version)
        self.inodes.opened(ino)
        await self._walk(path, version)
        return fh, keep_cache

    async def _walk(self, path: str, version: ObjectVersion) -> None:
        """Tells the walk detector about an open and fetches the files it says are next
        (:mod:`rangefs.fs.walk`): not while the server pushes back or caching is paused, and
        within half the global budget of bytes ahead, so open files keep their windows."""
        directory, name = split(path)
        listing = self.namespace.held(directory)
        if listing is None:
            return
        budget = self.reader.budget
        room = 0
        if not budget.pushed_back and not self.cache.paused:
            room = min(budget.room(excluding=self.walks), budget.max_ahead // 2)
        try:
            wanted = await self.walks.opened(directory, name, listing, room=room)
        except IndexFailed as exc:  # read-ahead is a bonus: the open goes on without it
            log.warning("read-ahead across files in /%s stopped: %s", directory, exc)
            return
        versions = [self._version(join(directory, entry.name), entry) for entry in wanted]
        self.pins.look_ahead(versions)
        batch: list[Prefetch] = []
        for entry, ahead in zip(wanted, versions, strict=True):
            bind = False
            if ahead.key not in self._last_version:
                # Never opened here, so nothing of it is in the page cache: its open will
                # find this version already seen (and bound to its ETag, in the background).
                self._last_version[ahead.key] = ahead
                bind = not ahead.version_id
            batch.append((ahead, min(entry.size, self.config.chunk_size), bind))
        if batch:
            self.reader.prefetch(batch)
        if version.size == 0:  # the kernel sends no read for an empty file
            self.walks.finished(directory, name)

    async def read(self, fh: int, offset: int, size: int) -> bytes | memoryview:
        handle = self._handles.get(fh)
        if handle is None:
            raise NotFound(f"file handle {fh}")
        data = await self.reader.read(handle.version, offset, size, handle.stream)
        if offset + size >= handle.version.size:
            self.walks.finished(*split(handle.path))
        return data

    def release(self, fh: int) -> None:
        handle = self._handles.pop(fh, None)
        if handle is not None:
            self.inodes.closed(handle.ino)

    def statfs(self) -> FsStats:
        return FsStats(block_size=IO_BLOCK_SIZE, blocks=2**40, files=2**32, name_max=255)

    async def _version_of(self, ino: int) -> ObjectVersion | None:
        path = self.inodes.path_of(ino)
        entry = await self.namespace.entry(path)
        if entry.is_dir:
            return None
        handle = self._open_handle(ino)
        if handle is not None:
            return handle.version
        return self._version(path, entry)

    async def listxattr(self, ino: int) -> list[str]:
        if ino == 1:
            return list(xattrs.ROOT_NAMES)
        version = await self._version_of(ino)
        if version is None:
            return list(xattrs.DIR_NAMES)
        return list(xattrs.VERSIONED_FILE_NAMES if version.version_id else xattrs.FILE_NAMES)

    async def getxattr(self, ino: int, name: str) -> bytes:
        if name not in await self.listxattr(ino):
            raise NoSuchAttribute(name)
        path = self.inodes.path_of(ino)
        if name == xattrs.URI:
            key = self.namespace.key_of(path) if path else self.namespace.prefix
            if path and (await self.namespace.entry(path)).is_dir:
                key += "/"
            return f"s3://{self.namespace.store.bucket}/{key}".encode()
        if name == xattrs.STATS:
            return xattrs.encode_stats(self.stats.as_dict())
        if name == xattrs.ONLINE:
            return xattrs.encode_online(self.namespace.store.reachability.online)
        if name == xattrs.PINS:
            pins = await self.cache.pin_summary()
            limit, cache_dir = self.config.pin_bytes, str(self.config.cache_dir)
            return xattrs.encode_pins(pins.keys, pins.bytes, pins.stored, limit, cache_dir)
        version = await self._version_of(ino)
        assert version is not None
        if name == xattrs.PINNED:
            return xattrs.encode_pinned(await self.pins.is_pinned(version))
        if name == xattrs.ETAG:
            return version.etag.encode()
        if name == xattrs.VERSION:
            return version.version_id.encode()
        if name == xattrs.VERIFIED:
            proof, proven = await self.reader.verifier.status(version)
            return xattrs.encode_verified(proof.kind, proven, proof.detail)
        chunk_size = self.config.chunk_size
        count = chunks.chunk_count(version.size, chunk_size)
        cached = await self.cache.cached_map(version.id, chunk_size, count)
        if name == xattrs.CHUNKS:
            return xattrs.encode_chunks(chunk_size, cached)
        nbytes = sum(
            chunks.chunk_length(i, version.size, chunk_size) for i, c in enumerate(cached) if c
        )
        return xattrs.encode_cached(nbytes, version.size)
