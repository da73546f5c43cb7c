"""The metadata index's two targets (issue 11), measured from outside the daemon:

1. ``find`` over a prefix of ``--keys`` keys (SeaweedFS on loopback, through the counting
   proxy): first mount with a fresh cache dir, then a remount of the same cache dir within
   ``--metadata-ttl``. Reports both times, their ratio, and the LIST requests each sent.
2. The daemon's RSS after listing ``--rss-keys`` keys (``find`` and ``ls -f``) of a
   synthetic prefix: the daemon runs over an in-process store that makes up its pages (no
   server, so a million keys cost no upload), as ``mount.run_daemon(make_store=...)`` lets a
   benchmark do.

    python -m tests.benchmark.listing --keys 100000 --rss-keys 1000000

Run as root from the repository root (the page cache is dropped before each ``find``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rangefs import options
from rangefs.config import Config
from rangefs.errors import NotFound
from rangefs.remote.retry import RetryPolicy
from rangefs.remote.store import Listing, ObjectFacts, ObjectInfo
from tests.support import SRC_DIR, is_mounted, wait_for, with_source
from tests.support.proxy import CountingProxy
from tests.support.servers import start_seaweedfs

BUCKET = "listing"
PREFIX = "big/"
PAGE = 1000  # S3's keys per ListObjectsV2 page
UPLOAD_THREADS = 64
MTIME = 1_700_000_000.0


class SyntheticStore:
    """A bucket whose ``big/`` holds ``keys`` objects of 1 KiB, made up page by page."""

    def __init__(self, keys: int) -> None:
        self.bucket = "synthetic"
        self.keys = keys

    def with_retries(self, policy: RetryPolicy) -> SyntheticStore:
        return self

    def check_access(self, prefix: str) -> bool:
        return True

    def list_dir_pages(self, prefix: str) -> Iterator[Listing]:
        if prefix == "":
            yield Listing([], [PREFIX])
            return
        if prefix != PREFIX:
            yield Listing([], [])
            return
        for start in range(0, self.keys, PAGE):
            yield Listing(
                [
                    ObjectInfo(f"{PREFIX}k{i:07d}", 1024, f'"{i:032x}"', MTIME)
                    for i in range(start, min(start + PAGE, self.keys))
                ],
                [],
            )

    def list_all(self, prefix: str) -> list[ObjectInfo]:
        raise NotFound("synthetic store: no list_all")

    def head(self, key: str) -> ObjectInfo:
        raise NotFound(key)

    def facts(self, key: str, etag: str, version_id: str = "") -> ObjectFacts:
        return ObjectFacts()

    def get_range(
        self, key: str, start: int, end: int, etag: str, size: int, version_id: str = ""
    ) -> bytes:
        return bytes(end - start)


def serve_synthetic(keys: int, cache_dir: Path, mountpoint: Path, log_file: Path) -> None:
    """The daemon of part 2, in this process, in the foreground (until unmounted)."""
    from rangefs.daemon import mount
    from rangefs.daemon.readiness import Notifier

    base = options.make_config("synthetic", mountpoint, options.defaults(options.MOUNT))
    config: Config = dataclasses.replace(
        base, cache_dir=cache_dir, foreground=True, log_file=log_file, log_level="info"
    )
    mount.run_daemon(config, Notifier(None), make_store=lambda c, s: SyntheticStore(keys))


def rss_mib(pid: int) -> tuple[float, float]:
    """The process's resident set now and at its peak (VmRSS, VmHWM), in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.split()
    return int(fields["VmRSS"][0]) / 1024, int(fields["VmHWM"][0]) / 1024


def drop_caches() -> None:
    subprocess.run(["sync"], check=True, timeout=120)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:
        print(f"(page cache not dropped: {exc})", flush=True)


def timed_count(cmd: list[str]) -> tuple[float, int]:
    """Seconds ``cmd`` took and the lines it printed."""
    start = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, timeout=3600).stdout
    return time.perf_counter() - start, out.count(b"\n")


def list_requests(proxy: CountingProxy) -> int:
    """ListObjectsV2 requests, without the mount's one-key access check."""
    count = 0
    for record in proxy.matching("GET"):
        query = urllib.parse.parse_qs(record.query)
        count += record.key is None and "list-type" in query and query.get("max-keys") != ["1"]
    return count


def upload(client: Any, keys: int) -> None:
    def put(i: int) -> None:
        client.put_object(Bucket=BUCKET, Key=f"{PREFIX}k{i:07d}", Body=b"x")

    with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        list(pool.map(put, range(keys)))


