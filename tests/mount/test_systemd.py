"""systemd integration: the shipped units verify cleanly, the template unit's command line
mounts, and rangefs speaks the notify protocol (READY=1 only once mounted, WATCHDOG=1 from
the running loop, STOPPING=1 on SIGTERM) to a socket these tests bind in systemd's place.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rangefs import cli
from rangefs.daemon import sdnotify
from tests.mount.test_operations import cli_env, ensure_mount_helper
from tests.support import REPO_ROOT, is_mounted, run
from tests.support.patterns import pattern_bytes, upload_pattern
from tests.support.servers import DevServer

SYSTEMD_DIR = REPO_ROOT / "systemd"
UNIT_FILES = ("rangefs@.service", "mnt-bucket.mount", "mnt-bucket.automount")
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
WATCHDOG_USEC = 400_000  # pings every 0.2 s
OBJECT_SIZE = 3 * 1024 * 1024 + 17


# --- unit files ---------------------------------------------------------------------------


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail(
            "systemd-analyze not found: install the 'systemd' package (apt-get install systemd)"
        )
    return path


def verify(directory: Path, *units: str) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze verify`` as an administrator would run it on the installed files."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYSTEMD_")}
    return run(
        [systemd_analyze(), "verify", *(str(directory / u) for u in units)], timeout=60, env=env
    )


def assert_clean(result: subprocess.CompletedProcess[str]) -> None:
    """verify prints warnings (an unknown key, a bad value) with exit status 0: clean means
    status 0 and nothing said at all."""
    said = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and not said, f"systemd-analyze verify: {said}"


@pytest.fixture
def unit_dir(tmp_path: Path) -> Path:
    ensure_mount_helper()  # ExecStart= must exist: verify checks it
    directory = tmp_path / "units"
    directory.mkdir()
    for name in UNIT_FILES:
        shutil.copy(SYSTEMD_DIR / name, directory / name)
    return directory


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "units",
    [
        pytest.param(("rangefs@.service",), id="template"),
        pytest.param(("rangefs@media.service",), id="instance"),
        pytest.param(("mnt-bucket.mount", "mnt-bucket.automount"), id="mount+automount"),
    ],
)
def test_units_verify_cleanly(unit_dir: Path, units: tuple[str, ...]) -> None:
    assert_clean(verify(unit_dir, *units))


@pytest.mark.timeout(60)
def test_verify_catches_what_it_should(unit_dir: Path) -> None:
    """The clean result above means something: the same check fails on broken units."""
    service = unit_dir / "rangefs@.service"
    text = service.read_text()
    service.write_text(text.replace("WatchdogSec=", "WatchdogSecs="))
    result = verify(unit_dir, "rangefs@.service")
    assert "Unknown key 'WatchdogSecs'" in result.stderr
    service.write_text(text.replace("/usr/local/bin/rangefs", "/usr/local/bin/no-such-rangefs"))
    assert verify(unit_dir, "rangefs@.service").returncode != 0
    mount = unit_dir / "mnt-bucket.mount"
    mount.write_text(mount.read_text().replace("Where=/mnt/bucket", "Where=/mnt/other"))
    assert verify(unit_dir, "mnt-bucket.mount").returncode != 0


def unit_settings(path: Path) -> dict[str, list[str]]:
    """``Section.Key`` -> values, in order (unit files may repeat a key)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        settings.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return settings


def test_service_template_settings() -> None:
    s = unit_settings(SYSTEMD_DIR / "rangefs@.service")
    assert s["Service.Type"] == ["notify"]
    assert s["Service.NotifyAccess"] == ["main"]
    assert s["Service.Restart"] == ["on-failure"]
    assert s["Service.RestartPreventExitStatus"] == ["2"]  # usage errors: no restart loop
    assert s["Service.EnvironmentFile"] == ["/etc/rangefs/%i.conf"]
    assert int(s["Service.WatchdogSec"][0]) > 0
    assert int(s["Service.TimeoutStartSec"][0]) > 60  # more than the bucket check's retries
    (start,) = s["Service.ExecStart"]
    assert start.startswith("/usr/local/bin/rangefs mount --foreground ")
    (stop_post,) = s["Service.ExecStopPost"]
    assert stop_post.startswith("-") and "fusermount3 -uz ${RANGEFS_MOUNTPOINT}" in stop_post
    for key in s:  # a private mount namespace would hide the mount from everyone else
        assert not key.startswith(("Service.Private", "Service.Protect", "Service.ReadOnly"))


