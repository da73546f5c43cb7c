"""rangefs against its peers, side by side, in one run on one SeaweedFS server.

Run from the repository root::

    python -m tests.benchmark.run_benchmark            # full run (~12-18 min)
    python -m tests.benchmark.run_benchmark --quick    # smoke run (~3 min)

It starts a local SeaweedFS, uploads a pattern object (``--size-mib``), a real
MP4 whose index (moov) sits at the end of the file, eight objects for the
concurrent-readers test and an object for the simulated-WAN test, then measures

* rangefs (the installed package, driven through ``python -m rangefs mount``):
  cold ``cp`` to /dev/null and to a file, warm in the same mount, warm after a
  remount, random 64 KiB reads (fio), ffprobe and ``ffmpeg -ss`` on the MP4,
  eight concurrent readers, and a cold copy through a simulated WAN link (two
  profiles: 20 ms + 50 MB/s and 60 ms + 15 MB/s per connection) whose own ceiling
  is measured in the same run;
* peers on the same objects: boto3 (``download_file``, one ``get_object``
  stream), s3fs-fuse (no cache and ``use_cache``), ``rclone mount
  --vfs-cache-mode full``, and local-disk / page-cache baselines;

and writes a Markdown report (``--out``, default docs/benchmarks.md) with a bar
chart next to it (benchmark.png). A peer that is missing or fails becomes a row
with its error; every mount is unmounted and every process started is stopped
in ``finally`` blocks, also on Ctrl-C. It must run as root (it drops the page
cache before every cold read).
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.benchmark import report
from tests.benchmark.common import (
    BUCKET,
    MAIN_KEY,
    PROOF_CHUNK_MIB,
    PROOF_EXTRA_RUNS,
    PROOF_ROWS,
    WAN_PROFILES,
    BenchError,
    Budget,
    LinkProfile,
    Scratch,
    deferred_sigint,
    log,
    one_line,
)
from tests.benchmark.link import default_workers
from tests.benchmark.peers import (
    Boto3Peer,
    LocalDiskPeer,
    MountPeer,
    Peer,
    RangefsPeer,
    RclonePeer,
    S3fsPeer,
    unmount_all,
)
from tests.benchmark.plot import plot
from tests.benchmark.report import DIRECT_ROW, LINK_ROW
from tests.benchmark.results import Results
from tests.benchmark.scenarios import (
    Context,
    cache_cycle,
    cold_copies,
    concurrent_readers,
    counted_cycle,
    fio_random_reads,
    link_ceiling,
    local_copies,
    media_seeks,
    verified_copy,
    wan_copy,
)
from tests.benchmark.workload import MAIN_SEED, Workload
from tests.support import REPO_ROOT
from tests.support.servers import start_seaweedfs

Job = tuple[tuple[str, ...], Callable[[], None]]


class Benchmark:
    """One run: the server, the plan of jobs within the time budget, the report."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.budget = Budget(args.budget_min * 60)
        self.results = Results()
        self.profiles = report.selected_profiles(args)
        report.declare_rows(self.results, self.profiles)
        self.scratch = Scratch(Path(tempfile.mkdtemp(prefix="rangefs-bench-", dir=args.work_dir)))
        self.workload = Workload.from_args(args)
        self.info = report.RunInfo(args, self.workload, datetime.datetime.now().astimezone())
        self.server: Any = None

    @property
    def work(self) -> Path:
        return self.scratch.root

    def job(
        self,
        keys: tuple[str, ...],
        fn: Callable[[], None],
        *,
        optional: bool = False,
        label: str = "a later run",
    ) -> None:
        """Run one measurement job; its errors become the rows' error text. An optional
        job leaves a fifth of the budget to the required ones."""
        only = self.args.only
        if only and not any(pattern in key for key in keys for pattern in only):
            for key in keys:
                self.results.fail(key, "not run (--only)")
            return
        reserve = 0.2 * self.budget.seconds if optional else 0.0
        if self.budget.remaining() <= reserve:
            for key in keys:
                self.results.fail(key, "skipped: time budget exhausted")
            log(f"skip {', '.join(keys)}: time budget")
            return
        log(f"== {', '.join(keys)}")
        try:
            fn()
        except Exception as e:
            message = str(e) if isinstance(e, BenchError) else f"{type(e).__name__}: {e}"
            log(f"   FAILED: {message}")
            if not isinstance(e, BenchError):
                traceback.print_exc()
            for key in keys:
                row = self.results.rows[key]
                if row.samples:
                    self.results.note(key, f"{label} failed: {one_line(message, 120)}")
                else:
                    self.results.fail(key, one_line(message))

    def run(self) -> None:
        log("starting SeaweedFS")
        self.server = start_seaweedfs(self.work / "seaweedfs")
        client = self.server.client(read_timeout=300)
        client.create_bucket(Bucket=BUCKET)
        log(f"SeaweedFS at {self.server.endpoint_url}")
        self.workload.upload(client)

        a, server, scratch = self.args, self.server, self.scratch
        endpoint, env = server.endpoint_url, server.env()
        rangefs = RangefsPeer(
            scratch, endpoint, env, chunk_size_mib=a.chunk_size_mib, args=a.rangefs_arg
        )
        proof_peers = [
            (
                RangefsPeer(
                    scratch,
                    endpoint,
                    env,
                    chunk_size_mib=PROOF_CHUNK_MIB,
                    args=[*a.rangefs_arg, "--proofs", mode],
                ),
                row,
            )
            for mode, row in PROOF_ROWS.items()
        ]
        s3fs = S3fsPeer(scratch, server, use_cache=False, options=a.s3fs_opt)
        s3fs_cache = S3fsPeer(scratch, server, use_cache=True, options=a.s3fs_opt)
        rclone = RclonePeer(scratch, server, a.rclone_arg)
        boto3_get = Boto3Peer(scratch, endpoint, env, "get")
        boto3_dl = Boto3Peer(scratch, endpoint, env, "download_file")
        local = LocalDiskPeer(scratch, MAIN_KEY, self.workload.size, MAIN_SEED)
        ctx = Context(
            self.results,
            scratch,
            self.workload,
            endpoint,
            a.repeat,
            self.budget,
            a.fio_runtime,
            env=env,
            link_workers=a.link_workers,
        )

        s3fs_keys = ("s3fs.cache.cold", "s3fs.cache.warm", "s3fs.cache.remount")
        rclone_keys = ("rclone.cold", "rclone.warm", "rclone.remount")
        rf_keys = ("rf.cold", "rf.warm", "rf.remount")
        # Required measurements first, so a short budget cuts only the extras.
        plan: list[Job] = [
            (
                ("boto3.get", "boto3.dl"),
                lambda: cold_copies(ctx, [(boto3_get, "boto3.get"), (boto3_dl, "boto3.dl")]),
            ),
            (
                ("local.disk", "local.page"),
                lambda: local_copies(ctx, local, "local.disk", "local.page"),
            ),
            (rf_keys, lambda: cache_cycle(ctx, rangefs, rf_keys)),
            (s3fs_keys, lambda: cache_cycle(ctx, s3fs_cache, s3fs_keys)),
            (rclone_keys, lambda: cache_cycle(ctx, rclone, rclone_keys)),
        ]
        wan_peers: list[tuple[str, Peer[Any]]] = [
            ("get", boto3_get),
            ("dl", boto3_dl),
            ("rf", rangefs),
            ("s3fs", s3fs),
        ]
        first, *others = self.profiles or (None,)
        if first is not None:
            plan.append(((LINK_ROW, DIRECT_ROW), lambda: link_ceiling(ctx, LINK_ROW, DIRECT_ROW)))
            plan += wan_jobs(ctx, first, wan_peers)
            plan.append(wan_media_job(ctx, first, "rf", rangefs))
        plan += [
            (("rf.probe", "rf.seek"), lambda: media_seeks(ctx, rangefs, "rf.probe", "rf.seek")),
            (("rf.conc",), lambda: concurrent_readers(ctx, rangefs, "rf.conc")),
            (("rf.file",), lambda: verified_copy(ctx, rangefs, "rf.file")),
            (tuple(PROOF_ROWS.values()), lambda: cold_copies(ctx, proof_peers, PROOF_EXTRA_RUNS)),
            (("s3fs.nocache",), lambda: cold_copies(ctx, [(s3fs, "s3fs.nocache")])),
            (("rf.fio",), lambda: fio_random_reads(ctx, rangefs, "rf.fio")),
        ]
        # The other link profiles after the rest: a short budget cuts them first.
        for profile in others:
            plan += wan_jobs(ctx, profile, wan_peers)
        for keys, fn in plan:
            self.job(keys, fn)
        # Bytes from the server for the copies: the cycles once more, counted.
        self.job(rf_keys, lambda: counted_cycle(ctx, rangefs, rf_keys), label="counted run")
        extras: list[tuple[tuple[str, ...], Callable[[], None], str]] = [
            (s3fs_keys, lambda: counted_cycle(ctx, s3fs_cache, s3fs_keys), "counted run"),
            (rclone_keys, lambda: counted_cycle(ctx, rclone, rclone_keys), "counted run"),
            (
                ("s3fs.probe", "s3fs.seek"),
                lambda: media_seeks(ctx, s3fs, "s3fs.probe", "s3fs.seek"),
                "",
            ),
            (
                ("rclone.probe", "rclone.seek"),
                lambda: media_seeks(ctx, rclone, "rclone.probe", "rclone.seek"),
                "",
            ),
            (("s3fs.conc",), lambda: concurrent_readers(ctx, s3fs, "s3fs.conc"), ""),
            (("rclone.conc",), lambda: concurrent_readers(ctx, rclone, "rclone.conc"), ""),
            (("s3fs.fio",), lambda: fio_random_reads(ctx, s3fs, "s3fs.fio"), ""),
            (("rclone.fio",), lambda: fio_random_reads(ctx, rclone, "rclone.fio"), ""),
        ]
        extras += [
            (job_keys, fn, "")
            for profile in self.profiles
            for job_keys, fn in wan_jobs(ctx, profile, [("rclone", rclone)])
        ]
        if first is not None:
            extras += [
                (*wan_media_job(ctx, first, tool, peer), "")
                for tool, peer in (("s3fs", s3fs), ("rclone", rclone))
            ]
        for keys, fn, label in extras:
            self.job(keys, fn, optional=True, label=label or "a later run")

    def write_report(self) -> None:
        out, chart = self.args.out, self.args.chart
        text = report.render(
            self.results,
            self.info,
            chart_name=chart.name,
            versions=report.versions(),
            machine=report.machine(),
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        log(f"wrote {out}")
        try:
            plot(
                self.results,
                chart,
                size=self.workload.size,
                started_at=self.info.started_at,
                quick=self.args.quick,
            )
            log(f"wrote {chart}")
        except Exception as e:
            log(f"chart not written: {type(e).__name__}: {e}")

    def cleanup(self) -> None:
        with deferred_sigint():
            unmount_all(self.work)
            if self.server is not None:
                self.server.stop()
            if not self.args.keep_work:
                shutil.rmtree(self.work, ignore_errors=True)


def wan_jobs(ctx: Context, profile: LinkProfile, peers: list[tuple[str, Peer[Any]]]) -> list[Job]:
    """One job per peer: a cold copy through the link simulator with ``profile``."""

    def job(peer: Peer[Any], key: str) -> Job:
        return ((key,), lambda: wan_copy(ctx, peer, key, profile))

    return [job(peer, f"{profile.key}.{tool}") for tool, peer in peers]


def wan_media_job(ctx: Context, profile: LinkProfile, tool: str, peer: MountPeer) -> Job:
    """ffprobe and ffmpeg -ss through the link simulator with ``profile``: a player's
    first bytes cost round trips there, not CPU."""
    probe, seek = (f"{profile.key}.{tool}.{what}" for what in ("probe", "seek"))
    return ((probe, seek), lambda: media_seeks(ctx, peer, probe, seek, profile))


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tests.benchmark.run_benchmark",
        description="Benchmark rangefs against boto3, s3fs-fuse and rclone mount on a local "
        "SeaweedFS; writes a Markdown report and a chart.",
    )
    p.add_argument("--quick", action="store_true", help="small objects, one repeat (smoke run)")
    p.add_argument("--size-mib", type=int, help="main object size (default 1024; quick 128)")
    p.add_argument("--repeat", type=int, help="runs per scenario, median reported (default 3)")
    p.add_argument("--conc-size-mib", type=int, help="each of the 8 concurrent objects (256)")
    p.add_argument("--wan-size-mib", type=int, help="object for the WAN test (default 512)")
    p.add_argument("--video-seconds", type=int, help="length of the test MP4 (default 120)")
    p.add_argument("--fio-runtime", type=int, help="longest fio pass, in seconds (default 120)")
    p.add_argument("--budget-min", type=float, help="time budget in minutes (default 18)")
    p.add_argument(
        "--wan-profile",
        action="append",
        choices=[prof.name for prof in WAN_PROFILES],
        metavar="NAME",
        help="simulated WAN link profile, repeatable (default all: "
        + "; ".join(f"{prof.name} = {prof.title}" for prof in WAN_PROFILES)
        + ")",
    )
    p.add_argument(
        "--link-workers",
        type=int,
        help=f"processes of the WAN link simulator (default {default_workers()})",
    )
    p.add_argument(
        "--only",
        action="append",
        metavar="TEXT",
        help="run only the jobs with a row key containing TEXT, repeatable (e.g. rf.proofs, "
        "20ms.): re-measure a few rows; the report lists the others as not run",
    )
    p.add_argument("--chunk-size-mib", type=int, default=8, help="rangefs --chunk-size (8)")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md")
    p.add_argument("--chart", type=Path, help="PNG path (default: benchmark.png next to --out)")
    p.add_argument("--work-dir", default=None, help="parent of the scratch directory (/tmp)")
    p.add_argument(
        "--assets-dir",
        default="/var/tmp/rangefs-benchmark",
        help="where the generated MP4 is cached between runs",
    )
    p.add_argument("--keep-work", action="store_true", help="keep the scratch directory")
    p.add_argument(
        "--rangefs-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for 'rangefs mount' (repeatable)",
    )
    p.add_argument(
        "--s3fs-opt",
        action="append",
        default=[],
        metavar="OPT",
        help="extra s3fs -o option (repeatable)",
    )
    p.add_argument(
        "--rclone-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for 'rclone mount' (repeatable)",
    )
    args = p.parse_args(argv)
    args.argv = argv
    full = {
        "size_mib": 1024,
        "repeat": 3,
        "conc_size_mib": 256,
        "wan_size_mib": 512,
        "video_seconds": 120,
        "fio_runtime": 120,
        "budget_min": 18.0,
    }
    quick = {
        "size_mib": 128,
        "repeat": 1,
        "conc_size_mib": 32,
        "wan_size_mib": 64,
        "video_seconds": 30,
        "fio_runtime": 60,
        "budget_min": 3.0,
    }
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.chart is None:
        args.chart = args.out.with_name("benchmark.png")
    return args


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if os.geteuid() != 0:
        print("run_benchmark: must run as root (drops the page cache)", file=sys.stderr)
        return 2
    # Ctrl-C and SIGTERM unwind through the finally blocks that unmount and stop
    # everything (also when started from a shell that ignores SIGINT for background jobs).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    bench = Benchmark(args)
    log(f"scratch directory {bench.work}; budget {args.budget_min:.0f} min")
    start = time.monotonic()
    try:
        try:
            bench.run()
        except KeyboardInterrupt:
            log("interrupted: cleaning up, no report written")
            return 130
        except Exception as e:
            log(f"setup failed: {type(e).__name__}: {e}")
            traceback.print_exc()
            return 1
        bench.info.wall = time.monotonic() - start
        bench.write_report()
        for name, measured, threshold, ok in report.targets(
            bench.results, bench.workload.size, bench.info.chunk
        ):
            verdict = "n/a " if ok is None else ("PASS" if ok else "MISS")
            log(f"{verdict} {name}: {measured} (target {threshold})")
        check, _ = report.link_check(bench.results)
        if check:
            log(check.replace("**", ""))
        return 0
    finally:
        bench.cleanup()


if __name__ == "__main__":
    sys.exit(main())
