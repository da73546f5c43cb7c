"""Reading a versioned bucket as it was at a moment (``--version-at``).

The option's value is read by :func:`rangefs.config.parse_timestamp` (epoch seconds).

* :func:`listing_as_of` turns what ``ListObjectVersions`` (delimiter ``/``) returned for one
  prefix into the :class:`~rangefs.remote.store.Listing` the namespace reads: for each key the
  newest entry whose LastModified is not after the moment; a delete marker hides the key.
* :class:`VersionedStore` wraps an object store that can list versions so that the rest of
  rangefs (namespace, reader) sees the bucket as it was, with every object naming its
  versionId; reads then send ``VersionId=``.

Ties: S3 lists a key's versions and its delete markers newest first, but as two separate
lists, so the order between a version and a delete marker with the same LastModified (one
second resolution) is lost. On such a tie the entry S3 flags ``IsLatest`` wins, else the
delete marker (the key is hidden). Among versions alone, listing order decides.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from rangefs.config import format_timestamp
from rangefs.errors import NotFound, RangefsError
from rangefs.remote.retry import RetryPolicy
from rangefs.remote.store import Listing, ObjectFacts, ObjectInfo, ObjectStore, RangeGet, Sink

VERSIONED_STATES = ("Enabled", "Suspended")  # a suspended bucket still holds its history


class NotVersioned(RangefsError):
    """``--version-at`` on a bucket that has never had versioning enabled."""


@dataclass(frozen=True, slots=True)
class VersionEntry:
    """One entry of a ListObjectVersions page: a version, or a delete marker (no size)."""

    key: str
    version_id: str
    mtime: float
    deleted: bool = False
    is_latest: bool = False
    size: int = 0
    etag: str = ""


def pick_as_of(entries: Iterable[VersionEntry], at: float) -> list[ObjectInfo]:
    """For each key the newest entry with ``mtime <= at``, unless it is a delete marker;
    sorted by key. ``entries`` in listing order (each key's versions newest first); see the
    module docstring for ties."""
    best: dict[str, VersionEntry] = {}
    for entry in entries:
        if entry.mtime > at:
            continue
        held = best.get(entry.key)
        if held is None or _newer(entry, held):
            best[entry.key] = entry
    return [
        ObjectInfo(e.key, e.size, e.etag, e.mtime, e.version_id)
        for _, e in sorted(best.items())
        if not e.deleted
    ]


def _newer(entry: VersionEntry, held: VersionEntry) -> bool:
    if entry.mtime != held.mtime:
        return entry.mtime > held.mtime
    if entry.is_latest != held.is_latest:
        return entry.is_latest
    return entry.deleted and not held.deleted  # a marker beats a version on a tie


def listing_as_of(
    prefix: str, entries: Iterable[VersionEntry], prefixes: Iterable[str], at: float
) -> Listing:
    """One directory level as of ``at``: the key equal to ``prefix`` is the directory
    marker. Every common prefix is kept, even one whose keys were all created after ``at``
    or deleted by then (telling would mean listing the whole subtree)."""
    objects: list[ObjectInfo] = []
    marker: ObjectInfo | None = None
    for info in pick_as_of(entries, at):
        if info.key == prefix:
            marker = info
        else:
            objects.append(info)
    return Listing(objects, sorted(set(prefixes)), marker)


class VersionSource(ObjectStore, Protocol):
    """A store that can also list versions and tell whether the bucket is versioned."""

    def versioning(self) -> str:
        """The bucket's versioning status: ``Enabled``, ``Suspended`` or ``""`` (never)."""
        ...

    def check_versions_access(self, prefix: str) -> bool:
        """Raises unless versions can be listed; True if ``prefix`` holds any version."""
        ...

    def list_versions(
        self, prefix: str, delimiter: bool = True
    ) -> tuple[list[VersionEntry], list[str]]:
        """Every version and delete marker under ``prefix`` (all pages), in listing order,
        and the common prefixes (with ``delimiter``)."""
        ...


class VersionedStore:
    """The bucket as it was at ``at``: listings pick versions, reads name a versionId.

    Satisfies :class:`~rangefs.remote.store.ObjectStore`, so the namespace and the reader need no
    other code path; only the versionId travels on (``ObjectInfo.version_id``).
    """

    def __init__(self, inner: VersionSource, at: float) -> None:
        self.inner = inner
        self.at = at
        self.bucket = inner.bucket

    def with_retries(self, policy: RetryPolicy) -> "VersionedStore":
        return VersionedStore(self.inner.with_retries(policy), self.at)  # type: ignore[arg-type]

    def check_access(self, prefix: str) -> bool:
        """Raises :class:`NotVersioned` for a bucket never versioned, else as the inner
        store's checks; True if ``prefix`` held any version (a cheap approximation)."""
        if self.inner.versioning() not in VERSIONED_STATES:
            raise NotVersioned(f"bucket {self.bucket!r} has no versioning")
        return self.inner.check_versions_access(prefix)

    def list_dir_pages(self, prefix: str) -> Iterator[Listing]:
        """The whole level as one page: a key's versions may span ListObjectVersions pages,
        so no page can be judged before the last one is in."""
        entries, prefixes = self.inner.list_versions(prefix)
        yield listing_as_of(prefix, entries, prefixes, self.at)

    def list_all(self, prefix: str) -> list[ObjectInfo]:
        entries, _ = self.inner.list_versions(prefix, delimiter=False)
        return [o for o in pick_as_of(entries, self.at) if not o.key.endswith("/")]

    def head(self, key: str) -> ObjectInfo:
        entries, _ = self.inner.list_versions(key, delimiter=False)
        found = [o for o in pick_as_of(entries, self.at) if o.key == key]
        if not found:
            when = format_timestamp(self.at)
            raise NotFound(f"s3://{self.bucket}/{key}: no version as of {when}")
        return found[0]

    def facts(self, key: str, etag: str, version_id: str = "") -> ObjectFacts:
        return self.inner.facts(key, etag, version_id)

    def checksums(self, key: str, etag: str, version_id: str = "") -> ObjectFacts:
        return self.inner.checksums(key, etag, version_id)

    def get_range(
        self, key: str, start: int, end: int, etag: str, size: int, version_id: str = ""
    ) -> bytes:
        return self.inner.get_range(key, start, end, etag, size, version_id)

    def get_range_into(self, get: RangeGet, sink: Sink) -> None:
        self.inner.get_range_into(get, sink)
