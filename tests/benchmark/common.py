"""What every part of the benchmark shares: the bucket's objects, logging, failures as
report text, bounded commands, the time budget and the scratch directory."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests import support

MiB = 1024 * 1024
BUCKET = "bench"
MAIN_KEY = "pattern.bin"
VIDEO_KEY = "video.mp4"
WAN_KEY = "wan.bin"
CONC_READERS = 8
# The proof-cost rows: the main object (uploaded in 16 MiB parts) read in chunks of its part
# size, with each --proofs mode.
PROOF_CHUNK_MIB = 16
# Two more runs than the others: the auto row's target (>= 0.9x off) sits within the
# +-10 % that three runs of a noisy machine leave (0.83x, 0.89x, 0.98x, 0.99x in four runs).
PROOF_EXTRA_RUNS = 2
PROOF_ROWS = {mode: f"rf.proofs.{mode}" for mode in ("off", "etag", "auto")}
#: Parallel ranged GETs that measure the link simulator's own ceiling (latency 0, no cap).
LINK_STREAMS = 16


@dataclass(frozen=True)
class LinkProfile:
    """A simulated WAN link: ``latency`` before each request's first response byte and
    a ``bandwidth`` cap (bytes/s) per connection. ``key`` prefixes the profile's rows."""

    name: str
    key: str
    latency: float
    bandwidth: float

    @property
    def title(self) -> str:
        return f"WAN {self.latency * 1000:.0f} ms, {self.bandwidth / 1e6:.0f} MB/s per connection"


WAN_PROFILES = (
    LinkProfile("20ms", "wan20", 0.02, 50e6),
    LinkProfile("60ms", "wan60", 0.06, 15e6),
)
# rclone's VFS cache records which ranges it holds 5 s after a file's last close;
# unmounting sooner makes it fetch everything again after the remount.
RCLONE_SETTLE = 6.0


def conc_key(i: int) -> str:
    return f"conc-{i}.bin"


_T0 = time.monotonic()


def log(text: str) -> None:
    print(f"[{time.monotonic() - _T0:6.0f}s] {text}", flush=True)


class BenchError(Exception):
    """A measurement failed; the message ends up in the report."""


def one_line(text: str, limit: int = 220) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def run(
    cmd: list[str], *, timeout: float, check: bool = True, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """:func:`tests.support.run` with every failure as a BenchError, whose one-line
    message becomes the error of the rows the measurement was for."""
    try:
        proc = support.run(cmd, timeout=timeout, stdin=subprocess.DEVNULL, **kw)
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


def timeout_for(nbytes: int, min_rate: float = 10e6) -> float:
    """A bound for reading ``nbytes``: a wedged peer fails its row instead of the run."""
    return max(60.0, nbytes / min_rate + 30)


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


def drop_caches() -> None:
    """Before every cold read: otherwise the kernel, not the peer, serves the bytes."""
    run(["sync"], timeout=180)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as e:
        raise BenchError(f"cannot drop the page cache (run as root): {e}") from None


FIO_BLOCK = 64 * 1024


@dataclass(frozen=True)
class FioPass:
    """One fio pass of random reads: ``reads`` done in ``seconds`` (all the file's blocks
    unless the time limit came first: ``complete``)."""

    reads: int
    seconds: float
    complete: bool

    @property
    def iops(self) -> float:
        return self.reads / self.seconds if self.seconds else 0.0


def fio_command(path: Path, size: int, limit: int) -> list[str]:
    """Random 64 KiB reads, each block of the file exactly once (fio's random map), in an
    order fixed by the seed, stopping after ``limit`` seconds if not done.

    One pass, not a fixed time: fio starts every pass over a file by reopening it and
    dropping its pages (``invalidate``), so no peer's reads are ever served by the page
    cache, and a 10 s run's IOPS were mostly how many cheap reads of fetched bytes fitted
    after the slow start (the first seconds fetch the whole object, at 20-200 IOPS):
    the same rangefs tree gave 351 and 1,844 IOPS. A pass reads every block once from a
    cold start: its time is the fetch plus one read of each block, and runs of one tree
    agree within ~15 %.
    """
    return [
        "fio", "--name=rand", f"--filename={path}", "--rw=randread",
        f"--bs={FIO_BLOCK}", f"--size={size}", f"--runtime={limit}", "--direct=0",
        "--ioengine=psync", "--numjobs=1", "--readonly", "--randseed=42",
        "--output-format=json",
    ]  # fmt: skip


def fio_pass(path: Path, size: int, limit: int) -> FioPass:
    """Runs :func:`fio_command` and reads its JSON report."""
    proc = run(fio_command(path, size, limit), timeout=limit + 120)
    read = json.loads(proc.stdout[proc.stdout.find("{") :])["jobs"][0]["read"]
    reads = int(read["total_ios"])
    seconds = read["runtime"] / 1000 if read.get("runtime") else float(limit)
    return FioPass(reads, seconds, reads >= size // FIO_BLOCK)


class Budget:
    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.seconds = seconds

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0


class Scratch:
    """The run's scratch directory: every mount point, cache and copy gets a fresh,
    numbered directory in it, so ``--keep-work`` leaves each daemon's log behind."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._counter = 0

    def new_dir(self, prefix: str) -> Path:
        self._counter += 1
        path = self.root / f"{prefix}-{self._counter}"
        path.mkdir(parents=True)
        return path
