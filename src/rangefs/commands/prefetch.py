"""``rangefs prefetch``: resumable download into the chunk cache, for files or whole trees.

Two ways in, one result — every chunk of the named objects verified in the cache:

* paths on a live mount: the missing chunks (from the ``user.rangefs.chunks`` xattr, read
  with :mod:`rangefs.fs.xattrs`) are read through the mount in parallel, so the daemon fetches
  and stores them;
* ``s3://BUCKET/KEY`` or ``s3://BUCKET/PREFIX/``: chunks are fetched with Range GETs and
  stored straight into ``--cache-dir`` with the same keys a mount uses (same chunk size).

Either way chunks already cached are skipped, which makes a re-run resume where an
interrupted one stopped (the ``Routines(n)`` + ``Checkpoint`` of an SDK's resumable download).
"""

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from rangefs import chunks
from rangefs.cache.chunk_cache import ChunkCache
from rangefs.config import parse_source
from rangefs.errors import NotOnMount, RangefsError, UserError
from rangefs.fs import xattrs
from rangefs.remote.store import ObjectStore, ObjectVersion

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Job:
    """One chunk to bring into the cache; ``run`` does it and returns the bytes it moved."""

    label: str
    length: int
    run: Callable[[], None]


@dataclass
class Plan:
    """The chunks still to fetch, and what the planned files hold in all."""

    files: list[str] = field(default_factory=list)
    total_bytes: int = 0
    cached_bytes: int = 0
    jobs: list[Job] = field(default_factory=list)

    @property
    def fetch_bytes(self) -> int:
        return sum(job.length for job in self.jobs)


def chunk_map(path: Path) -> tuple[int, list[bool]]:
    """Chunk size and the cached-chunk map of a file on a rangefs mount."""
    try:
        return xattrs.read_chunks(path)
    except NotOnMount as exc:
        raise UserError(str(exc)) from None


def wait_until_cached(path: Path, timeout: float = 10.0) -> int:
    """Chunks of ``path`` still missing, after giving the daemon time to store the chunks it
    just served (it writes a chunk to disk right after answering the read)."""
    deadline = time.monotonic() + timeout
    while True:
        missing = chunk_map(path)[1].count(False)
        if not missing or time.monotonic() >= deadline:
            return missing
        time.sleep(0.05)


def walk_files(path: Path) -> Iterator[Path]:
    if path.is_dir():
        for root, _dirs, files in os.walk(path):
            for name in sorted(files):
                yield Path(root) / name
    elif path.exists():
        yield path
    else:
        raise UserError(f"{path}: no such file or directory")


def plan_mounted(paths: list[Path]) -> Plan:
    plan = Plan()
    for top in paths:
        for path in walk_files(top):
            chunk_size, cached = chunk_map(path)
            size = path.stat().st_size
            plan.files.append(str(path))
            plan.total_bytes += size
            for index, present in enumerate(cached):
                length = chunks.chunk_length(index, size, chunk_size)
                if present:
                    plan.cached_bytes += length
                    continue
                offset = index * chunk_size
                plan.jobs.append(
                    Job(
                        f"{path} {chunks.byte_range(offset, offset + length)}",
                        length,
                        _read_through(path, offset, length),
                    )
                )
    return plan


def _read_through(path: Path, offset: int, length: int) -> Callable[[], None]:
    def run() -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            done = 0
            while done < length:
                got = os.pread(fd, min(length - done, 1 << 20), offset + done)
                if not got:
                    raise OSError(f"unexpected end of file at {offset + done}")
                done += len(got)
        finally:
            os.close(fd)

    return run


def plan_s3(
    sources: list[str], store_for: Callable[[str], ObjectStore], cache: ChunkCache, chunk_size: int
) -> Plan:
    plan = Plan()
    for source in sources:
        bucket, prefix = parse_source(source)
        store = store_for(bucket)
        key = prefix.rstrip("/")
        if key and not source.endswith("/"):
            try:
                objects = [store.head(key)]
            except RangefsError:
                objects = store.list_all(prefix)
        else:
            objects = store.list_all(prefix)
        if not objects:
            raise UserError(f"{source}: no objects found")
        for info in objects:
            version = ObjectVersion(bucket, info.key, info.etag, info.size)
            cache.bind_etag(version.id)
            plan.files.append(f"s3://{bucket}/{info.key}")
            plan.total_bytes += info.size
            for index in range(chunks.chunk_count(info.size, chunk_size)):
                start, end = chunks.chunk_bounds(index, info.size, chunk_size)
                if cache.contains(version.chunk(chunk_size, index)):
                    plan.cached_bytes += end - start
                    continue
                plan.jobs.append(
                    Job(
                        f"s3://{bucket}/{info.key} {chunks.byte_range(start, end)}",
                        end - start,
                        _fetch_into(store, cache, version, chunk_size, index),
                    )
                )
    return plan


def _fetch_into(
    store: ObjectStore, cache: ChunkCache, version: ObjectVersion, chunk_size: int, index: int
) -> Callable[[], None]:
    def run() -> None:
        start, end = chunks.chunk_bounds(index, version.size, chunk_size)
        data = store.get_range(version.key, start, end, version.etag, version.size)
        if not cache.put(version.chunk(chunk_size, index), data):
            raise OSError("the cache did not store the chunk (full or not writable)")

    return run


def execute(plan: Plan, jobs: int, progress: bool, desc: str = "prefetch") -> list[str]:
    """Runs the plan with ``jobs`` threads; returns the failures, one line each."""
    failures: list[str] = []
    lock = threading.Lock()
    bar = tqdm(
        total=plan.total_bytes,
        initial=plan.cached_bytes,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=desc,
        disable=not progress,
        dynamic_ncols=True,
    )
    with bar, ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(job.run): job for job in plan.jobs}
        for future in as_completed(futures):
            job = futures[future]
            try:
                future.result()
                bar.update(job.length)
            except Exception as exc:
                with lock:
                    failures.append(f"{job.label}: {exc}")
    return failures
