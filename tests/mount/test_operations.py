"""Operating a mount the way an administrator does: mount(8) and fstab, a dead mountpoint,
xattrs, metrics, logs, and who may read the files.

mount(8) runs ``/sbin/mount.fuse.rangefs`` for type ``fuse.rangefs`` and ``/sbin/mount.rangefs``
for type ``rangefs`` (both installed by ``scripts/install-mount-helper.sh``, which this module
runs if one is missing, and leaves installed), so these tests need root.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import (
    REPO_ROOT,
    is_mounted,
    kill_rangefs,
    pid_alive,
    read_tail,
    run,
    wait_for,
    wait_pid_gone,
    with_source,
)
from tests.support.patterns import pattern_bytes, upload_pattern
from tests.support.proxy import asked_bytes, covered
from tests.support.servers import DevServer, free_port

INSTALL_SCRIPT = REPO_ROOT / "scripts" / "install-mount-helper.sh"
BIN_LINK = Path("/usr/local/bin/rangefs")
MOUNT_HELPERS = (Path("/sbin/mount.fuse.rangefs"), Path("/sbin/mount.rangefs"))
# mount -t TYPE and the fstab type column: both run rangefs through their /sbin helper.
FSTYPES = ("fuse.rangefs", "rangefs")
HELPER_MARKER = "installed by rangefs install-mount-helper.sh"
NOBODY = 65534
MiB = 1024 * 1024
CHUNK = MiB


def console_script() -> Path:
    import sysconfig

    return Path(sysconfig.get_path("scripts")) / "rangefs"


def ensure_mount_helper() -> None:
    """Runs the install script unless /usr/local/bin/rangefs already is this environment's
    rangefs and both /sbin helpers are ours; fails (never skips) if that is impossible."""
    if os.geteuid() != 0:
        pytest.fail("mount(8) and systemd tests need root (they install a mount helper)")
    target = console_script()
    if not target.exists():
        pytest.fail(f"{target} missing: run 'pip install -e .' in {sys.executable}'s environment")
    linked = BIN_LINK.exists() and BIN_LINK.resolve() == target.resolve()
    helpers = all(
        h.exists() and HELPER_MARKER in h.read_text(errors="replace") for h in MOUNT_HELPERS
    )
    if linked and helpers:
        return
    result = run(["sh", str(INSTALL_SCRIPT)], env={**os.environ, "PYTHON": sys.executable})
    if result.returncode != 0:
        pytest.fail(
            f"{INSTALL_SCRIPT} failed ({result.returncode}): {result.stderr.strip()} "
            f"{result.stdout.strip()}"
        )
    assert BIN_LINK.resolve() == target.resolve(), f"{BIN_LINK} does not point to {target}"
    for helper in MOUNT_HELPERS:
        assert os.access(helper, os.X_OK), f"{helper} not installed"


def cli_env(server: DevServer, **extra: str) -> dict[str, str]:
    """The server's credentials, and this checkout's source first on the import path."""
    return {**with_source(server.env()), **extra}


def cat(path: Path, *, user: int | None = None) -> subprocess.CompletedProcess[bytes]:
    cmd = ["cat", str(path)]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    return run(cmd, timeout=60, text=False)


class Scratch:
    """Mountpoints outside pytest's 0700 tmp dirs (other uids must reach them); whatever is
    mounted on them or runs from their pid files is stopped at teardown."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="rangefs-ops-", dir="/tmp"))
        self.base.chmod(0o755)
        self.mountpoints: list[Path] = []

    def mountpoint(self, name: str = "mnt") -> Path:
        path = self.base / name
        path.mkdir(mode=0o755)
        self.mountpoints.append(path)
        return path

    def pid(self, name: str = "mnt") -> int:
        pid_file = self.base / f"{name}.pid"
        text = wait_for(
            lambda: pid_file.exists() and pid_file.read_text().strip(), 5, what=str(pid_file)
        )
        return int(text)

    def cleanup(self) -> None:
        for path in self.mountpoints:
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                if is_mounted(path):
                    run(["fusermount3", "-u", str(path)], timeout=30)
                if is_mounted(path):
                    run(["fusermount3", "-uz", str(path)], timeout=30)
        for pid_file in self.base.glob("*.pid"):
            with contextlib.suppress(OSError, ValueError):
                kill_rangefs(int(pid_file.read_text().strip()), timeout=10)
        if not any(is_mounted(p) for p in self.mountpoints):
            shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def mount_helper() -> None:
    ensure_mount_helper()


