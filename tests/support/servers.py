"""Local S3-compatible servers for the tests and the benchmarks.

Two back ends, because neither is enough alone:

* SeaweedFS (``weed server -s3``) is a real object store: Range GETs are served without
  copying the object, multipart ETags are AWS-style, ``If-Match`` is honoured and identities
  with restricted rights can be configured. It is the default for anything involving big
  objects or access control. Its command line lives in :mod:`rangefs.commands.locals3` (the demo's).
* moto keeps odd keys (``a//b``, ``./x``, ``../y``, very long components) byte-for-byte,
  which SeaweedFS normalises or refuses. It copies the whole object for every ranged GET,
  so it is only suitable for small objects.

Everything listens on 127.0.0.1 on ports chosen at start-up. Servers die with the process
that started them (parent-death signal, and an exit hook).

Run ``python -m tests.support.servers`` to start one in the foreground and print the
environment a shell needs to talk to it.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rangefs.commands import locals3

__all__ = ["DevServer", "free_port", "start_moto", "start_seaweedfs"]

PROBE_BUCKET = "rangefs-devserver-probe"

_live: set[DevServer] = set()
_live_lock = threading.Lock()


@dataclass(eq=False)
class DevServer(locals3.LocalS3):
    """A local S3 endpoint with an admin identity and, on SeaweedFS, one with no rights."""

    denied_access_key: str | None = None
    denied_secret_key: str | None = None
    owns_data_dir: bool = False

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

        Short timeouts make a wedged server fail a test quickly instead of hanging it.
        ``max_attempts`` counts the first try, so ``max_attempts=1`` shows faults un-retried.
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

    def stop(self) -> None:
        """Kill the server and forget it; safe to call more than once."""
        super().stop()
        if self.owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.owns_data_dir = False
        with _live_lock:
            _live.discard(self)

    def __enter__(self) -> DevServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return locals3.free_ports(1)[0]


def _pdeathsig_prefix() -> list[str]:
    """Make the server die with the process that started it.

    Without this, a test run killed hard (SIGKILL, OOM, CI timeout) leaves a SeaweedFS behind
    holding ports and disk. PR_SET_PDEATHSIG fires when the *thread* that forked exits, so it
    is only used from the main thread.
    """
    setpriv = shutil.which("setpriv")
    if setpriv and threading.current_thread() is threading.main_thread():
        return [setpriv, "--pdeathsig", "KILL", "--"]
    return []


def _register(server: DevServer) -> DevServer:
    with _live_lock:
        _live.add(server)
    return server


@atexit.register
def _stop_all() -> None:
    with _live_lock:
        servers = list(_live)
    for server in servers:
        server.stop()


def _start(server: DevServer, probe: Any, timeout: float, poll: float) -> DevServer:
    _register(server)
    try:
        locals3.wait_ready(server, probe, timeout, poll)
    except BaseException:
        server.stop()
        raise
    return server


def start_seaweedfs(data_dir: Path, *, timeout: float = 90) -> DevServer:
    """SeaweedFS with an admin identity and one that may read no test bucket; ready means a
    probe bucket accepts a put and returns it."""
    denied_access_key = "rangefs-denied-" + secrets.token_hex(4)
    denied_secret_key = secrets.token_hex(16)
    denied = {
        "name": "noaccess",
        "credentials": [{"accessKey": denied_access_key, "secretKey": denied_secret_key}],
        "actions": ["Read:nosuchbucket-xyz", "List:nosuchbucket-xyz"],
    }
    base = locals3.start_seaweedfs(data_dir, identities=[denied], prefix=_pdeathsig_prefix())
    server = DevServer(
        **{f: getattr(base, f) for f in locals3.LocalS3.__dataclass_fields__},
        denied_access_key=denied_access_key,
        denied_secret_key=denied_secret_key,
    )
    client = server.client(max_attempts=1, connect_timeout=1, read_timeout=10)

    def probe() -> None:
        with contextlib.suppress(
            client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists
        ):
            client.create_bucket(Bucket=PROBE_BUCKET)
        client.put_object(Bucket=PROBE_BUCKET, Key="probe", Body=b"ready")
        if client.get_object(Bucket=PROBE_BUCKET, Key="probe")["Body"].read() != b"ready":
            raise RuntimeError("probe object read back wrong")

    return _start(server, probe, timeout, poll=0.25)


def start_moto(*, timeout: float = 30, data_dir: Path | None = None) -> DevServer:
    """Start ``moto.server`` for odd-key tests; any credentials are accepted."""
    owns = data_dir is None
    data_dir = Path(tempfile.mkdtemp(prefix="rangefs-moto-")) if data_dir is None else data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_file = data_dir / "moto.log"
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    process = locals3.launch([*_pdeathsig_prefix(), *cmd], log_file, cwd=data_dir)
    server = DevServer(
        kind="moto",
        endpoint_url=f"http://127.0.0.1:{port}",
        access_key="testing",
        secret_key="testing",
        process=process,
        data_dir=data_dir,
        log_file=log_file,
        owns_data_dir=owns,
    )

    def probe() -> None:
        try:
            with urllib.request.urlopen(server.endpoint_url + "/", timeout=2) as response:
                response.read()
        except urllib.error.HTTPError:
            return  # any HTTP answer means it is serving

    return _start(server, probe, timeout, poll=0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.servers",
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
        server.owns_data_dir = tmp is not None
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
    """SeaweedFS 4.48 answers an empty PUT sent with ``Expect: 100-continue`` twice; the stray
    second answer poisons the kept-alive connection (the next request on it waits for its read
    timeout). Test data is small and local: send PUTs without that header."""
    from botocore.handlers import add_expect_header

    client.meta.events.unregister("before-call.s3", add_expect_header)


if __name__ == "__main__":
    sys.exit(main())
