"""Scenario "tree of small files over WAN" (issue 12), runnable alone:

    python -m tests.benchmark.tree --files 1500 --profile 20ms

``rsync -a`` of a directory of small objects (``--files`` × ``--file-kib``) and of a mixed
tree (``--mixed-files`` small ones plus ``--big-mib`` larger ones) through the WAN link
simulator (:mod:`tests.benchmark.link`), by rangefs, s3fs and a 10-thread boto3 script
(list, then ``get_object`` each key into a file), one run each, cold. Prints a Markdown
table: seconds, MB/s, requests the server answered (the simulator's turns), the daemon's
peak RSS, and rangefs's walk counters (files fetched ahead, of them opened).

Run as root from the repository root (it drops the page cache); needs SeaweedFS, rsync
and, for the s3fs row, s3fs.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.benchmark.common import (
    BUCKET,
    WAN_PROFILES,
    BenchError,
    LinkProfile,
    MiB,
    Scratch,
    drop_caches,
    log,
)
from tests.benchmark.link import link
from tests.benchmark.peers import PeerMount, RangefsPeer, S3fsPeer
from tests.support.patterns import pattern_bytes, upload_pattern
from tests.support.servers import start_seaweedfs

SMALL_PREFIX = "tree-small"
MIXED_PREFIX = "tree-mixed"
BOTO3_THREADS = 10

BOTO3_TREE = r"""
import json, os, sys, time
from concurrent.futures import ThreadPoolExecutor
import boto3
from botocore.config import Config
endpoint, bucket, prefix, dest, threads = sys.argv[1:6]
threads = int(threads)
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  config=Config(max_pool_connections=threads, s3={"addressing_style": "path"}))
start = time.monotonic()
keys = []
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
    keys += [o["Key"] for o in page.get("Contents", [])]
def get(key):
    path = os.path.join(dest, key[len(prefix) + 1:])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    n = 0
    with open(path, "wb") as f:
        for piece in body.iter_chunks(1 << 20):
            n += f.write(piece)
    return n
with ThreadPoolExecutor(threads) as pool:
    total = sum(pool.map(get, keys))