@pytest.fixture
def scratch() -> Iterator[Scratch]:
    s = Scratch()
    try:
        yield s
    finally:
        s.cleanup()


@pytest.fixture
def bucket(make_bucket: Callable[..., str], s3: Any) -> str:
    """A bucket holding ``data/file.bin``: 2.5 chunks of pattern seed 5."""
    name = make_bucket()
    upload_pattern(s3, name, "data/file.bin", FILE_SIZE, seed=5)
    return name


FILE_SIZE = 2 * CHUNK + CHUNK // 2
FILE_BYTES = pattern_bytes(0, FILE_SIZE, seed=5)


def fstab_options(server: DevServer, scratch: Scratch, name: str = "mnt") -> str:
    base = scratch.base
    return (
        f"endpoint_url={server.endpoint_url},cache_dir={base}/{name}-cache,chunk_size=1M,"
        f"log_file={base}/{name}.log,log_level=debug,pid_file={base}/{name}.pid"
    )


# --- mount(8) and fstab -------------------------------------------------------------------


@pytest.mark.timeout(90)
@pytest.mark.parametrize("fstype", FSTYPES)
def test_mount8_with_fstab_and_systemd_options(
    mount_helper: None, s3server: DevServer, bucket: str, scratch: Scratch, fstype: str
) -> None:
    """``mount -t fuse.rangefs`` and ``mount -t rangefs`` accept what fstab and systemd add,
    read right, and umount."""
    mnt = scratch.mountpoint()
    opts = (
        fstab_options(s3server, scratch)
        + ",allow_other,_netdev,nofail,x-systemd.automount,rw,dev,suid,exec"
    )
    result = run(["mount", "-t", fstype, bucket, str(mnt), "-o", opts], env=cli_env(s3server))
    log_tail = read_tail(scratch.base / "mnt.log")
    assert result.returncode == 0, f"mount failed: {result.stderr}\n{log_tail}"
    assert is_mounted(mnt)
    pid = scratch.pid()
    fs = run(["findmnt", "-n", "-o", "FSTYPE,SOURCE,OPTIONS", str(mnt)])
    kernel_type, source, mount_opts = fs.stdout.split()
    assert (kernel_type, source) == ("fuse.rangefs", bucket)  # whichever type mount(8) got
    assert "allow_other" in mount_opts.split(",") and "ro" in mount_opts.split(",")

    got = cat(mnt / "data" / "file.bin")
    assert got.returncode == 0, got.stderr
    assert got.stdout == FILE_BYTES

    result = run(["umount", str(mnt)])
    assert result.returncode == 0, result.stderr
    assert not is_mounted(mnt)
    assert wait_pid_gone(pid, 30), "daemon still running after umount"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("fstype", FSTYPES)
def test_fstab_line(
    mount_helper: None, s3server: DevServer, bucket: str, scratch: Scratch, fstype: str
) -> None:
    """An /etc/fstab-style line (here a private file: ``mount --fstab FILE MNT``) mounts,
    with type ``fuse.rangefs`` or ``rangefs``."""
    mnt = scratch.mountpoint()
    fstab = scratch.base / "fstab"
    options = fstab_options(s3server, scratch) + ",_netdev,nofail,x-systemd.automount"
    fstab.write_text(f"# rangefs test fstab\ns3://{bucket}/data {mnt} {fstype} {options} 0 0\n")
    result = run(["mount", "--fstab", str(fstab), str(mnt)], env=cli_env(s3server))
    assert result.returncode == 0, f"mount failed: {result.stderr}"
    pid = scratch.pid()
    got = cat(mnt / "file.bin")
    assert got.returncode == 0, got.stderr
    assert got.stdout == FILE_BYTES
    assert run(["umount", str(mnt)]).returncode == 0
    assert wait_pid_gone(pid, 30)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fstype", FSTYPES)
def test_mount8_unknown_option_fails_cleanly(
    mount_helper: None, s3server: DevServer, bucket: str, scratch: Scratch, fstype: str
) -> None:
    mnt = scratch.mountpoint()
    opts = fstab_options(s3server, scratch) + ",no_such_option=1"
    result = run(["mount", "-t", fstype, bucket, str(mnt), "-o", opts], env=cli_env(s3server))
    assert result.returncode != 0
    assert "unknown option: 'no_such_option'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not is_mounted(mnt)
    assert not (scratch.base / "mnt.pid").exists()


