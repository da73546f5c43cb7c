"""Issue 2: every bad input gives a one-line reason, a non-zero exit and no mount left."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import is_mounted, run, wait_pid_gone
from tests.support import rangefs_cli as cli


def assert_clean_failure(result, mountpoint: Path | None, *needles: str, code: int = 1):
    err = result.stderr.strip()
    assert result.returncode == code, (result.returncode, err)
    assert err.startswith("rangefs: ") and "\n" not in err, err
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in err, (needle, err)
    if mountpoint is not None:
        assert not is_mounted(mountpoint)


@pytest.mark.timeout(60)
def test_no_such_bucket(rangefs_mount):
    result, mount = rangefs_mount.try_mount("no-such-bucket-here")
    assert mount is None
    assert_clean_failure(result, None, "bucket 'no-such-bucket-here' does not exist")


@pytest.mark.timeout(60)
def test_access_denied_and_bad_credentials(make_bucket, s3server, rangefs_mount):
    bucket = make_bucket()
    result, mount = rangefs_mount.try_mount(bucket, env=s3server.denied_env())
    assert mount is None
    assert_clean_failure(result, None, "access denied", "AccessDenied")
    bad = s3server.env(access_key="AKIDNOTREAL", secret_key="nope")
    result, mount = rangefs_mount.try_mount(bucket, env=bad)
    assert mount is None
    assert_clean_failure(result, None, "access denied", "InvalidAccessKeyId")
    assert "nope" not in result.stderr


@pytest.mark.timeout(60)
def test_no_credentials_at_all(make_bucket, s3server, rangefs_mount):
    bucket = make_bucket()
    env = {k: v for k, v in s3server.env().items() if not k.startswith("AWS_ACCESS")}
    env.pop("AWS_SECRET_ACCESS_KEY", None)
    result, mount = rangefs_mount.try_mount(bucket, env=env)
    assert mount is None
    assert_clean_failure(result, None, "no AWS credentials found")


@pytest.mark.timeout(90)
def test_endpoint_unreachable_fails_after_a_bounded_wait(make_bucket, rangefs_mount):
    bucket = make_bucket()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    started = time.monotonic()
    result, mount = rangefs_mount.try_mount(
        bucket, "--connect-timeout", "1", endpoint=f"http://127.0.0.1:{port}"
    )
    assert mount is None
    assert_clean_failure(result, None, "cannot reach S3", f"127.0.0.1:{port}")
    assert time.monotonic() - started < 45


@pytest.mark.timeout(90)
def test_endpoint_that_hangs_fails_after_a_bounded_wait(make_bucket, proxy, rangefs_mount):
    bucket = make_bucket()
    proxy.inject("stall:60", "stall:60", "stall:60", only_ranged=False)
    started = time.monotonic()
    result, mount = rangefs_mount.try_mount(bucket, "--read-timeout", "2", endpoint=proxy.url)
    assert mount is None
    assert_clean_failure(result, None, "cannot reach S3")
    assert time.monotonic() - started < 45


@pytest.mark.timeout(60)
def test_mountpoint_problems(make_bucket, s3server, tmp_path, rangefs_mount):
    bucket = make_bucket()
    env = s3server.env()
    base = ["mount", "--endpoint-url", s3server.endpoint_url, "--cache-dir", str(tmp_path / "c")]
    missing = tmp_path / "missing"
    assert_clean_failure(cli(*base, bucket, str(missing), env=env), None, "does not exist")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert_clean_failure(cli(*base, bucket, str(a_file), env=env), None, "not a directory")
    mount = rangefs_mount(bucket)
    result = cli(*base, bucket, str(mount.path), env=env)
    assert_clean_failure(result, None, "already a mount point")
    assert mount.alive and mount.mounted


@pytest.mark.timeout(60)
def test_cache_dir_not_usable(make_bucket, s3server, tmp_path):
    bucket = make_bucket()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory should be")
    result = cli("mount", "--endpoint-url", s3server.endpoint_url, "--cache-dir",
                 str(blocker / "cache"), bucket, str(mnt), env=s3server.env())  # fmt: skip
    assert_clean_failure(result, mnt, "cache dir", "not usable")


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("args", "needle"),
    [(["--bogus"], "unrecognized arguments: --bogus"),
     (["-o", "bogus=1"], "unknown option: 'bogus'"),
     (["--chunk-size", "eight"], "not a size"),
     (["--chunk-size", "10G"], "--chunk-size must be between"),
     (["--cache-size", "-5"], "not a size"),
     (["--metadata-ttl", "soon"], "not a number"),
     (["--uid", "-1"], "must be >= 0"),
     (["--log-level", "loud"], "invalid choice"),
     (["-o", "chunk_size"], "needs a value"),
     (["--endpoint-url", "localhost:9000"], "must be a URL"),
     (["--metrics-addr", "nowhere"], "HOST:PORT")],
)  # fmt: skip
def test_bad_options(args, needle, s3server, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    result = cli("mount", *args, "bucket-x", str(mnt), env=s3server.env())
    assert_clean_failure(result, mnt, needle, code=2)


@pytest.mark.timeout(30)
def test_help_and_bad_source(tmp_path):
    out = cli("--help")
    assert out.returncode == 0 and "mount" in out.stdout
    out = cli("mount", "--help")
    assert out.returncode == 0 and "--chunk-size" in out.stdout and "default: 8M" in out.stdout
    result = cli("mount", "s3://", str(tmp_path))
    assert_clean_failure(result, None, "invalid bucket name", code=2)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_unmounts_cleanly(make_bucket, s3server, rangefs_mount, sig):
    bucket = make_bucket()
    s3server.client().put_object(Bucket=bucket, Key="f", Body=b"data")
    mount = rangefs_mount(bucket)
    assert (mount.path / "f").read_bytes() == b"data"
    os.kill(mount.pid, sig)
    assert wait_pid_gone(mount.pid, 20)
    assert not is_mounted(mount.path)
    assert "unmounted" in mount.log()


@pytest.mark.timeout(60)
def test_foreground_mode_stays_attached(make_bucket, s3server, tmp_path):
    bucket = make_bucket()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rangefs", "mount", "-f", "--endpoint-url", s3server.endpoint_url,
         "--cache-dir", str(tmp_path / "c"), bucket, str(mnt)],
        env=s3server.env(), stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not is_mounted(mnt) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert is_mounted(mnt) and proc.poll() is None
        assert run(["fusermount3", "-u", str(mnt)]).returncode == 0
        assert proc.wait(timeout=20) == 0
        assert "mounted s3://" in proc.stderr.read()
    finally:
        if is_mounted(mnt):
            run(["fusermount3", "-uz", str(mnt)])
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


@pytest.mark.timeout(60)
def test_empty_prefix_mounts_with_one_warning_line(make_bucket, s3server, rangefs_mount):
    """A prefix holding no object (a typo?) still mounts, empty, and says so in one line on
    stderr; a prefix that holds objects mounts without a word."""
    bucket = make_bucket()
    s3server.client().put_object(Bucket=bucket, Key="data/f", Body=b"data")

    result, mount = rangefs_mount.try_mount(f"{bucket}/typo-prefix")
    assert result.returncode == 0 and mount is not None, result.stderr
    assert is_mounted(mount.path) and mount.alive
    assert result.stderr.splitlines() == [
        f"rangefs: warning: s3://{bucket}/typo-prefix/ holds no object yet "
        "(a typo in the prefix?); mounting it empty"
    ]
    assert result.stdout == ""
    assert os.listdir(mount.path) == []

    result, mount = rangefs_mount.try_mount(f"{bucket}/data")
    assert result.returncode == 0 and mount is not None, result.stderr
    assert (result.stderr, result.stdout) == ("", "")
    assert os.listdir(mount.path) == ["f"]
