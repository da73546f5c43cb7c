"""The directory tree seen through ListObjectsV2 with delimiter ``/``, cached with a TTL.

Keys become files, common prefixes and "directory marker" objects (keys ending in ``/``)
become directories. A key that cannot be a POSIX name — an empty, ``.`` or ``..``
component, a component over 255 bytes, a NUL — is hidden: never a crash, never a path
outside the mount. When a name is both an object and a prefix (``a`` and ``a/b``), the
directory wins and the object ``a`` is hidden (as in mountpoint-s3): hiding a directory
would hide everything below it.
"""

import logging
import time
from dataclasses import dataclass, field

import trio

from rangefs.errors import NotADirectory, NotFound
from rangefs.store import AsyncStore

log = logging.getLogger(__name__)

NAME_MAX = 255


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    is_dir: bool
    size: int = 0
    mtime: float = 0.0
    etag: str = ""
    version_id: str = ""  # on a --version-at mount: the S3 version this entry shows


@dataclass
class DirListing:
    entries: dict[str, Entry]
    fetched: float
    mtime: float
    hidden: int = 0


@dataclass
class _Pending:
    done: trio.Event = field(default_factory=trio.Event)
    result: DirListing | None = None
    error: Exception | None = None


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
    def __init__(self, store: AsyncStore, prefix: str, ttl: float) -> None:
        self.store = store
        self.prefix = prefix
        self.ttl = ttl
        self.mount_time = time.time()
        self._dirs: dict[str, DirListing] = {}
        self._pending: dict[str, _Pending] = {}

    def key_of(self, path: str) -> str:
        return self.prefix + path

    def dir_prefix(self, path: str) -> str:
        return self.prefix + path + "/" if path else self.prefix

    def _fresh(self, listing: DirListing | None) -> bool:
        return listing is not None and time.monotonic() - listing.fetched < self.ttl

    async def listing(self, path: str) -> DirListing:
        """The entries of directory ``path``; concurrent callers share one listing request.

        If the caller that went to list is cancelled before it got an answer, the others
        waiting for it try again (one of them lists) rather than fail with nothing.
        """
        while True:
            cached = self._dirs.get(path)
            if self._fresh(cached):
                assert cached is not None
                return cached
            pending = self._pending.get(path)
            if pending is None:
                pending = _Pending()
                self._pending[path] = pending
                try:
                    pending.result = await self._list(path)
                    self._dirs[path] = pending.result
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

    def last_listing(self, path: str) -> DirListing | None:
        """The last listing of directory ``path``, fresh or not, without asking S3 (read-ahead
        across files works from what was listed and sends no LIST of its own)."""
        return self._dirs.get(path)

    async def _list(self, path: str) -> DirListing:
        raw = await self.store.list_dir(self.dir_prefix(path))
        base = len(self.dir_prefix(path))
        entries: dict[str, Entry] = {}
        hidden = 0
        newest = raw.marker.mtime if raw.marker else self.mount_time
        for sub in raw.prefixes:
            name = sub[base:-1]
            if valid_name(name):
                entries[name] = Entry(name, True, mtime=newest)
            else:
                hidden += 1
        for obj in raw.objects:
            name = obj.key[base:]
            if not valid_name(name):
                hidden += 1
            elif name in entries:
                hidden += 1
                log.debug(
                    "s3://%s/%s hidden: a directory has the same name", self.store.bucket, obj.key
                )
            else:
                entries[name] = Entry(name, False, obj.size, obj.mtime, obj.etag, obj.version_id)
        if hidden:
            log.info(
                "listing s3://%s/%s: %d keys hidden (invalid names or shadowed by a directory)",
                self.store.bucket,
                self.dir_prefix(path),
                hidden,
            )
        return DirListing(entries, time.monotonic(), newest, hidden)

    async def entry(self, path: str) -> Entry:
        """The entry of ``path``; the root is always a directory."""
        if path == "":
            return Entry("", True, mtime=self.mount_time)
        parent, name = split(path)
        parent_entry = await self.entry(parent) if parent else None
        if parent_entry is not None and not parent_entry.is_dir:
            raise NotADirectory(path)
        found = (await self.listing(parent)).entries.get(name)
        if found is None:
            raise NotFound(path)
        return found