@pytest.mark.timeout(90)
def test_mount_fuse3_route_without_path(
    mount_helper: None, s3server: DevServer, bucket: str, scratch: Scratch
) -> None:
    """Without /sbin/mount.fuse.rangefs, mount(8) falls back to mount.fuse3, which runs
    ``rangefs SOURCE MNT -o ...`` through /bin/sh with no PATH (mount(8) passes none): the
    /usr/local/bin/rangefs symlink must be found on the shell's default path."""
    mount_fuse3 = shutil.which("mount.fuse3", path="/sbin:/usr/sbin")
    assert mount_fuse3, "mount.fuse3 not found: install fuse3"
    mnt = scratch.mountpoint()
    env = cli_env(s3server)
    del env["PATH"]
    opts = fstab_options(s3server, scratch) + ",_netdev,nofail,rw"
    result = run([mount_fuse3, bucket, str(mnt), "-o", opts, "-t", "fuse.rangefs"], env=env)
    assert result.returncode == 0, result.stderr
    pid = scratch.pid()
    assert cat(mnt / "data" / "file.bin").stdout == FILE_BYTES
    assert run(["umount", str(mnt)]).returncode == 0
    assert wait_pid_gone(pid, 30)


def install_env(tmp_path: Path) -> dict[str, str]:
    """The install script's environment, installing into tmp_path/bin and tmp_path/sbin."""
    if os.geteuid() != 0:
        pytest.fail("the install script must run as root")
    return {
        **os.environ,
        "PYTHON": sys.executable,
        "BINDIR": str(tmp_path / "bin"),
        "SBINDIR": str(tmp_path / "sbin"),
    }


def installed_files(tmp_path: Path) -> list[Path]:
    return sorted(p for d in ("bin", "sbin") for p in (tmp_path / d).glob("*"))


