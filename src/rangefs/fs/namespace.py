"""The directory tree seen through ListObjectsV2 with delimiter ``/``, kept in the metadata
index (:mod:`rangefs.cache.metadata_index`) and trusted for a TTL counted from the listing.

Keys become files, common prefixes and "directory marker" objects (keys ending in ``/``)
become directories. A key that cannot be a POSIX name — an empty, ``.`` or ``..``
component, a component over 255 bytes, a NUL — is hidden: never a crash, never a path
outside the mount. When a name is both an object and a prefix (``a`` and ``a/b``), the
directory wins and the object ``a`` is hidden (as in mountpoint-s3): hiding a directory
would hide everything below it.
"""

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TypeVar

import trio

from rangefs.cache.metadata_index import AsyncMetadataIndex, Entry, IndexFailed, ListingInfo, Scope
from rangefs.errors import NotADirectory, NotFound, Unreachable
from rangefs.remote.store import AsyncStore, Listing

log = logging.getLogger(__name__)

K = TypeVar("K")
V = TypeVar("V")

NAME_MAX = 255
HOT_DIRS = 4096  # listings whose place in the index is remembered in RAM (a few hundred B each)
HOT_ENTRIES = 8192  # entries remembered in RAM for repeated lookups and stats
LIST_ATTEMPTS = 2  # a listing whose index was rebuilt under it is listed once more

__all__ = ["Entry", "Namespace", "join", "split", "valid_name"]


@dataclass
class _Pending:
    done: trio.Event = field(default_factory=trio.Event)
    result: ListingInfo | None = None
    error: Exception | None = None


