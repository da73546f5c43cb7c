"""``rangefs pin`` and ``rangefs unpin``: which files, and their pins in the mount's cache dir.

The mount is read-only (the kernel refuses ``setxattr`` on it before the daemon hears of it),
so the command records pins itself, in the pins table of the cache dir the mount's root
names (``user.rangefs.pins``), in one SQLite transaction that also checks ``--pin-limit``
(:meth:`~rangefs.cache.chunk_cache.ChunkCache.pin`): SQLite serialises it with the daemon's own
writes, as it does for two mounts sharing a cache dir. The bytes are then fetched through the
mount, by the daemon, with the prefetch machinery (:mod:`rangefs.commands.prefetch`).
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rangefs.cache.chunk_cache import ChunkCache, Pin
from rangefs.commands import prefetch
from rangefs.errors import NotOnMount, UserError
from rangefs.fs import xattrs
from rangefs.keys import ObjectId


@dataclass(frozen=True, slots=True)
class Target:
    """A file named (or found below a directory named) on the command line."""

    path: Path
    root: Path  # the mount it is on
    obj: ObjectId  # the version the mount reads now
    size: int


def mount_root(path: Path) -> Path:
    """The mountpoint ``path`` is under."""
    here = path.absolute()
    while not os.path.ismount(here) and here != here.parent:
        here = here.parent
    return here


def targets(paths: list[Path]) -> list[Target]:
    """Every file named or below a directory named, with the version its mount reads."""
    found: dict[Path, Target] = {}  # a file named twice (itself and its directory) once
    for top in paths:
        for path in prefetch.walk_files(top):
            if path in found:
                continue
            try:
                bucket, _, key = xattrs.read_uri(path).removeprefix("s3://").partition("/")
                etag = xattrs.read_etag(path)
                _cached, size = xattrs.read_cached(path)
            except NotOnMount as exc:
                raise UserError(str(exc)) from None
            try:
                obj = ObjectId(bucket, key, "", xattrs.read_version(path))
            except NotOnMount:
                obj = ObjectId(bucket, key, etag)
            found[path] = Target(path, mount_root(path), obj, size)
    if not found:
        raise UserError(f"no files in {' '.join(map(str, paths))}")
    return list(found.values())


def by_mount(found: list[Target]) -> dict[Path, list[Target]]:
    out: dict[Path, list[Target]] = {}
    for target in found:
        out.setdefault(target.root, []).append(target)
    return out


@contextmanager
def mount_cache(root: Path) -> Iterator[tuple[ChunkCache, xattrs.PinsInfo]]:
    """The chunk cache of the mount at ``root``, and what its root says of pins."""
    try:
        info = xattrs.read_pins(root)
    except NotOnMount as exc:
        raise UserError(str(exc)) from None
    if not (Path(info.cache_dir) / "cache.db").is_file():
        raise UserError(f"{root}: its cache dir {info.cache_dir} cannot be opened")
    try:
        cache = ChunkCache(Path(info.cache_dir))
    except Exception as exc:
        raise UserError(f"{root}: cannot open its cache dir {info.cache_dir}: {exc}") from None
    try:
        yield cache, info
    finally:
        cache.close()


def record(root: Path, files: list[Target]) -> tuple[Path, xattrs.PinsInfo]:
    """Pins ``files`` of the mount at ``root`` (all or none: over the limit, a one-line
    :class:`UserError`); returns what the mount has pinned then."""
    with mount_cache(root) as (cache, info):
        cache.pin([Pin(t.obj, t.size) for t in files], info.limit)
    return root, xattrs.read_pins(root)


def settle(found: list[Target]) -> list[str]:
    """Once fetched: the files whose chunks are not all cached (one line each), and for the
    others, older pinned versions of their keys dropped (the new one is whole)."""
    failures: list[str] = []
    for root, files in by_mount(found).items():
        with mount_cache(root) as (cache, _info):
            for target in files:
                missing = prefetch.wait_until_cached(target.path)
                if missing:
                    failures.append(f"{target.path}: {missing} chunks not in the cache after "
                                    "reading")  # fmt: skip
                else:
                    cache.keep_pinned(target.obj)
    return failures


def forget(root: Path, files: list[Target]) -> int:
    """Unpins ``files`` of the mount at ``root``; returns how many were pinned."""
    with mount_cache(root) as (cache, _info):
        return cache.unpin([(t.obj.bucket, t.obj.key) for t in files])