print(json.dumps({"seconds": time.monotonic() - start, "bytes": total, "files": len(keys)}))
"""


@dataclass
class Row:
    tool: str
    tree: str
    seconds: float
    nbytes: int
    requests: int | None = None
    peak_rss: int | None = None
    walk: str = ""

    def cells(self) -> list[str]:
        rss = f"{self.peak_rss / MiB:.0f}" if self.peak_rss else "–"
        return [
            self.tree,
            self.tool,
            f"{self.seconds:.1f}",
            f"{self.nbytes / self.seconds / 1e6:.1f}",
            str(self.requests) if self.requests is not None else "–",
            rss,
            self.walk or "–",
        ]


def tree_objects(args: argparse.Namespace) -> dict[str, tuple[int, int]]:
    """Key → (size, seed): the small tree and the mixed one."""
    small = args.file_kib * 1024
    objects = {f"{SMALL_PREFIX}/f{i:05d}": (small, i) for i in range(args.files)}
    for i in range(args.mixed_files):
        objects[f"{MIXED_PREFIX}/s{i:05d}"] = (small, 100_000 + i)
    for i, mib in enumerate(args.big_mib):
        objects[f"{MIXED_PREFIX}/big{i}.bin"] = (mib * MiB, 200_000 + i)
    return objects


def upload(client: Any, objects: dict[str, tuple[int, int]]) -> None:
    def put(item: tuple[str, tuple[int, int]]) -> None:
        key, (size, seed) = item
        if size <= 8 * MiB:
            client.put_object(Bucket=BUCKET, Key=key, Body=pattern_bytes(0, size, seed))
        else:
            upload_pattern(client, BUCKET, key, size, seed)

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(put, objects.items()))


def tree_bytes(objects: dict[str, tuple[int, int]], prefix: str) -> int:
    return sum(size for key, (size, _) in objects.items() if key.startswith(prefix + "/"))


def check(dest: Path, objects: dict[str, tuple[int, int]], prefix: str) -> None:
    """Every file copied, with its size (the tests check the bytes; this checks the run)."""
    for key, (size, _) in objects.items():
        if key.startswith(prefix + "/"):
            path = dest / key.removeprefix(prefix + "/")
            if not path.is_file() or path.stat().st_size != size:
                raise BenchError(f"{path} missing or of the wrong size")


def rsync_through(mount: PeerMount, prefix: str, dest: Path) -> tuple[float, int | None]:
    drop_caches()
    start = time.monotonic()
    proc = subprocess.run(
        ["rsync", "-a", f"{mount.path}/{prefix}/", f"{dest}/"],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise BenchError(f"rsync exited {proc.returncode}: {proc.stderr.strip()[:300]}")
    return seconds, mount.hwm()


def walk_counters(mount: PeerMount) -> str:
    stats = json.loads(os.getxattr(mount.path, "user.rangefs.stats"))
    return f"{stats['walk_files_ahead']} ahead, {stats['walk_files_opened']} opened"


def measure(
    name: str,
    session: Callable[[str], Any],
    profile: LinkProfile,
    endpoint: str,
    scratch: Scratch,
    objects: dict[str, tuple[int, int]],
    prefix: str,
    workers: int | None,
) -> Row:
    """One cold rsync (or the boto3 script) of ``prefix`` through a fresh link."""
    nbytes = tree_bytes(objects, prefix)
    dest = scratch.new_dir(f"copy-{name}")
    stats: dict[str, int] = {}
    try:
        with (
            link(
                endpoint,
                latency=profile.latency,
                bandwidth=profile.bandwidth,
                workers=workers,
                stats=stats,
            ) as url,
            session(url) as mount,
        ):
            if mount is None:
                seconds, rss, walk = boto3_tree(url, prefix, dest), None, ""
            else:
                seconds, rss = rsync_through(mount, prefix, dest)
                walk = walk_counters(mount) if name == "rangefs" else ""
        check(dest, objects, prefix)
    finally:
        shutil.rmtree(dest, ignore_errors=True)
    return Row(name, prefix, seconds, nbytes, stats.get("turns"), rss, walk)


_ENV: dict[str, str] = {}


@contextlib.contextmanager
def fresh(peer: Any, url: str) -> Iterator[PeerMount]:
    """A mount of ``peer`` on a fresh cache, talking to ``url``."""
    with peer.cache() as cache, peer.session(cache, url) as mount:
        yield mount


def boto3_tree(url: str, prefix: str, dest: Path) -> float:
    drop_caches()
    proc = subprocess.run(
        [sys.executable, "-c", BOTO3_TREE, url, BUCKET, prefix, str(dest), str(BOTO3_THREADS)],
        capture_output=True,
        text=True,
        env=_ENV,
        timeout=1800,
        check=False,
    )
    if proc.returncode != 0:
        raise BenchError(f"boto3 script exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["seconds"])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=1500, help="small objects in the small tree")
    p.add_argument("--file-kib", type=int, default=4, help="size of each small object")
    p.add_argument("--mixed-files", type=int, default=300, help="small objects in the mixed tree")
    p.add_argument(
        "--big-mib",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=[64, 256],
        help="sizes of the mixed tree's large objects, comma-separated ('' for none)",
    )
    p.add_argument("--profile", choices=[w.name for w in WAN_PROFILES], default="20ms")
    p.add_argument("--peers", default="rangefs,s3fs,boto3", help="comma-separated")
    p.add_argument("--trees", default="small,mixed", help="comma-separated: small, mixed")
    p.add_argument("--rangefs-arg", action="append", default=[], help="extra mount option")
    p.add_argument("--link-workers", type=int, default=None)
    p.add_argument("--work-dir", type=Path, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    profile = next(w for w in WAN_PROFILES if w.name == args.profile)
    root = Path(tempfile.mkdtemp(prefix="rangefs-tree-", dir=args.work_dir))
    scratch = Scratch(root)
    server = None
    try:
        log("starting SeaweedFS")
        server = start_seaweedfs(root / "seaweedfs")
        client = server.client(read_timeout=300)
        client.create_bucket(Bucket=BUCKET)
        objects = tree_objects(args)
        log(f"uploading {len(objects)} objects")
        upload(client, objects)
        _ENV.update(os.environ | server.env())
        endpoint = server.endpoint_url
        rangefs = RangefsPeer(
            scratch, endpoint, server.env(), chunk_size_mib=8, args=args.rangefs_arg
        )
        s3fs = S3fsPeer(scratch, server, use_cache=False, options=[])

        sessions = {
            "rangefs": functools.partial(fresh, rangefs),
            "s3fs": functools.partial(fresh, s3fs),
            "boto3": lambda url: contextlib.nullcontext(None),
        }
        prefixes = {"small": SMALL_PREFIX, "mixed": MIXED_PREFIX}
        rows: list[Row] = []
        for tree in args.trees.split(","):
            for name in args.peers.split(","):
                log(f"== {tree} tree: {name}")
                try:
                    row = measure(
                        name,
                        sessions[name],
                        profile,
                        endpoint,
                        scratch,
                        objects,
                        prefixes[tree],
                        args.link_workers,
                    )
                except BenchError as exc:
                    log(f"   FAILED: {exc}")
                    continue
                log("   " + " | ".join(row.cells()))
                rows.append(row)
        print()
        print(f"Tree of small files over WAN ({profile.title}), rsync -a, one cold run each")
        print()
        print("| tree | tool | seconds | MB/s | requests | peak RSS MiB | walk |")
        print("|---|---|---:|---:|---:|---:|---|")
        for row in rows:
            print("| " + " | ".join(row.cells()) + " |")
        return 0
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