class _Lru(OrderedDict[K, V]):
    """At most ``size`` items; :meth:`remember` drops the least recently remembered."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def remember(self, key: K, value: V) -> None:
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.size:
            self.popitem(last=False)


def valid_name(name: str) -> bool:
    return (
        name not in ("", ".", "..")
        and "\0" not in name
        and len(name.encode("utf-8", "surrogatepass")) <= NAME_MAX
    )


def join(dir_path: str, name: str) -> str:
    return f"{dir_path}/{name}" if dir_path else name


def split(path: str) -> tuple[str, str]:
    head, _, tail = path.rpartition("/")
    return head, tail


class Namespace:
    """Directories as listings in the metadata index; RAM holds only small hot state.

    A listing is fresh for ``ttl`` seconds after it was listed, whichever process listed it
    (the time is in the index, so a remount within the TTL lists nothing). Entries are read
    from the index by name or by page, never all at once: a directory of a million keys
    costs a million rows on disk, not in memory.
    """

    def __init__(
        self,
        store: AsyncStore,
        index: AsyncMetadataIndex,
        scope: Scope,
        prefix: str,
        ttl: float,
    ) -> None:
        self.store = store
        self.index = index
        self.scope = scope
        self.prefix = prefix
        self.ttl = ttl
        self.mount_time = time.time()
        self._dirs: _Lru[str, ListingInfo] = _Lru(HOT_DIRS)
        self._entries: _Lru[tuple[int, str], Entry | None] = _Lru(HOT_ENTRIES)
        self._pending: dict[str, _Pending] = {}

    def key_of(self, path: str) -> str:
        return self.prefix + path

    def dir_prefix(self, path: str) -> str:
        return self.prefix + path + "/" if path else self.prefix

    def _fresh(self, listing: ListingInfo | None) -> bool:
        return listing is not None and listing.fresh(self.ttl)

    async def listing(self, path: str) -> ListingInfo:
        """The listing of directory ``path``: from RAM or the index while fresh, else listed
        again; concurrent callers share one listing request.

        If the caller that went to list is cancelled before it got an answer, the others
        waiting for it try again (one of them lists) rather than fail with nothing.
        """
        while True:
            cached = self._dirs.get(path)
            if cached is not None and self._fresh(cached):
                return cached
            pending = self._pending.get(path)
            if pending is None:
                pending = _Pending()
                self._pending[path] = pending
                try:
                    pending.result = await self._load(path)
                    self._dirs.remember(path, pending.result)
                except Exception as exc:
                    pending.error = exc
                finally:
                    del self._pending[path]
                    pending.done.set()
            else:
                await pending.done.wait()
            if pending.error is not None:
                raise pending.error
            if pending.result is not None:
                return pending.result

    async def _load(self, path: str) -> ListingInfo:
        """The index's listing while fresh, else a new one from S3. While S3 cannot be
        reached, the index's listing is served however old it is (the store refuses at once
        while offline, so that costs no request); a directory never listed fails (EIO)."""
        stored = await self.index.listing(self.scope, self.dir_prefix(path))
        if self._fresh(stored):
            assert stored is not None
            return stored
        for attempt in range(LIST_ATTEMPTS):
            try:
                return await self._list(path)
            except Unreachable:
                if stored is None:
                    raise
                return stored
            except IndexFailed as exc:
                if attempt + 1 == LIST_ATTEMPTS:
                    raise
                log.warning("listing s3://%s/%s again: %s", self.store.bucket, path, exc)
        raise AssertionError("unreachable")

    async def _list(self, path: str) -> ListingInfo:
        """Lists ``path`` from S3 into a pending generation of the index, page by page, and
        makes it current when the last page is in."""
        prefix = self.dir_prefix(path)
        base = len(prefix)
        hidden = 0
        newest = self.mount_time

        async def store_page(page: Listing) -> None:
            nonlocal hidden, newest
            if page.marker is not None:  # the key equal to the prefix sorts first: page 1
                newest = page.marker.mtime
            entries: list[Entry] = []
            for sub in page.prefixes:
                name = sub[base:-1]
                if valid_name(name):
                    entries.append(Entry(name, True, mtime=newest))
                else:
                    hidden += 1
            for obj in page.objects:
                name = obj.key[base:]
                if valid_name(name):
                    entries.append(
                        Entry(name, False, obj.size, obj.mtime, obj.etag, obj.version_id)
                    )
                else:
                    hidden += 1
            hidden += await self.index.add(pending, entries)

        pending = await self.index.begin(self.scope, prefix)
        try:
            await self.store.list_dir_pages(prefix, store_page)
            info = await self.index.commit(pending, newest, hidden)
        except BaseException:
            await self.index.abandon(pending)
            raise
        if hidden:
            log.info(
                "listing s3://%s/%s: %d keys hidden (invalid names or shadowed by a directory)",
                self.store.bucket,
                prefix,
                hidden,
            )
        return info

    def held(self, path: str) -> ListingInfo | None:
        """The listing of directory ``path`` held in RAM (the one its last lookup used),
        fresh or not, without asking the index or S3: read-ahead across files works from
        what was listed and sends no LIST of its own."""
        return self._dirs.get(path)

    async def files_after(self, listing: int, after: str, limit: int) -> list[Entry]:
        """The next regular files of a listing after ``after``, from the index, remembered
        in RAM (a reader walking the directory opens them next: no index read then)."""
        page = await self.index.files(listing, after, limit)
        for entry in page:
            self._entries.remember((listing, entry.name), entry)
        return page

    async def child(self, listing: ListingInfo, name: str) -> Entry | None:
        """The entry ``name`` of a listing, from RAM if it was asked for lately."""
        key = (listing.id, name)
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        entry = await self.index.entry(listing.id, name)
        self._entries.remember(key, entry)
        return entry

    async def entry(self, path: str) -> Entry:
        """The entry of ``path``; the root is always a directory."""
        if path == "":
            return Entry("", True, mtime=self.mount_time)
        parent, name = split(path)
        parent_entry = await self.entry(parent) if parent else None
        if parent_entry is not None and not parent_entry.is_dir:
            raise NotADirectory(path)
        while True:
            listing = await self.listing(parent)
            found = await self.child(listing, name)
            if found is not None:
                return found
            if not await self._replaced(parent, listing):
                raise NotFound(path)

    async def _replaced(self, path: str, listing: ListingInfo) -> bool:
        """True if ``listing`` is no longer the current one of ``path`` (listed again here
        or by another mount sharing the index): then it is forgotten, and a miss in it
        proves nothing."""
        current = await self.index.listing(self.scope, self.dir_prefix(path))
        if current is None or current.id == listing.id:
            return False
        if self._dirs.get(path) == listing:
            del self._dirs[path]
        return True
