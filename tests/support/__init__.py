"""Helpers shared by the tests: bounded subprocess calls and mount handling.

Everything that waits takes a timeout: a wedged FUSE daemon must fail one test,
not hang the whole session.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "REPO_ROOT",
    "SRC_DIR",
    "Mount",
    "is_mounted",
    "is_rangefs_process",
    "kill_rangefs",
    "mount_stats",
    "pid_alive",
    "rangefs_cli",
    "read_tail",
    "run",
    "sha256_file",
    "wait_for",
    "wait_fully_cached",
    "wait_pid_gone",
    "with_source",
]

FUSERMOUNT = "fusermount3"


REPO_ROOT = Path(__file__).resolve().parents[2]
SRC_DIR = REPO_ROOT / "src"


def with_source(env: dict[str, str]) -> dict[str, str]:
    """``env`` with this checkout's source first on PYTHONPATH, so a ``python -m rangefs``
    the tests start runs the code under test, whatever is installed."""
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(SRC_DIR)]
    return {**env, "PYTHONPATH": os.pathsep.join([str(SRC_DIR), *paths])}


def run(cmd: list[str], timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
    """``subprocess.run`` with captured text output and a mandatory timeout.

    Never raises on a non-zero exit: tests assert on ``returncode`` themselves
    so the failure message can include stderr.
    """
    if "stdout" not in kw and "stderr" not in kw:
        kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run(cmd, timeout=timeout, check=False, **kw)


def wait_for(
    predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll until ``predicate()`` is truthy and return its value; AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate!r}")
        time.sleep(interval)


def forget_pages(path: Path) -> None:
    """Drops the kernel's page cache of one file, so its next read reaches the daemon."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def cp_and_hash(source: Path, dest: Path) -> tuple[subprocess.CompletedProcess[str], str | None]:
    """``cp SOURCE DEST`` as a user runs it, and the copy's SHA-256 (None if cp left none)."""
    result = run(["cp", str(source), str(dest)], timeout=90)
    return result, sha256_file(dest) if dest.exists() else None


def xattr_value(path: Path, name: str) -> str:
    """An extended attribute as ``getfattr`` shows it (the command must succeed)."""
    out = run(["getfattr", "-n", name, "--only-values", str(path)])
    assert out.returncode == 0, out.stderr
    return out.stdout


def _unescape_mountinfo(field_: str) -> str:
    out, i = [], 0
    while i < len(field_):
        if field_[i] == "\\" and i + 3 < len(field_) and field_[i + 1 : i + 4].isdigit():
            out.append(chr(int(field_[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field_[i])
            i += 1
    return "".join(out)


def is_mounted(path: Path | str) -> bool:
    """Whether ``path`` is a mount point, per /proc/self/mountinfo.

    ``os.path.ismount`` stats the path, which hangs on a wedged FUSE daemon and
    fails with ENOTCONN on a dead one; the mount table answers both.
    """
    target = os.path.abspath(path)
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        return any(_unescape_mountinfo(line.split(" ")[4]) == target for line in f)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie.

    The daemon is not our child (it double-forks), so nothing here reaps it; a
    container's init may not reap it either, and a zombie has already exited.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def is_rangefs_process(pid: int) -> bool:
    """Guards every SIGKILL: after a long test the recorded PID may have been
    reused by an unrelated process."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"rangefs" in cmdline


def kill_rangefs(pid: int, timeout: float = 30) -> bool:
    """SIGKILL ``pid`` if it is still a rangefs process; True once it is gone."""
    if pid_alive(pid) and is_rangefs_process(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return wait_pid_gone(pid, timeout)


def wait_pid_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def read_tail(path: Path | None, nbytes: int = 8000) -> str:
    if path is None:
        return "(none)"
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - nbytes))
            return f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"(cannot read {path}: {e})"


@dataclass
class Mount:
    """A live rangefs mount made through the real CLI."""

    path: Path
    cache_dir: Path
    log_file: Path
    pid_file: Path
    pid: int
    source: str
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def mounted(self) -> bool:
        return is_mounted(self.path)

    @property
    def alive(self) -> bool:
        return pid_alive(self.pid)

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, nbytes: int = 8000) -> str:
        return read_tail(self.log_file, nbytes)

    def unmount(self, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``fusermount3 -u`` and wait for the daemon to exit, like a user would.

        With ``check`` a refused unmount or a daemon that outlives its mount is
        an AssertionError: both are rangefs bugs, not harness trouble.
        """
        result = run([FUSERMOUNT, "-u", str(self.path)], timeout=timeout)
        if not check:
            return result
        assert result.returncode == 0, (
            f"fusermount3 -u {self.path} failed ({result.returncode}): {result.stderr.strip()}"
        )
        assert wait_pid_gone(self.pid, timeout), (
            f"rangefs daemon {self.pid} still running {timeout} s after unmount; "
            f"log tail:\n{self.log_tail()}"
        )
        return result

    def kill(self, timeout: float = 30) -> None:
        """SIGKILL the daemon (a crash) and detach the dead mount."""
        kill_rangefs(self.pid, timeout)
        if is_mounted(self.path):
            run([FUSERMOUNT, "-uz", str(self.path)], timeout=timeout)

    def cleanup(self, timeout: float = 30) -> list[str]:
        """Best-effort teardown that never raises; returns what went wrong."""
        problems: list[str] = []
        try:
            if is_mounted(self.path):
                result = run([FUSERMOUNT, "-u", str(self.path)], timeout=timeout)
                if result.returncode != 0:
                    problems.append(f"fusermount3 -u: {result.stderr.strip()}")
            if is_mounted(self.path):
                run([FUSERMOUNT, "-uz", str(self.path)], timeout=timeout)
                problems.append("needed lazy unmount")
        except (subprocess.TimeoutExpired, OSError) as e:
            problems.append(f"unmount: {e!r}")
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                run([FUSERMOUNT, "-uz", str(self.path)], timeout=timeout)
        if not wait_pid_gone(self.pid, 10):
            problems.append(f"daemon {self.pid} survived unmount; killed")
            kill_rangefs(self.pid, timeout)
        return problems


def sha256_file(path: Path) -> str:
    """SHA-256 of a (possibly large) file, read in blocks."""
    with Path(path).open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def rangefs_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 90) -> Any:
    """Runs the real CLI of this interpreter's rangefs: ``python -m rangefs ARGS``."""
    return run([sys.executable, "-m", "rangefs", *args], env=env, timeout=timeout)


def mount_stats(mount: Mount) -> dict[str, Any]:
    """The daemon's counters (the root's ``user.rangefs.stats`` xattr)."""
    return json.loads(os.getxattr(mount.path, "user.rangefs.stats"))


def wait_fully_cached(path: Path, timeout: float = 20) -> None:
    """Chunks reach the disk cache just after they are served: wait for every one."""
    wait_for(
        lambda: set(os.getxattr(path, "user.rangefs.chunks").decode().split()[1]) <= {"#"},
        timeout=timeout,
        what=f"every chunk of {path} in the disk cache",
    )
