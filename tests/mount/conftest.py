"""Fixtures: local S3 servers, buckets, the fault proxy and real CLI mounts.

Mounts go through ``python -m rangefs mount`` exactly as a user would run it,
so daemonisation, option parsing and exit codes are exercised by every test
that reads through a mount.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    Mount,
    is_mounted,
    kill_rangefs,
    read_tail,
    run,
    wait_for,
    with_source,
)
from tests.support.patterns import upload_pattern
from tests.support.proxy import CountingProxy
from tests.support.servers import DevServer, start_moto, start_seaweedfs

_STARTED = pytest.StashKey[float]()


@pytest.fixture(scope="session", autouse=True)
def fuse_available() -> None:
    """Every mount test errors (never skips quietly) without FUSE; the unit and core tiers,
    which need none, still run."""
    problems = []
    if not os.path.exists("/dev/fuse"):
        problems.append("/dev/fuse does not exist")
    elif not os.access("/dev/fuse", os.R_OK | os.W_OK):
        problems.append("/dev/fuse is not readable and writable by this user")
    if shutil.which("fusermount3") is None:
        problems.append("fusermount3 is not on PATH (install fuse3)")
    if problems:
        pytest.fail("FUSE unavailable: " + "; ".join(problems), pytrace=False)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Expose each phase's report as ``item.rep_<phase>`` so fixtures can tell
    in their finalizer whether the test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """pytest-timeout's clock starts with setup (session fixtures included);
    the mount watchdog must count from the same moment."""
    item.stash[_STARTED] = time.monotonic()


def _failed(node: pytest.Item) -> bool:
    return any(
        getattr(getattr(node, f"rep_{phase}", None), "failed", False) for phase in ("setup", "call")
    )


@pytest.fixture(scope="session")
def s3server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """SeaweedFS for the whole session (start-up costs seconds)."""
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"), timeout=90)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.data_dir / "store", ignore_errors=True)


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """moto, started only if some test asks: odd keys, small objects."""
    server = start_moto(data_dir=tmp_path_factory.mktemp("moto"), timeout=30)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3(s3server: DevServer) -> Any:
    """An admin boto3 client for the SeaweedFS server."""
    return s3server.client()


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


@pytest.fixture
def make_bucket(
    request: pytest.FixtureRequest, s3server: DevServer
) -> Iterator[Callable[..., str]]:
    """Factory for fresh, uniquely named buckets (SeaweedFS unless ``server=``).

    SeaweedFS buckets are deleted at teardown, contents and all, so big test
    objects do not accumulate on disk over a session.
    """
    created: list[tuple[DevServer, str]] = []

    def make(suffix: str = "", *, server: DevServer | None = None) -> str:
        server = server or s3server
        tail = "-" + secrets.token_hex(3)
        middle = _slug(request.node.name) + (f"-{_slug(suffix)}" if suffix else "")
        name = ("t-" + middle)[: 63 - len(tail)].rstrip("-") + tail
        server.client().create_bucket(Bucket=name)
        created.append((server, name))
        return name

    yield make

    for server, name in created:
        if server.kind != "seaweedfs" or not server.alive:
            continue
        with contextlib.suppress(Exception):
            server.client(max_attempts=1).delete_bucket(Bucket=name)


@pytest.fixture
def seeded_bucket(make_bucket: Callable[..., str], s3server: DevServer) -> Callable[..., str]:
    """A fresh bucket holding pattern objects: ``seeded_bucket({"a.bin": (size, seed)})``."""

    def make(objects: dict[str, tuple[int, int]]) -> str:
        bucket = make_bucket()
        client = s3server.client()
        for key, (size, seed) in objects.items():
            upload_pattern(client, bucket, key, size, seed)
        return bucket

    return make


@pytest.fixture
def proxied_mount(
    rangefs_mount: RangefsMounter, proxy: CountingProxy, tmp_path: Path
) -> Callable[..., Mount]:
    """``proxied_mount(bucket, *args)``: a mount through the counting proxy, on one cache dir
    per test (``tmp_path/cache``), so a second call is a remount that resumes from the same
    checkpoint. ``cache_dir=`` overrides it."""
    cache = tmp_path / "cache"

    def mount(bucket: str, *args: str, cache_dir: Path | None = cache) -> Mount:
        return rangefs_mount(bucket, *args, endpoint=proxy.url, cache_dir=cache_dir)

    return mount


@pytest.fixture
def proxy(s3server: DevServer) -> Iterator[CountingProxy]:
    """A fresh counting/fault proxy in front of SeaweedFS."""
    with CountingProxy(s3server.endpoint_url, seed=0) as p:
        yield p


def _test_timeout(request: pytest.FixtureRequest) -> float | None:
    """The pytest-timeout budget of this test: marker, then --timeout, then ini."""
    marker = request.node.get_closest_marker("timeout")
    value: Any = None
    if marker is not None:
        value = marker.args[0] if marker.args else marker.kwargs.get("timeout")
    if value is None:
        value = request.config.getoption("timeout", None)
    if value is None:
        with contextlib.suppress(ValueError):
            value = request.config.getini("timeout")
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if seconds > 0 else None


class RangefsMounter:
    """The ``rangefs_mount`` fixture: mounts via the CLI, always cleans up.

    ``rangefs_mount(source, *extra_args, endpoint=..., cache_dir=..., env=...,
    chunk_size="1M")`` returns a live :class:`Mount` or raises AssertionError
    with the CLI's stderr and the daemon log. ``try_mount`` is the same call
    for tests that expect the CLI to fail; it returns the CompletedProcess and
    the Mount if one came up.

    A watchdog kills the daemons shortly before the test's pytest-timeout
    expires. A test blocked in a read on a wedged mount cannot be interrupted
    by pytest-timeout's SIGALRM (the kernel waits for the daemon), so without
    this the session would hang; with it, the read fails with ENOTCONN and
    the test fails normally, with the daemon log in its report.
    """

    def __init__(self, request: pytest.FixtureRequest, server: DevServer, base: Path) -> None:
        self._request = request
        self._server = server
        self._base = base
        self._counter = itertools.count()
        self.mounts: list[Mount] = []
        self._mountpoints: list[tuple[Path, Path]] = []
        self._last_log: Path | None = None
        self.watchdog_fired = False
        self._watchdog: threading.Timer | None = None
        budget = _test_timeout(request)
        if budget is not None:
            started = request.node.stash.get(_STARTED, time.monotonic())
            fire_at = started + max(budget - 15, budget * 0.75)
            self._watchdog = threading.Timer(
                max(0.0, fire_at - time.monotonic()), self._on_watchdog
            )
            self._watchdog.daemon = True
            self._watchdog.start()

    def _on_watchdog(self) -> None:
        self.watchdog_fired = True
        print(
            f"\n[harness] {self._request.node.nodeid}: near its timeout; "
            "SIGKILLing rangefs daemons to unblock it",
            file=sys.__stderr__,
            flush=True,
        )
        for mount in list(self.mounts):
            with contextlib.suppress(Exception):
                mount.kill(timeout=10)

    def __call__(
        self,
        source: str,
        *extra_args: str,
        endpoint: str | None = None,
        cache_dir: Path | None = None,
        env: dict[str, str] | None = None,
        chunk_size: str | None = "1M",
        timeout: float = 60,
    ) -> Mount:
        result, mount = self.try_mount(
            source,
            *extra_args,
            endpoint=endpoint,
            cache_dir=cache_dir,
            env=env,
            chunk_size=chunk_size,
            timeout=timeout,
        )
        if result.returncode != 0 or mount is None:
            log_file = self._last_log
            raise AssertionError(
                f"rangefs mount failed (exit {result.returncode})\n"
                f"command: {' '.join(result.args)}\n"
                f"stderr: {result.stderr.strip()}\n"
                f"stdout: {result.stdout.strip()}\n"
                f"daemon log tail ({log_file}):\n{read_tail(log_file)}"
            )
        return mount

    def try_mount(
        self,
        source: str,
        *extra_args: str,
        endpoint: str | None = None,
        cache_dir: Path | None = None,
        env: dict[str, str] | None = None,
        chunk_size: str | None = "1M",
        timeout: float = 60,
    ) -> tuple[subprocess.CompletedProcess[str], Mount | None]:
        n = next(self._counter)
        mountpoint = self._base / f"mnt{n}"
        mountpoint.mkdir()
        if cache_dir is None:
            cache_dir = self._base / f"cache{n}"
        log_file = self._base / f"rangefs{n}.log"
        pid_file = self._base / f"rangefs{n}.pid"
        self._last_log = log_file
        self._mountpoints.append((mountpoint, pid_file))

        argv = [
            sys.executable,
            "-m",
            "rangefs",
            "mount",
            "--endpoint-url",
            endpoint or self._server.endpoint_url,
            "--cache-dir",
            str(cache_dir),
            "--log-level",
            "debug",
            "--log-file",
            str(log_file),
            "--pid-file",
            str(pid_file),
        ]
        if chunk_size is not None:
            argv += ["--chunk-size", chunk_size]
        argv += [*extra_args, source, str(mountpoint)]

        env = with_source(self._server.env() if env is None else env)

        # Output goes to files, not pipes: a daemon that forgot to detach its
        # stdio would otherwise keep the pipe open and hang the call.
        out_file = self._base / f"rangefs{n}.stdout"
        err_file = self._base / f"rangefs{n}.stderr"
        with out_file.open("w") as out, err_file.open("w") as err:
            try:
                proc = subprocess.run(
                    argv, env=env, stdout=out, stderr=err, timeout=timeout, check=False
                )
                returncode = proc.returncode
            except subprocess.TimeoutExpired:
                returncode = -9
                err.write(f"\n[harness] rangefs mount did not return within {timeout} s\n")
        result = subprocess.CompletedProcess(
            argv, returncode, out_file.read_text(), err_file.read_text()
        )
        if returncode != 0:
            return result, None

        assert is_mounted(mountpoint), (
            f"rangefs mount exited 0 but {mountpoint} is not mounted; "
            f"stderr: {result.stderr.strip()}\nlog tail:\n{read_tail(log_file)}"
        )
        pid_text = wait_for(
            lambda: pid_file.exists() and pid_file.read_text().strip(),
            timeout=5,
            what=f"pid file {pid_file}",
        )
        mount = Mount(
            path=mountpoint,
            cache_dir=cache_dir,
            log_file=log_file,
            pid_file=pid_file,
            pid=int(pid_text),
            source=source,
            argv=argv,
            env=env,
        )
        self.mounts.append(mount)
        return result, mount

    def cleanup(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        failed = _failed(self._request.node) or self.watchdog_fired
        if self.watchdog_fired:
            print("\n[harness] watchdog killed the rangefs daemons (test near its timeout)")
        known = {m.path for m in self.mounts}
        for mount in self.mounts:
            problems = mount.cleanup()
            if failed or problems:
                print(f"\n--- rangefs {mount.path} (pid {mount.pid}) ---")
                for problem in problems:
                    print(f"teardown: {problem}")
                print(f"daemon log tail ({mount.log_file}):\n{mount.log_tail()}")
        for mountpoint, pid_file in self._mountpoints:
            if mountpoint in known:
                continue
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                if is_mounted(mountpoint):
                    run(["fusermount3", "-u", str(mountpoint)], timeout=30)
                if is_mounted(mountpoint):
                    run(["fusermount3", "-uz", str(mountpoint)], timeout=30)
            with contextlib.suppress(OSError, ValueError):
                kill_rangefs(int(pid_file.read_text().strip()), timeout=10)


@pytest.fixture
def rangefs_mount(
    request: pytest.FixtureRequest,
    s3server: DevServer,
    make_bucket: Callable[..., str],
    tmp_path: Path,
) -> Iterator[RangefsMounter]:
    """Factory: ``rangefs_mount(bucket, "--metadata-ttl", "0", endpoint=proxy.url)``.

    Depends on ``make_bucket`` so that buckets outlive the mounts using them.
    """
    mounter = RangefsMounter(request, s3server, tmp_path)
    try:
        yield mounter
    finally:
        mounter.cleanup()