def find_after_remount(keys: int, work: Path, data_dir: Path) -> dict[str, float]:
    """Part 1; returns the figures. The keys are uploaded once per ``data_dir``."""
    import boto3
    from botocore.config import Config as BotoConfig

    server = start_seaweedfs(data_dir, timeout=300)
    try:
        with CountingProxy(server.endpoint_url) as proxy:
            client = boto3.session.Session().client(
                "s3",
                endpoint_url=server.endpoint_url,
                aws_access_key_id=server.access_key,
                aws_secret_access_key=server.secret_key,
                region_name=server.region,
                config=BotoConfig(
                    max_pool_connections=UPLOAD_THREADS, s3={"addressing_style": "path"}
                ),
            )
            last = f"{PREFIX}k{keys - 1:07d}"
            with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                client.create_bucket(Bucket=BUCKET)
            try:
                client.head_object(Bucket=BUCKET, Key=last)
                print(f"reusing the {keys} keys in {data_dir}", flush=True)
            except client.exceptions.ClientError:
                began = time.perf_counter()
                upload(client, keys)
                print(f"uploaded {keys} keys in {time.perf_counter() - began:.0f} s", flush=True)
            env = with_source(server.env())
            cache, mnt = work / "cache", work / "mnt"
            mnt.mkdir()
            mount = [
                *(sys.executable, "-m", "rangefs", "mount", "--endpoint-url", proxy.url),
                *("--cache-dir", str(cache), "--log-file", str(work / "rangefs.log")),
                *("--pid-file", str(work / "pid"), "--metadata-ttl", "3600", BUCKET, str(mnt)),
            ]
            figures: dict[str, float] = {}
            for phase in ("first", "remount"):
                subprocess.run(mount, env=env, check=True, timeout=120)
                drop_caches()
                proxy.reset()
                seconds, lines = timed_count(["find", str(mnt)])
                assert lines == keys + 2, f"find printed {lines} lines for {keys} keys"
                pid = int((work / "pid").read_text())
                figures[f"{phase}_find_s"] = seconds
                figures[f"{phase}_list_requests"] = list_requests(proxy)
                figures[f"{phase}_rss_mib"], figures[f"{phase}_peak_mib"] = rss_mib(pid)
                subprocess.run(["fusermount3", "-u", str(mnt)], check=True, timeout=60)
                wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists(), timeout=60)
            figures["speedup"] = figures["first_find_s"] / figures["remount_find_s"]
            figures["index_mib"] = (cache / "metadata.db").stat().st_size / 2**20
            return figures
    finally:
        server.stop()


def rss_after_listing(keys: int, work: Path) -> dict[str, float]:
    """Part 2; returns the figures."""
    cache, mnt = work / "synthetic-cache", work / "synthetic-mnt"
    mnt.mkdir()
    figures: dict[str, float] = {}
    for phase in ("first", "remount"):
        env = {**os.environ, "PYTHONPATH": f"{SRC_DIR}{os.pathsep}{Path.cwd()}"}
        serve = [str(keys), str(cache), str(mnt), str(work / f"synthetic-{phase}.log")]
        daemon = subprocess.Popen(
            [sys.executable, "-m", "tests.benchmark.listing", "--serve-synthetic", *serve], env=env
        )
        try:
            wait_for(lambda: is_mounted(mnt), timeout=60, what="the synthetic mount")
            base_rss, _ = rss_mib(daemon.pid)
            drop_caches()
            seconds, lines = timed_count(["find", str(mnt)])
            assert lines == keys + 2, f"find printed {lines} lines for {keys} keys"
            figures[f"{phase}_find_s"] = seconds
            _, lines = timed_count(["ls", "-f", str(mnt / PREFIX)])
            figures[f"{phase}_rss_before_mib"] = base_rss
            figures[f"{phase}_rss_mib"], figures[f"{phase}_peak_mib"] = rss_mib(daemon.pid)
        finally:
            subprocess.run(["fusermount3", "-u", str(mnt)], check=False, timeout=60)
            daemon.wait(timeout=120)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmark.listing", description=__doc__)
    parser.add_argument("--keys", type=int, default=100_000, help="keys for find (0: skip)")
    parser.add_argument("--rss-keys", type=int, default=1_000_000, help="keys for RSS (0: skip)")
    parser.add_argument("--data-dir", type=Path, default=Path("/var/tmp/rangefs-listing-s3"),
                        help="SeaweedFS data, kept: the keys are uploaded once")  # fmt: skip
    parser.add_argument("--serve-synthetic", nargs=4, metavar=("KEYS", "CACHE", "MNT", "LOG"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args(argv)
    if args.serve_synthetic:
        keys, cache, mnt, log = args.serve_synthetic
        serve_synthetic(int(keys), Path(cache), Path(mnt), Path(log))
        return 0
    work = Path(tempfile.mkdtemp(prefix="rangefs-listing-"))
    try:
        if args.keys:
            figures = find_after_remount(args.keys, work, args.data_dir / str(args.keys))
            print(f"find over {args.keys} keys: first {figures['first_find_s']:.2f} s "
                  f"({figures['first_list_requests']:.0f} LIST), after remount "
                  f"{figures['remount_find_s']:.2f} s ({figures['remount_list_requests']:.0f} "
                  f"LIST): {figures['speedup']:.1f}x; daemon RSS {figures['first_rss_mib']:.0f} / "
                  f"{figures['remount_rss_mib']:.0f} MiB; index {figures['index_mib']:.1f} MiB",
                  flush=True)  # fmt: skip
        if args.rss_keys:
            figures = rss_after_listing(args.rss_keys, work)
            print(f"synthetic {args.rss_keys} keys: find {figures['first_find_s']:.1f} s, after "
                  f"remount {figures['remount_find_s']:.1f} s; daemon RSS at start "
                  f"{figures['first_rss_before_mib']:.0f} MiB, after find + ls -f "
                  f"{figures['first_rss_mib']:.0f} MiB (peak {figures['first_peak_mib']:.0f}), "
                  f"after remount {figures['remount_rss_mib']:.0f} MiB "
                  f"(peak {figures['remount_peak_mib']:.0f})", flush=True)  # fmt: skip
    finally:
        for mnt in work.glob("*mnt"):
            subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True, timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
