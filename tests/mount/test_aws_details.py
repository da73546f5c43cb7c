"""Issue 10, item 5: AWS details users expect, through a real mount on SeaweedFS.

* ``--requester-pays``: every request the server receives carries the header, and none
  without the option (the counting proxy keeps each request's headers).
* SSE-C (``--sse-c-key-file``): SeaweedFS 4.48 implements SSE-C over plain http, so an
  encrypted object is read byte-identically; without the key (or with another one) a read
  fails with EACCES and one log line; the key is in no log line and no CLI message.
* Credentials from a ``credential_process`` with an ``Expiration`` are fetched again during
  a long mount, not frozen at start.
"""

import base64
import errno
import hashlib
import os
import sys
import time
from pathlib import Path

import pytest

from rangefs.fs import xattrs
from tests.support import rangefs_cli as cli
from tests.support import sha256_file, wait_for
from tests.support.patterns import pattern_bytes, pattern_sha256
from tests.support.proxy import asked_bytes

MiB = 1024 * 1024
PAYER = "x-amz-request-payer"
SSE_ALGORITHM = "x-amz-server-side-encryption-customer-algorithm"
SSE_KEY = "x-amz-server-side-encryption-customer-key"
SSE_KEY_MD5 = "x-amz-server-side-encryption-customer-key-md5"


def prefetch(s3server, proxy, cache_dir: Path, *args: str):
    return cli(
        "prefetch",
        "--no-progress",
        "--endpoint-url",
        proxy.url,
        "--cache-dir",
        str(cache_dir),
        *args,
        env=s3server.env(),
    )


# --- requester pays --------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_requester_pays_is_on_every_request_and_only_with_the_option(
    seeded_bucket, s3server, proxy, rangefs_mount, tmp_path
):
    bucket = seeded_bucket({"dir/a.bin": (2 * MiB + 5, 1), "b.bin": (MiB, 2)})
    for args in (["--requester-pays"], []):
        proxy.reset()
        mount = rangefs_mount(bucket, *args, endpoint=proxy.url)
        assert sorted(os.listdir(mount.path)) == ["b.bin", "dir"]
        assert sha256_file(mount.path / "dir" / "a.bin") == pattern_sha256(2 * MiB + 5, 1)
        mount.unmount()
        # prefetch of one key is a HEAD, then ranged GETs
        result = prefetch(
            s3server, proxy, tmp_path / f"cache-{len(args)}", *args, f"s3://{bucket}/b.bin"
        )
        assert result.returncode == 0, result.stderr

        records = proxy.records
        assert any(r.method == "GET" and "list-type=2" in r.query for r in records)
        assert any(r.method == "HEAD" for r in records)
        # every byte of a.bin and b.bin asked once (in as many GETs as the reader chose)
        assert asked_bytes(r.range for r in records if r.range) == 2 * MiB + 5 + MiB
        payers = {r.headers.get(PAYER) for r in records}
        assert payers == ({"requester"} if args else {None}), [
            (r.method, r.key, r.query, r.headers.get(PAYER)) for r in records
        ]


# --- SSE-C -----------------------------------------------------------------------------------


@pytest.fixture
def sse_c(make_bucket, s3, tmp_path):
    """A bucket with SSE-C objects under a fresh key, and that key in a base64 key file."""
    key = os.urandom(32)
    key_file = tmp_path / "sse-c.key"
    key_file.write_text(base64.b64encode(key).decode() + "\n")
    bucket = make_bucket()
    for name, (size, seed) in SSE_OBJECTS.items():
        s3.put_object(
            Bucket=bucket,
            Key=name,
            Body=pattern_bytes(0, size, seed),
            SSECustomerAlgorithm="AES256",
            SSECustomerKey=key,
        )
    return bucket, key, key_file


SSE_OBJECTS = {"secret.bin": (3 * MiB + 123, 7), "small.bin": (100_000, 8)}


def secrets_of(key: bytes, key_file: Path) -> list[str]:
    return [key.hex(), key.hex().upper(), base64.b64encode(key).decode(), key_file.read_text()]


def assert_key_nowhere(texts: dict[str, str], raw: bytes, key: bytes, key_file: Path) -> None:
    for where, text in texts.items():
        for secret in secrets_of(key, key_file):
            assert secret.strip() not in text, f"the SSE-C key is in {where}"
    assert key not in raw