def test_install_says_what_it_did_and_uninstall_undoes_it(tmp_path: Path) -> None:
    """One line per thing installed, "already installed" the second time; --uninstall
    removes exactly those, saying so, and leaves nothing behind."""
    env = install_env(tmp_path)
    link = tmp_path / "bin" / "rangefs"
    helpers = [tmp_path / "sbin" / "mount.fuse.rangefs", tmp_path / "sbin" / "mount.rangefs"]
    target = console_script()
    first = run(["sh", str(INSTALL_SCRIPT)], env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        f"installed: {link} -> {target}",
        *(f"installed: {h}" for h in helpers),
    ]
    assert installed_files(tmp_path) == sorted([link, *helpers])
    assert link.resolve() == target.resolve()
    for helper in helpers:
        assert os.access(helper, os.X_OK) and HELPER_MARKER in helper.read_text()

    again = run(["sh", str(INSTALL_SCRIPT)], env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [
        f"already installed: {link} -> {target}",
        *(f"already installed: {h}" for h in helpers),
    ]

    gone = run(["sh", str(INSTALL_SCRIPT), "--uninstall"], env=env)
    assert gone.returncode == 0, gone.stderr
    assert sorted(gone.stdout.splitlines()) == sorted(f"removed: {p}" for p in [*helpers, link])
    assert installed_files(tmp_path) == []
    twice = run(["sh", str(INSTALL_SCRIPT), "--uninstall"], env=env)
    assert twice.returncode == 0 and "removed" not in twice.stdout, twice.stdout


def test_uninstall_leaves_other_files_alone(tmp_path: Path) -> None:
    """Files at the same paths without the marker are someone else's: install refuses to
    replace them, uninstall keeps them (and says so)."""
    env = install_env(tmp_path)
    for d in ("bin", "sbin"):
        (tmp_path / d).mkdir()
    theirs = tmp_path / "sbin" / "mount.rangefs"
    theirs.write_text("#!/bin/sh\necho someone else's helper\n")
    refused = run(["sh", str(INSTALL_SCRIPT)], env=env)
    assert refused.returncode != 0 and f"{theirs} exists" in refused.stderr, refused.stderr
    assert installed_files(tmp_path) == [theirs]

    theirs.unlink()
    assert run(["sh", str(INSTALL_SCRIPT)], env=env).returncode == 0
    link = tmp_path / "bin" / "rangefs"
    link.unlink()
    link.symlink_to("/bin/true")  # someone pointed rangefs elsewhere
    theirs.write_text("#!/bin/sh\necho someone else's helper\n")
    (tmp_path / "bin" / "other").write_text("keep")
    gone = run(["sh", str(INSTALL_SCRIPT), "--uninstall"], env=env)
    assert gone.returncode == 0, gone.stderr
    assert gone.stdout.splitlines() == [
        f"removed: {tmp_path / 'sbin' / 'mount.fuse.rangefs'}",
        f"left alone: {theirs} (not installed by this script)",
        f"left alone: {link} (not installed by this script)",
    ]
    assert installed_files(tmp_path) == sorted([link, tmp_path / "bin" / "other", theirs])


@pytest.mark.parametrize("name", ["mount.fuse.rangefs", "mount.rangefs"])
def test_helper_turns_mount8_call_into_rangefs_mount(tmp_path: Path, name: str) -> None:
    """Each helper turns mount(8)'s call into a ``rangefs mount`` command line."""
    env = install_env(tmp_path)
    assert run(["sh", str(INSTALL_SCRIPT)], env=env).returncode == 0
    link, helper = tmp_path / "bin" / "rangefs", tmp_path / "sbin" / name
    # Swap the target for a stub that prints its arguments, then call the helper the way
    # mount(8) does.
    link.unlink()
    link.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    link.chmod(0o755)
    call = run([str(helper), "s3://b/p", "/mnt/x", "-n", "-s", "-o", "rw,a=1", "-ob", "-t", "x"])
    assert call.returncode == 0, call.stderr
    assert call.stdout.splitlines() == ["mount", "-o", "rw,a=1,b", "s3://b/p", "/mnt/x"]
    bare = run([str(helper), "b", "/mnt/x"])
    assert bare.stdout.splitlines() == ["mount", "b", "/mnt/x"]
    assert run([str(helper), "b", "/mnt/x", "-f"]).stdout == ""  # mount -f: fake, no mount
    refused = run([str(helper), "b", "/mnt/x", "-N", "1234"])
    assert refused.returncode != 0
    assert refused.stderr.strip() == f"{name}: unsupported argument: -N"
    usage = run([str(helper), "only-one"])
    assert usage.returncode != 0 and usage.stderr.startswith(f"usage: {name} SOURCE")


# --- a dead mountpoint --------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_dead_mountpoint_is_healed(
    rangefs_mount: Any, s3server: DevServer, bucket: str, tmp_path: Path
) -> None:
    """SIGKILL leaves ENOTCONN behind; the next ``rangefs mount`` there cleans up and mounts."""
    first = rangefs_mount(bucket)
    os.kill(first.pid, signal.SIGKILL)
    assert wait_pid_gone(first.pid, 30)
    assert is_mounted(first.path)
    ls = run(["ls", str(first.path)], timeout=30)
    assert ls.returncode != 0
    assert (
        "Transport endpoint is not connected" in ls.stderr
        or "Software caused connection abort" in ls.stderr
    ), ls.stderr

    log_file, pid_file = tmp_path / "again.log", tmp_path / "again.pid"
    argv = [
        sys.executable, "-m", "rangefs", "mount",
        "--endpoint-url", s3server.endpoint_url, "--cache-dir", str(tmp_path / "again-cache"),
        "--chunk-size", "1M", "--log-file", str(log_file), "--pid-file", str(pid_file),
        bucket, str(first.path),
    ]  # fmt: skip
    pid = None
    try:
        result = run(argv, env=cli_env(s3server), timeout=90)
        assert result.returncode == 0, f"{result.stderr}\n{read_tail(log_file)}"
        pid = int(pid_file.read_text())
        got = cat(first.path / "data" / "file.bin")
        assert got.returncode == 0, got.stderr
        assert got.stdout == FILE_BYTES
        log = log_file.read_text()
        assert f"mountpoint {first.path} is a dead FUSE mount" in log, log
        assert log.index("dead FUSE mount") < log.index("mounted s3://")
    finally:
        if is_mounted(first.path):
            run(["fusermount3", "-u", str(first.path)], timeout=30)
        if is_mounted(first.path):
            run(["fusermount3", "-uz", str(first.path)], timeout=30)
        if pid is not None and not wait_pid_gone(pid, 30):
            kill_rangefs(pid, 10)


