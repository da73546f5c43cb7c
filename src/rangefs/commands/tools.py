"""The user-facing side commands: ``prefetch``, ``pin``, ``unpin``, ``status`` and
``cache stats|verify|clear``.

They print for people (one line per fact, sizes in binary units) and return exit codes;
the work itself lives in :mod:`rangefs.commands.prefetch` and :mod:`rangefs.cache.chunk_cache`.
"""

import argparse
import os
import sys
from pathlib import Path

from rangefs.cache.chunk_cache import PRIVATE_UMASK, ChunkCache, ensure_private_dir
from rangefs.cache.metadata_index import INDEX_FILE, MetadataIndex
from rangefs.commands import pinning, prefetch
from rangefs.config import format_size
from rangefs.errors import NotOnMount, UserError
from rangefs.fs import xattrs
from rangefs.options import make_s3_settings
from rangefs.remote.s3 import store_factory

MAP_WIDTH = 64


def render_map(cached: list[bool], width: int = MAP_WIDTH) -> str:
    """At most ``width`` characters: ``#`` all chunks of a cell cached, ``+`` some, ``.`` none."""
    if not cached:
        return ""
    cells = min(width, len(cached))
    out = []
    for cell in range(cells):
        group = cached[cell * len(cached) // cells : (cell + 1) * len(cached) // cells]
        out.append("#" if all(group) else "+" if any(group) else ".")
    return "".join(out)


def open_existing_cache(directory: Path) -> ChunkCache:
    if not (directory / "cache.db").is_file():
        raise UserError(f"{directory} is not a rangefs cache directory (no cache.db)")
    try:
        return ChunkCache(directory)
    except Exception as exc:
        raise UserError(f"cannot open cache {directory}: {exc}") from None


def open_existing_index(directory: Path) -> MetadataIndex | None:
    """The cache dir's metadata index, or None if it has none (not created here)."""
    if not (directory / INDEX_FILE).is_file():
        return None
    try:
        return MetadataIndex(directory)
    except Exception as exc:
        raise UserError(f"cannot open metadata index in {directory}: {exc}") from None


def cmd_cache(args: argparse.Namespace) -> int:
    cache = open_existing_cache(args.cache_dir)
    index: MetadataIndex | None = None
    try:
        index = open_existing_index(args.cache_dir)
        if args.action == "stats":
            st = cache.summary()
            print(f"directory  {st.directory}")
            print(f"used       {format_size(st.volume)} of {format_size(st.size_limit)}")
            print(f"chunks     {st.chunks}")
            print(f"objects    {st.objects} (object versions with at least one chunk)")
            pins = cache.pin_summary()
            print(f"pinned     {pins.keys} files, {format_size(pins.bytes)} "
                  f"({format_size(pins.stored)} cached, never evicted)")  # fmt: skip
            ix = index.stats() if index is not None else None
            if ix is None:
                print("index      none (no metadata index in this cache dir)")
            else:
                print(f"index      {ix.listings} listings, {ix.entries} entries, "
                      f"{format_size(ix.disk_bytes)} on disk ({ix.path.name})")  # fmt: skip
        elif args.action == "verify":
            report = cache.verify()
            print(f"verified {report.checked} chunks: {report.bad} bad (dropped)")
            for key in report.bad_keys:
                o = key.obj
                named = f"version {o.version_id}" if o.version_id else f"ETag {o.etag}"
                print(f"  bad: {o.uri} {named} chunk {key.index} "
                      f"({key.chunk_size} B chunks)")  # fmt: skip
            print(f"proofs: {report.proven} object versions re-hashed against S3's proof "
                  f"(checksum or ETag), {len(report.disproved)} failed (dropped)")  # fmt: skip
            for obj in report.disproved:
                print(f"  failed proof: {obj.uri} ETag {obj.etag}")
            return 1 if report.bad or report.disproved else 0
        else:
            removed, unpinned = cache.clear()
            dropped = index.clear() if index is not None else 0
            print(f"cleared {cache.directory}: {removed} entries removed, {unpinned} pins "
                  f"dropped, {dropped} listings dropped from the metadata index")  # fmt: skip
    finally:
        if index is not None:
            index.close()
        cache.close()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    status = 0
    for path in args.paths:
        if path.is_dir():
            try:
                print_pins(path)
            except NotOnMount as exc:
                print(f"rangefs: {exc}", file=sys.stderr)
                status = 1
            continue
        try:
            chunk_size, cached = prefetch.chunk_map(path)
            uri = xattrs.read_uri(path)
            etag = xattrs.read_etag(path)
            cached_bytes, size = xattrs.read_cached(path)
            kind, proven, detail = xattrs.read_verified(path)
        except UserError as exc:
            print(f"rangefs: {exc}", file=sys.stderr)
            status = 1
            continue
        except NotOnMount as exc:
            print(f"rangefs: {exc}", file=sys.stderr)
            status = 1
            continue
        percent = 100.0 * cached_bytes / size if size else 100.0
        print(path)
        print(f"  uri     {uri}")
        print(f"  etag    {etag}")
        print(f"  cached  {format_size(cached_bytes)} of {format_size(size)} ({percent:.0f}%), "
              f"{sum(cached)} of {len(cached)} chunks of {format_size(chunk_size)}")  # fmt: skip
        print(f"  map     [{render_map(cached)}]")
        print(f"  pinned  {'yes' if xattrs.read_pinned(path) else 'no'}")
        if kind == "none":
            print(f"  proof   none ({detail})")
        else:
            state = "verified" if proven else "not verified yet"
            print(f"  proof   {kind}, {state}{f' ({detail})' if detail else ''}")
    return status


def print_pins(directory: Path) -> None:
    """A directory on a mount: what the mount has pinned, and which files below it."""
    xattrs.read_uri(directory)  # not on a mount: the error names the directory
    info = xattrs.read_pins(pinning.mount_root(directory))
    print(directory)
    print(f"  pinned  {info.files} files, {format_size(info.bytes)} of --pin-limit "
          f"{format_size(info.limit)} ({format_size(info.stored)} cached)")  # fmt: skip
    for path in prefetch.walk_files(directory):
        if xattrs.read_pinned(path):
            print(f"  pin     {path}")


def cmd_pin(args: argparse.Namespace) -> int:
    progress = not args.no_progress and sys.stderr.isatty()
    targets = pinning.targets(args.paths)
    summaries: list[tuple[Path, xattrs.PinsInfo]] = []
    for root, files in pinning.by_mount(targets).items():
        try:
            summaries.append(pinning.record(root, files))
        except UserError as exc:
            if not summaries:
                raise
            done = ", ".join(str(r) for r, _ in summaries)
            raise UserError(f"{root}: {exc}; files on {done} are pinned but not fetched "
                            "(run 'rangefs pin' or 'rangefs unpin' on them)") from None  # fmt: skip
    plan = prefetch.plan_mounted([t.path for t in targets])
    failures = prefetch.execute(plan, args.jobs, progress, desc="pin")
    if not failures:
        failures = pinning.settle(targets)
    for line in failures:
        print(f"rangefs: failed: {line}", file=sys.stderr)
    pinned = sum(t.size for t in targets)
    print(f"pinned {len(targets)} files ({format_size(pinned)}): "
          f"{format_size(plan.fetch_bytes)} fetched, {format_size(plan.cached_bytes)} were "
          "already cached")  # fmt: skip
    for root, info in summaries:
        print(f"{root}: {info.files} files pinned, {format_size(info.bytes)} of --pin-limit "
              f"{format_size(info.limit)}")  # fmt: skip
    if failures:
        print("rangefs: the files are pinned but not all fetched: run 'rangefs pin' again "
              "(or 'rangefs unpin')", file=sys.stderr)  # fmt: skip
    return 1 if failures else 0


def cmd_unpin(args: argparse.Namespace) -> int:
    targets = pinning.targets(args.paths)
    unpinned = sum(pinning.forget(root, files) for root, files in pinning.by_mount(targets).items())
    print(f"unpinned {unpinned} files ({len(targets) - unpinned} of those named were not pinned)")
    return 0


def cmd_prefetch(args: argparse.Namespace) -> int:
    s3_sources = [p for p in args.paths if p.startswith("s3://")]
    mounted = [Path(p) for p in args.paths if not p.startswith("s3://")]
    progress = not args.no_progress and sys.stderr.isatty()
    failures: list[str] = []
    plans: list[prefetch.Plan] = []
    if mounted:
        plan = prefetch.plan_mounted(mounted)
        plans.append(plan)
        failures += prefetch.execute(plan, args.jobs, progress)
        if not failures:
            for path in plan.files:
                missing = prefetch.wait_until_cached(Path(path))
                if missing:
                    failures.append(
                        f"{path}: {missing} chunks not in the cache after reading "
                        "(cache full or not writable?)"
                    )
    if s3_sources:
        os.umask(PRIVATE_UMASK)
        ensure_private_dir(args.cache_dir, allow_shared=args.shared_cache)
        cache = ChunkCache(args.cache_dir, args.cache_size)
        try:
            stores = store_factory(make_s3_settings(vars(args)), pool=args.jobs + 2)
            try:
                plan = prefetch.plan_s3(s3_sources, stores, cache,
                                        args.chunk_size)  # fmt: skip
            except UserError:
                raise
            except Exception as exc:
                raise UserError(f"cannot list {' '.join(s3_sources)}: {exc}") from None
            plans.append(plan)
            failures += prefetch.execute(plan, args.jobs, progress)
        finally:
            cache.close()
    for line in failures:
        print(f"rangefs: failed: {line}", file=sys.stderr)
    state = f"{len(failures)} chunks FAILED" if failures else "complete"
    files = sum(len(p.files) for p in plans)
    fetched = sum(p.fetch_bytes for p in plans)
    cached = sum(p.cached_bytes for p in plans)
    print(f"prefetch {state}: {files} files, {format_size(fetched)} fetched, "
          f"{format_size(cached)} were already cached")  # fmt: skip
    return 1 if failures else 0