@pytest.mark.timeout(120)
def test_sse_c_objects_are_read_byte_identically(sse_c, s3server, proxy, rangefs_mount, tmp_path):
    bucket, key, key_file = sse_c
    key_md5 = base64.b64encode(hashlib.md5(key).digest()).decode()
    result, mount = rangefs_mount.try_mount(
        bucket, "--sse-c-key-file", str(key_file), endpoint=proxy.url
    )
    assert mount is not None, result.stderr
    for name, (size, seed) in SSE_OBJECTS.items():
        assert sha256_file(mount.path / name) == pattern_sha256(size, seed), name
    gets = proxy.matching("GET", ranged_only=True)
    assert len(gets) == 5  # 4 chunks of secret.bin, 1 of small.bin
    for r in gets:
        assert r.headers.get(SSE_ALGORITHM) == "AES256" and r.headers.get(SSE_KEY_MD5) == key_md5
    listings = [r for r in proxy.records if r.method == "GET" and r.key is None]
    assert listings and not any(SSE_KEY in r.headers for r in listings)
    # The ETag of an SSE-C object proves nothing: one HEAD each asks for its checksum, with
    # the key (S3 requires it), and the bytes are proven by it (SeaweedFS keeps a CRC32).
    heads = proxy.matching("HEAD")
    assert len(heads) == 2 and all(r.headers.get(SSE_KEY_MD5) == key_md5 for r in heads)
    for name in SSE_OBJECTS:
        verified = os.getxattr(mount.path / name, xattrs.VERIFIED).decode()
        assert verified == "crc32 verified", verified

    proxy.reset()
    fetched = prefetch(
        s3server,
        proxy,
        tmp_path / "pf",
        "--sse-c-key-file",
        str(key_file),
        f"s3://{bucket}/small.bin",
    )
    assert fetched.returncode == 0, fetched.stderr
    (head,) = proxy.matching("HEAD")
    assert head.headers.get(SSE_ALGORITHM) == "AES256" and head.headers.get(SSE_KEY_MD5) == key_md5
    mount.unmount()

    log = mount.log_file.read_bytes()
    assert b" DEBUG " in log  # the daemon logged at debug level: the strictest case
    texts = {
        "the daemon log": log.decode(errors="replace"),
        "the mount's stderr/stdout": result.stderr + result.stdout,
        "prefetch's stderr/stdout": fetched.stderr + fetched.stdout,
    }
    assert_key_nowhere(texts, log, key, key_file)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("with_key", ["none", "another"])
def test_sse_c_object_without_its_key_fails_with_eacces(
    sse_c, proxy, rangefs_mount, tmp_path, with_key
):
    bucket, key, key_file = sse_c
    args: list[str] = []
    if with_key == "another":
        other = tmp_path / "other.key"
        other.write_bytes(os.urandom(32))
        args = ["--sse-c-key-file", str(other)]
    result, mount = rangefs_mount.try_mount(bucket, *args, endpoint=proxy.url)
    assert mount is not None, result.stderr
    assert sorted(os.listdir(mount.path)) == sorted(SSE_OBJECTS)  # listing needs no key
    with pytest.raises(OSError) as caught:
        (mount.path / "small.bin").read_bytes()
    assert caught.value.errno == errno.EACCES
    wait_for(lambda: "read failed" in mount.log(), timeout=5, what="the read failure logged")
    failures = [
        line for line in mount.log().splitlines() if "small.bin" in line and " ERROR " in line
    ]
    # One line per failed GET, no retry (a 4xx is final) and no traceback. The kernel asks
    # again once when a page read fails (read-ahead, then the read itself), so one read()
    # can be two FUSE reads, two GETs and two lines.
    gets = proxy.matching("GET", "small.bin", ranged_only=True)
    assert {r.status for r in gets} <= {400, 403} and 1 <= len(gets) <= 2, gets
    assert len(failures) == len(gets), failures
    assert "Traceback" not in mount.log()
    hint = "SSE-C" if with_key == "none" else "AccessDenied"
    assert all(hint in line for line in failures), failures
    mount.unmount()
    texts = {"the daemon log": mount.log(), "the mount's stderr": result.stderr}
    assert_key_nowhere(texts, mount.log_file.read_bytes(), key, key_file)


# --- credentials that expire -----------------------------------------------------------------

# botocore refreshes credentials that expire within 15 minutes ("advisory" window) on the
# next request that signs, and must refresh within 10 minutes ("mandatory"). The process
# below hands out credentials that expire 15 min + MARGIN from now: they are good when the
# mount starts and fall into the advisory window MARGIN seconds later. A read after that
# must run the process again, which proves the daemon signs every request with the session's
# refreshable credentials rather than a copy frozen at start (a frozen copy would never run
# the process again; SeaweedFS does not check expiry, so the copy would even keep working).
# The count before the wait (exactly once) shows credentials are not fetched per request.
MARGIN = 12.0
CREDENTIAL_PROCESS = """\
import datetime, json, sys, time
with open({counter!r}, "a") as f:
    f.write(f"{{time.time()}}\\n")
expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
    minutes=15, seconds={margin}
)
json.dump({{"Version": 1, "AccessKeyId": {access!r}, "SecretAccessKey": {secret!r},
           "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}}, sys.stdout)
"""


@pytest.mark.timeout(120)
def test_expiring_credentials_are_refreshed_during_a_mount(
    seeded_bucket, s3server, rangefs_mount, tmp_path
):
    bucket = seeded_bucket({"first.bin": (MiB, 1), "second.bin": (MiB, 2)})
    counter = tmp_path / "credential-process.runs"
    script = tmp_path / "credential_process.py"
    script.write_text(
        CREDENTIAL_PROCESS.format(
            counter=str(counter),
            margin=MARGIN,
            access=s3server.access_key,
            secret=s3server.secret_key,
        )
    )
    config = tmp_path / "aws-config"
    config.write_text(f"[default]\ncredential_process = {sys.executable} {script}\n")
    env = s3server.env()
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    env["AWS_CONFIG_FILE"] = str(config)

    mount = rangefs_mount(bucket, env=env)
    assert sha256_file(mount.path / "first.bin") == pattern_sha256(MiB, 1)
    runs = counter.read_text().split()
    assert len(runs) == 1, "credentials were fetched more than once before they aged"
    deadline = float(runs[0]) + MARGIN + 1  # the credentials are now in the advisory window
    time.sleep(max(0.0, deadline - time.time()))

    assert sha256_file(mount.path / "second.bin") == pattern_sha256(MiB, 2)
    assert len(counter.read_text().split()) == 2, "credentials were not refreshed"
    assert "second.bin" in mount.log()  # fetched from S3 after the refresh, not from a cache
    assert s3server.secret_key not in mount.log()