@pytest.mark.timeout(90)
def test_two_mounts_share_a_cache_dir(rangefs_mount: Any, bucket: str, tmp_path: Path) -> None:
    """What one mount fetched, another mount of the same bucket on the same --cache-dir
    serves from disk, without a GET (diskcache is safe for several processes)."""
    shared = tmp_path / "shared-cache"
    first = rangefs_mount(bucket, cache_dir=shared)
    second = rangefs_mount(bucket, cache_dir=shared)
    assert cat(first.path / "data" / "file.bin").stdout == FILE_BYTES
    wait_fully_cached(first.path / "data" / "file.bin")
    assert cat(second.path / "data" / "file.bin").stdout == FILE_BYTES
    stats = [
        json.loads(os.getxattr(m.path, "user.rangefs.stats").decode()) for m in (first, second)
    ]
    assert (stats[0]["gets"], stats[0]["bytes_fetched"]) == (3, FILE_SIZE)
    assert stats[1]["gets"] == 0
    assert stats[1]["range_hits"] >= 3, stats[1]


# --- introspection: xattrs, metrics, logs -------------------------------------------------


def wait_fully_cached(path: Path) -> dict[str, str]:
    """Chunks reach the disk cache just after they are served: the xattrs catch up."""
    return wait_for(
        lambda: (
            (x := getfattr_dump(path))["user.rangefs.cached"] == f"{FILE_SIZE} {FILE_SIZE}" and x
        ),
        timeout=10,
        what=f"{path} fully cached",
    )


def getfattr_dump(path: Path) -> dict[str, str]:
    result = run(["getfattr", "-d", str(path)])
    assert result.returncode == 0, result.stderr
    out = {}
    for line in result.stdout.splitlines():
        name, sep, value = line.partition("=")
        if sep:
            assert value.startswith('"') and value.endswith('"'), line
            out[name] = value[1:-1].replace('\\"', '"')
    return out


@pytest.mark.timeout(90)
def test_xattrs(rangefs_mount: Any, bucket: str, s3: Any) -> None:
    mnt = rangefs_mount(bucket)
    path = mnt.path / "data" / "file.bin"
    etag = s3.head_object(Bucket=bucket, Key="data/file.bin")["ETag"]

    before = getfattr_dump(path)
    assert before == {
        "user.rangefs.etag": etag,
        "user.rangefs.cached": f"0 {FILE_SIZE}",
        "user.rangefs.chunks": f"{CHUNK} ...",
        "user.rangefs.uri": f"s3://{bucket}/data/file.bin",
        "user.rangefs.verified": "etag-md5 pending",
        "user.rangefs.pinned": "no",
    }
    assert os.getxattr(path, "user.rangefs.etag") == etag.encode()

    assert cat(path).stdout == FILE_BYTES
    after = wait_fully_cached(path)
    assert after["user.rangefs.cached"] == f"{FILE_SIZE} {FILE_SIZE}"
    assert after["user.rangefs.chunks"] == f"{CHUNK} ###"
    assert after["user.rangefs.verified"] == "etag-md5 verified"  # S3's MD5 ETag held

    stats = run(["getfattr", "-n", "user.rangefs.stats", "--only-values", str(mnt.path)])
    assert stats.returncode == 0, stats.stderr
    counters = json.loads(stats.stdout)
    assert counters["gets"] == 3
    assert counters["bytes_fetched"] == FILE_SIZE
    root = getfattr_dump(mnt.path)
    assert set(root) == {"user.rangefs.uri", "user.rangefs.stats", "user.rangefs.online",
                         "user.rangefs.pins"}  # fmt: skip
    assert root["user.rangefs.uri"] == f"s3://{bucket}/"
    assert root["user.rangefs.online"] == "online"
    pins = json.loads(root["user.rangefs.pins"])
    assert (pins["files"], pins["bytes"], pins["cache_dir"]) == (0, 0, str(mnt.cache_dir))