def parse_environment_file(path: Path) -> dict[str, str]:
    """systemd's EnvironmentFile= for the simple cases the docs promise: KEY=VALUE lines,
    '#'/';' comments, surrounding quotes removed."""
    env = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key.strip()), raw
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def parse_mount_options(*argv: str) -> Any:
    """What ``rangefs mount`` would make of these arguments (no mount is attempted)."""
    parser = cli.build_parser()
    args = parser.parse_args(cli.expand_fstab_options(["mount", *argv]))
    return cli.config_from_args(args)


def test_example_config_and_mount_unit_options_parse() -> None:
    conf = parse_environment_file(SYSTEMD_DIR / "example.conf")
    assert {"RANGEFS_SOURCE", "RANGEFS_MOUNTPOINT", "RANGEFS_OPTIONS"} <= set(conf)
    config = parse_mount_options(
        *conf["RANGEFS_OPTIONS"].split(), conf["RANGEFS_SOURCE"], conf["RANGEFS_MOUNTPOINT"]
    )
    assert config.allow_other and config.endpoint_url and config.bucket

    mount = unit_settings(SYSTEMD_DIR / "mnt-bucket.mount")
    assert mount["Mount.Type"] == ["fuse.rangefs"]
    assert mount["Mount.Where"] == ["/mnt/bucket"]
    config = parse_mount_options(
        "-o", mount["Mount.Options"][0], mount["Mount.What"][0], mount["Mount.Where"][0]
    )
    assert config.allow_other and config.endpoint_url
    assert str(config.cache_dir) == "/var/cache/rangefs/bucket"
    automount = unit_settings(SYSTEMD_DIR / "mnt-bucket.automount")
    assert automount["Automount.Where"] == mount["Mount.Where"]


def test_unknown_fstab_option_is_a_usage_error() -> None:
    with pytest.raises(cli.UserError) as info:
        parse_mount_options("-o", "_netdev,x-systemd.automount,bogus=1", "b", "/mnt/x")
    assert cli.exit_status(info.value) == 2


# --- sd_notify, unit level ----------------------------------------------------------------


def test_notify_without_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/notify.sock")
    assert sdnotify.notify("READY=1") is False  # a gone socket is not an error


@pytest.mark.parametrize(
    ("usec", "pid", "period"),
    [
        ("400000", None, 0.2),
        ("400000", "self", 0.2),
        ("400000", "1", None),  # meant for another process
        (None, None, None),
        ("0", None, None),
        ("soon", None, None),
    ],
)
def test_watchdog_period(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, period: float | None
) -> None:
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, str(os.getpid()) if value == "self" else value)
    assert sdnotify.watchdog_period() == period


# --- sd_notify, through a real mount ------------------------------------------------------


@dataclass
class Message:
    at: float
    fields: dict[str, str]
    mounted: bool  # whether the mountpoint was in the mount table when it arrived


class NotifySocket:
    """The receiving end of $NOTIFY_SOCKET: a path or an abstract name (``@name``)."""

    def __init__(self, address: str, watch: Path) -> None:
        self.address = address
        self.watch = watch
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.messages: list[Message] = []

    def receive(self, timeout: float) -> Message | None:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return None
        fields = dict(line.partition("=")[::2] for line in data.decode().splitlines() if line)
        message = Message(time.monotonic(), fields, is_mounted(self.watch))
        self.messages.append(message)
        return message

    def wait_for(self, key: str, timeout: float, proc: subprocess.Popen[bytes]) -> Message:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.receive(min(0.5, deadline - time.monotonic()))
            if message is not None and key in message.fields:
                return message
            if message is None and proc.poll() is not None:
                break
        raise AssertionError(
            f"no {key} within {timeout} s (exit status {proc.poll()}); got "
            f"{[m.fields for m in self.messages]}"
        )

    def close(self) -> None:
        self.sock.close()
        if not self.address.startswith("@"):
            Path(self.address).unlink(missing_ok=True)


def socket_path(tmp_path: Path) -> str:
    """A unix socket path short enough for sun_path (108 bytes)."""
    path = tmp_path / "notify.sock"
    return str(path) if len(str(path)) < 100 else f"/tmp/rangefs-{secrets.token_hex(6)}.sock"


