"""README command 1 runs ``rangefs demo``: it must work end to end (small object here)."""

import contextlib
import os
import re
import signal
import subprocess
import sys

import pytest

from tests.support import is_mounted, run


@pytest.mark.timeout(180)
def test_demo_mounts_copies_and_serves_the_remount_from_the_cache(tmp_path):
    env = {**os.environ, "RANGEFS_DEMO_DIR": str(tmp_path / "demo"), "RANGEFS_DEMO_SIZE_MIB": "24"}
    mnt = tmp_path / "demo" / "mnt"
    try:
        result = subprocess.run(
            [sys.executable, "-m", "rangefs", "demo"], env=env, capture_output=True, text=True,
            timeout=150,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        out = result.stdout
        assert "sha256 matches" in out
        assert re.search(r"\d+ Range GETs, 24\.0 MiB fetched, 3 chunks cached", out), out
        assert "remount + cp" in out and ": 0 Range GETs, all from the disk cache" in out, out
        assert is_mounted(mnt) and f"umount {mnt}" in out
    finally:
        if is_mounted(mnt):
            run(["fusermount3", "-u", str(mnt)])
        if is_mounted(mnt):
            run(["fusermount3", "-uz", str(mnt)])
        pid_file = tmp_path / "demo" / "server.pid"
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