def scrape(port: int) -> dict[str, float]:
    """Samples of http://127.0.0.1:PORT/metrics as ``name{label="v"}`` -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return samples


@pytest.mark.timeout(90)
def test_metrics_endpoint(rangefs_mount: Any, bucket: str) -> None:
    port = free_port()
    mnt = rangefs_mount(bucket, "--metrics-addr", f"127.0.0.1:{port}")
    cold = scrape(port)
    assert cold["rangefs_gets_total"] == 0
    assert cold["rangefs_fetched_bytes_total"] == 0

    assert cat(mnt.path / "data" / "file.bin").stdout == FILE_BYTES
    # chunks are written to the disk cache after they are served: wait for the last one
    warm = wait_for(
        lambda: (m := scrape(port))["rangefs_chunks_stored_total"] == 3 and m,
        timeout=10,
        what="3 chunks stored",
    )
    assert warm["rangefs_gets_total"] >= 3  # at least one Range GET per 1 MiB chunk
    assert warm["rangefs_fetched_bytes_total"] == FILE_SIZE
    assert warm["rangefs_cache_misses_total"] >= 1  # reads that waited for S3
    assert warm["rangefs_read_bytes_total"] == FILE_SIZE
    assert warm["rangefs_read_seconds_count"] > 0
    assert warm['rangefs_read_seconds_bucket{le="+Inf"}'] == warm["rangefs_read_seconds_count"]
    assert warm["rangefs_cache_used_bytes"] >= FILE_SIZE
    for name in (
        "rangefs_cache_fill_hits_total",
        "rangefs_cache_range_hits_total",
        "rangefs_chunks_stored_total",
        "rangefs_bad_chunks_total",
        "rangefs_read_errors_total",
        "rangefs_in_flight_bytes",
    ):
        assert name in warm, f"{name} missing from /metrics"


@pytest.mark.timeout(90)
def test_debug_log_shows_each_get_and_no_credentials(
    rangefs_mount: Any, s3server: DevServer, bucket: str, tmp_path: Path
) -> None:
    mnt = rangefs_mount(bucket)  # the fixture logs at debug level to mnt.log_file
    assert cat(mnt.path / "data" / "file.bin").stdout == FILE_BYTES
    denied, _ = rangefs_mount.try_mount(bucket, env=s3server.denied_env())
    assert denied.returncode == 1 and "access denied" in denied.stderr
    mnt.unmount()

    log = mnt.log()
    gets = re.findall(r"fetched (s3://\S+) (bytes=\d+-\d+)", log)
    assert {uri for uri, _ in gets} == {f"s3://{bucket}/data/file.bin"}
    ranges = [rng for _, rng in gets]
    assert covered(ranges) == [(0, FILE_SIZE)] and asked_bytes(ranges) == FILE_SIZE
    secrets = {s3server.access_key, s3server.secret_key}
    secrets |= {s3server.denied_access_key or "", s3server.denied_secret_key or ""} - {""}
    outputs = [p for p in tmp_path.iterdir() if p.suffix in (".log", ".stderr", ".stdout")]
    assert len(outputs) >= 4
    for path in outputs:
        text = path.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, f"a credential appears in {path.name}"


# --- who may read -------------------------------------------------------------------------


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("options", "nobody_reads"),
    [
        pytest.param("allow_other", True, id="allow_other"),
        pytest.param("", False, id="default"),
        pytest.param("allow_other,umask=077", False, id="allow_other-mode-0400"),
    ],
)
def test_other_users(
    s3server: DevServer,
    bucket: str,
    scratch: Scratch,
    options: str,
    nobody_reads: bool,
) -> None:
    """Other uids get in only with allow_other, and then the file modes apply."""
    mnt = scratch.mountpoint()
    argv = [sys.executable, "-m", "rangefs", "mount", bucket, str(mnt)]
    argv += ["-o", fstab_options(s3server, scratch) + (f",{options}" if options else "")]
    result = run(argv, env=cli_env(s3server), timeout=90)
    assert result.returncode == 0, result.stderr
    scratch.pid()
    path = mnt / "data" / "file.bin"

    assert cat(path).stdout == FILE_BYTES  # root
    as_nobody = cat(path, user=NOBODY)
    if nobody_reads:
        assert as_nobody.returncode == 0, as_nobody.stderr
        assert as_nobody.stdout == FILE_BYTES
    else:
        assert as_nobody.returncode != 0
        assert b"Permission denied" in as_nobody.stderr, as_nobody.stderr


@pytest.mark.timeout(90)
def test_uid_gid_umask(rangefs_mount: Any, bucket: str) -> None:
    mnt = rangefs_mount(bucket, "-o", "uid=1234,gid=5678,umask=027")
    for path, mode in (
        (mnt.path, 0o550),
        (mnt.path / "data", 0o550),
        (mnt.path / "data" / "file.bin", 0o440),
    ):
        st = os.stat(path)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, mode), path
    st = os.stat(mnt.path / "data" / "file.bin")
    assert stat.S_ISREG(st.st_mode) and st.st_size == FILE_SIZE
    listing = run(["stat", "-c", "%u %g %a %s", str(mnt.path / "data" / "file.bin")])
    assert listing.stdout.split() == ["1234", "5678", "440", str(FILE_SIZE)]
    assert pid_alive(mnt.pid)
