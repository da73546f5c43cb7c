"""A/B of rangefs trees on one server: did a change make reads faster or slower?

The full benchmark compares rangefs with its peers; this compares rangefs with itself. Each
tree (a checkout's ``src`` directory, e.g. a ``git worktree`` of an older commit) mounts the
same object on the same local SeaweedFS, runs interleaved (A, B, B, A, ...) so a noisy
machine hurts both alike, with a fresh cache and the page cache dropped before each cold
read. Prints per-run figures, the daemon's counters (the work done, which noise does not
change; for fio, also its CPU per read) and medians. fio is one pass over the object
(:func:`~tests.benchmark.common.fio_command` says why)::

    git worktree add /tmp/base <rev>
    python -m tests.benchmark.ab base=/tmp/base/src head=src --size-mib 1024 --fio

Arms may also be one tree with different mount options, e.g. what checking S3's proofs
costs (the object is uploaded in 16 MiB parts)::

    python -m tests.benchmark.ab off=src etag=src auto=src --mount-arg=--chunk-size=16M \
        --arm-arg=off=--proofs=off --arm-arg=etag=--proofs=etag --arm-arg=auto=--proofs=auto
"""

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.benchmark.common import fio_pass
from tests.benchmark.link import link
from tests.support.patterns import upload_pattern
from tests.support.servers import start_seaweedfs

MiB = 1024 * 1024
BUCKET, KEY = "ab-test", "big.bin"
COUNTERS = ("gets", "range_hits", "fill_hits", "misses", "proofs_passed")


def drop_page_cache() -> None:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def timed(cmd: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(cmd, check=True, timeout=600, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def daemon_cpu_seconds(pid: int) -> float:
    """User + system CPU the daemon has used so far (a phase's is the difference): the cost of
    its work, which a busy machine slows down but does not change (unlike MB/s)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_gone(pid: int, timeout: float = 60.0) -> None:
    """Waits until the daemon has exited (an unmount returns before it closed its cache)."""
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmark.ab", description=__doc__)
    parser.add_argument("trees", nargs="+", metavar="NAME=SRC", help="a tree's src directory")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--fio", action="store_true", help="also random 64 KiB reads (fio, one pass, cold)"
    )
    parser.add_argument("--fio-limit", type=int, default=120, help="longest fio pass (s)")
    parser.add_argument("--mount-arg", action="append", default=[], help="extra mount argument")
    parser.add_argument(
        "--arm-arg",
        action="append",
        default=[],
        metavar="NAME=ARG",
        help="extra mount argument for one arm only (repeatable)",
    )
    parser.add_argument(
        "--link",
        metavar="LATENCY,MBPS",
        help="mount through the WAN link simulator: seconds to the first byte, MB/s per "
        "connection (e.g. 0.02,50)",
    )
    args = parser.parse_args(argv)
    trees = dict(t.split("=", 1) for t in args.trees)
    arm_args: dict[str, list[str]] = {name: [] for name in trees}
    for item in args.arm_arg:
        name, _, arg = item.partition("=")
        if name not in arm_args:
            parser.error(f"--arm-arg {item}: no arm named {name!r}")
        arm_args[name].append(arg)
    size = args.size_mib * MiB
    base = Path(tempfile.mkdtemp(prefix="rangefs-ab-"))
    server = start_seaweedfs(base / "s3")
    results: dict[str, dict[str, list[float]]] = {n: {} for n in trees}
    stack = contextlib.ExitStack()
    try:
        endpoint = server.endpoint_url
        if args.link:
            latency, mbps = (float(x) for x in args.link.split(","))
            endpoint = stack.enter_context(link(endpoint, latency=latency, bandwidth=mbps * 1e6))
        client = server.client()
        client.create_bucket(Bucket=BUCKET)
        upload_pattern(client, BUCKET, KEY, size, seed=9)
        for run in range(args.runs):
            # Every other run in reverse order (A B, B A, ...): in an A/B of one tree against
            # itself, the arm that went second had the better fio figure in every round (1.66x
            # in the medians).
            order = list(trees.items())
            for name, src in order[::-1] if run % 2 else order:
                work = base / f"{name}-{run}"
                cache, mnt = work / "cache", work / "mnt"
                mnt.mkdir(parents=True)
                env = {**server.env(), "PYTHONPATH": src}
                pid_file = work / "pid"
                mount = [sys.executable, "-m", "rangefs", "mount", "--endpoint-url",
                         endpoint, "--cache-dir", str(cache), "--pid-file",
                         str(pid_file), *args.mount_arg, *arm_args[name], BUCKET,
                         str(mnt)]  # fmt: skip
                figures: dict[str, float] = {}
                for phase in ("cold", "warm", *(("fio",) if args.fio else ())):
                    if phase == "fio":
                        shutil.rmtree(cache)
                    subprocess.run(mount, env=env, check=True, timeout=90)
                    os.stat(mnt / KEY)
                    drop_page_cache()
                    cpu_before = daemon_cpu_seconds(int(pid_file.read_text()))
                    if phase == "fio":
                        done = fio_pass(mnt / KEY, size, args.fio_limit)
                        figures[phase], reads = done.iops, done.reads
                    else:
                        figures[phase] = size / timed(["cp", str(mnt / KEY), "/dev/null"]) / 1e6
                    stats = json.loads(os.getxattr(mnt, "user.rangefs.stats"))
                    work_done = {k: stats.get(k) for k in COUNTERS if k in stats}
                    pid = int(pid_file.read_text())
                    cpu = daemon_cpu_seconds(pid) - cpu_before
                    work_done["daemon_cpu_s"] = round(cpu, 2)
                    if phase == "fio":
                        work_done["cpu_ms_per_read"] = round(1000 * cpu / max(1, reads), 3)
                    subprocess.run(["fusermount3", "-u", str(mnt)], check=True, timeout=30)
                    wait_gone(pid)
                    unit = "IOPS" if phase == "fio" else "MB/s"
                    print(f"{name:>8} run {run} {phase:<4} {figures[phase]:8.0f} {unit}  "
                          f"{work_done}", flush=True)  # fmt: skip
                    results[name].setdefault(phase, []).append(figures[phase])
                    results[name].setdefault(f"{phase} cpu-s", []).append(cpu)
                shutil.rmtree(work, ignore_errors=True)
        medians = {n: {p: statistics.median(v) for p, v in ph.items()} for n, ph in results.items()}
        first = next(iter(medians))
        for name, phases in medians.items():
            line = ", ".join(f"{p} {m:.1f}" for p, m in phases.items())
            ratios = ", ".join(f"{p} {m / medians[first][p]:.2f}x" for p, m in phases.items())
            print(f"median {name}: {line}  (vs {first}: {ratios})")
    finally:
        stack.close()
        for mnt in base.glob("*/mnt"):
            subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True, timeout=30)
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