@pytest.fixture
def notify_address(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "abstract":
        return f"@rangefs-test-{secrets.token_hex(6)}"
    return socket_path(tmp_path)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Starts a foreground rangefs; at teardown unmounts (-u, then -uz) and kills it."""
    started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(argv: list[str], env: dict[str, str], mountpoint: Path) -> subprocess.Popen[bytes]:
        n = len(started)
        with (
            (tmp_path / f"fg{n}.out").open("wb") as out,
            (tmp_path / f"fg{n}.err").open("wb") as err,
        ):
            proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        started.append((proc, mountpoint))
        return proc

    yield start

    for proc, mountpoint in started:
        for flags in ("-u", "-uz"):
            if is_mounted(mountpoint):
                run(["fusermount3", flags, str(mountpoint)], timeout=30)
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def foreground_argv(
    server: DevServer, cache: Path, source: str, mountpoint: Path, *extra: str
) -> list[str]:
    return [
        *(sys.executable, "-m", "rangefs", "mount", "--foreground"),
        *("--endpoint-url", server.endpoint_url, "--cache-dir", str(cache)),
        *extra,
        source,
        str(mountpoint),
    ]


def stderr_of(tmp_path: Path, n: int = 0) -> str:
    return (tmp_path / f"fg{n}.err").read_text(errors="replace")[-4000:]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("notify_address", ["path", "abstract"], indirect=True)
def test_notify_protocol(
    s3server: DevServer,
    make_bucket: Callable[..., str],
    s3: Any,
    tmp_path: Path,
    notify_address: str,
    spawn: Callable[..., subprocess.Popen[bytes]],
) -> None:
    bucket = make_bucket()
    upload_pattern(s3, bucket, "clip.bin", OBJECT_SIZE, seed=11)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    notify = NotifySocket(notify_address, mnt)
    try:
        env = cli_env(s3server, NOTIFY_SOCKET=notify_address, WATCHDOG_USEC=str(WATCHDOG_USEC))
        env.pop("WATCHDOG_PID", None)
        proc = spawn(
            foreground_argv(s3server, tmp_path / "cache", bucket, mnt, "--chunk-size", "1M"),
            env,
            mnt,
        )
        ready = notify.wait_for("READY", 60, proc)
        assert ready.fields["READY"] == "1"
        assert ready.mounted, "READY=1 arrived before the mount was in the mount table"
        assert all(m.mounted for m in notify.messages if "READY" in m.fields)
        assert ready.fields.get("STATUS", "").startswith(f"mounted s3://{bucket}/ on ")
        assert (mnt / "clip.bin").read_bytes() == pattern_bytes(0, OBJECT_SIZE, seed=11)

        first = notify.wait_for("WATCHDOG", 10, proc)
        assert first.fields["WATCHDOG"] == "1"
        while notify.receive(0) is not None:  # pings queued while the test was reading
            pass
        window_start = len(notify.messages)
        end = time.monotonic() + 1.2
        while time.monotonic() < end:
            notify.receive(end - time.monotonic())
        pings = [m.at for m in notify.messages[window_start:] if m.fields.get("WATCHDOG") == "1"]
        assert len(pings) >= 3, f"{len(pings)} WATCHDOG=1 in 1.2 s at WATCHDOG_USEC=400000"
        # every WATCHDOG_USEC / 2 = 0.2 s; the mean is robust against a late receipt
        mean_gap = (pings[-1] - pings[0]) / (len(pings) - 1)
        assert 0.15 < mean_gap < 0.35, [round(b - a, 3) for a, b in itertools.pairwise(pings)]

        proc.send_signal(signal.SIGTERM)
        stopping = notify.wait_for("STOPPING", 30, proc)
        assert stopping.fields["STOPPING"] == "1"
        assert proc.wait(timeout=30) == 0, stderr_of(tmp_path)
        assert not is_mounted(mnt)
        assert "got SIGTERM: unmounting" in stderr_of(tmp_path)
    finally:
        notify.close()


@pytest.mark.timeout(90)
def test_no_ready_when_the_mount_fails(
    s3server: DevServer,
    tmp_path: Path,
    spawn: Callable[..., subprocess.Popen[bytes]],
) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    notify = NotifySocket(socket_path(tmp_path), mnt)
    try:
        env = cli_env(s3server, NOTIFY_SOCKET=notify.address, WATCHDOG_USEC=str(WATCHDOG_USEC))
        proc = spawn(
            foreground_argv(s3server, tmp_path / "cache", f"no-such-{secrets.token_hex(4)}", mnt),
            env,
            mnt,
        )
        assert proc.wait(timeout=60) == 1
        while notify.receive(0.2) is not None:
            pass
        assert not any("READY" in m.fields for m in notify.messages), notify.messages
        assert "does not exist" in stderr_of(tmp_path)
        assert not is_mounted(mnt)
    finally:
        notify.close()


def expand_command(line: str, instance: str, env: dict[str, str]) -> tuple[bool, list[str]]:
    """An Exec*= line as systemd runs it: (failure ignored, argv). Handles what the shipped
    unit uses: the '-' prefix, %i and %%, ``${VAR}`` (one word) and ``$VAR`` (split on
    whitespace)."""
    ignore = line.startswith("-")
    line = line.lstrip("-@:+!")
    line = re.sub(r"%([i%])", lambda m: instance if m[1] == "i" else "%", line)
    argv: list[str] = []
    for word in shlex.split(line):
        if m := re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word):
            argv.extend(env.get(m[1], "").split())
        else:
            argv.append(re.sub(r"\$\{([A-Za-z_]\w*)\}", lambda m: env.get(m[1], ""), word))
    return ignore, argv


@pytest.mark.timeout(120)
def test_template_unit_command_lines(
    s3server: DevServer,
    make_bucket: Callable[..., str],
    s3: Any,
    tmp_path: Path,
    spawn: Callable[..., subprocess.Popen[bytes]],
) -> None:
    """ExecStartPre/ExecStart/ExecStopPost of rangefs@.service, expanded from an instance
    config the way the unit documents it, mount, notify and clean up."""
    ensure_mount_helper()
    bucket = make_bucket()
    upload_pattern(s3, bucket, "videos/clip.bin", OBJECT_SIZE, seed=12)
    mnt = tmp_path / "media" / "mnt"  # missing: ExecStartPre creates it
    cache = tmp_path / "cache"
    conf = tmp_path / "media.conf"
    conf.write_text(
        "# test instance\n"
        f"RANGEFS_SOURCE=s3://{bucket}/videos\n"
        f"RANGEFS_MOUNTPOINT={mnt}\n"
        f'RANGEFS_OPTIONS="--endpoint-url {s3server.endpoint_url} '
        f'-o cache_dir={cache},chunk_size=1M"\n'
        f"AWS_ACCESS_KEY_ID={s3server.access_key}\n"
        f"AWS_SECRET_ACCESS_KEY='{s3server.secret_key}'\n"
        f"AWS_REGION={s3server.region}\n"
    )
    server_env = cli_env(s3server)
    env = {
        "PATH": SYSTEMD_PATH,
        "LANG": "C.UTF-8",
        "PYTHONPATH": server_env["PYTHONPATH"],
        **{k: server_env[k] for k in server_env if k.startswith("AWS_") and "KEY" not in k},
        **parse_environment_file(conf),
    }
    settings = unit_settings(SYSTEMD_DIR / "rangefs@.service")
    instance = "media-" + secrets.token_hex(3)
    for line in settings.get("Service.ExecStartPre", []):
        ignore, argv = expand_command(line, instance, env)
        result = run(argv, env=env, timeout=30)
        assert ignore or result.returncode == 0, (argv, result.stderr)
    assert mnt.is_dir()

    notify = NotifySocket(socket_path(tmp_path), mnt)
    try:
        (start,) = settings["Service.ExecStart"]
        _, argv = expand_command(start, instance, env)
        assert argv[0] == "/usr/local/bin/rangefs"
        proc = spawn(argv, {**env, "NOTIFY_SOCKET": notify.address}, mnt)
        ready = notify.wait_for("READY", 60, proc)
        assert ready.mounted, stderr_of(tmp_path)
        assert (mnt / "clip.bin").read_bytes() == pattern_bytes(0, OBJECT_SIZE, seed=12)
        assert any(cache.iterdir()), "cache_dir= in RANGEFS_OPTIONS must override the default"
        assert not Path(f"/var/cache/rangefs/{instance}").exists()

        proc.send_signal(signal.SIGTERM)  # systemctl stop
        notify.wait_for("STOPPING", 30, proc)
        assert proc.wait(timeout=30) == 0, stderr_of(tmp_path)
        assert not is_mounted(mnt)
    finally:
        notify.close()
    (stop_post,) = settings["Service.ExecStopPost"]
    ignore, argv = expand_command(stop_post, instance, env)
    assert argv[-1] == str(mnt)
    result = run(argv, env=env, timeout=30)
    assert ignore and result.returncode != 0  # nothing left to unmount; '-' keeps it quiet
