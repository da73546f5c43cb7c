"""Tests of the test harness itself: if these fail, no rangefs result means anything."""

from __future__ import annotations

import hashlib
import io
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from tests.support import run
from tests.support.patterns import PatternFile, pattern_bytes, pattern_sha256, upload_pattern
from tests.support.proxy import CountingProxy, Faults
from tests.support.servers import DevServer

pytestmark = pytest.mark.timeout(30)

SIZE = 3 * 1024 * 1024 + 123


@pytest.fixture
def bucket(make_bucket: Callable[..., str]) -> str:
    return make_bucket()


@pytest.fixture
def obj(s3: Any, bucket: str) -> tuple[str, str]:
    """A pattern object of a size that is not a multiple of anything."""
    key = "dir/pattern.bin"
    upload_pattern(s3, bucket, key, SIZE, seed=7)
    return bucket, key


def direct_client(server: DevServer, proxy: CountingProxy, **kw: Any) -> Any:
    return server.client(proxy.url, **kw)


def test_pattern_is_position_and_seed_dependent() -> None:
    base = pattern_bytes(0, 1 << 20)
    assert len(base) == 1 << 20
    for shift in (1, 7, 8, 4096):
        assert pattern_bytes(shift, 4096) == base[shift : shift + 4096]
        assert pattern_bytes(shift, 4096) != base[:4096]
    assert pattern_bytes(0, 4096, seed=1) != base[:4096]
    words = memoryview(base).cast("Q")
    assert len(set(words)) == len(words), "8-byte words must not repeat"
    assert pattern_bytes(12_345, 0) == b""
    assert pattern_sha256(SIZE, 3) == hashlib.sha256(pattern_bytes(0, SIZE, 3)).hexdigest()


def test_pattern_file_agrees_with_pattern_bytes() -> None:
    f = PatternFile(SIZE, seed=5)
    assert f.seek(0, os.SEEK_END) == SIZE
    assert f.seek(1_000_003) == 1_000_003
    assert f.read(10_000) == pattern_bytes(1_000_003, 10_000, 5)
    assert f.tell() == 1_010_003
    f.seek(-5, os.SEEK_END)
    assert f.read(100) == pattern_bytes(SIZE - 5, 5, 5)
    assert f.read(100) == b""
    f.seek(0)
    assert hashlib.sha256(f.read()).hexdigest() == pattern_sha256(SIZE, 5)
    assert isinstance(io.BufferedReader(PatternFile(10)).read(), bytes)


def test_multipart_upload_round_trips(s3: Any, bucket: str) -> None:
    size = 40 * 1024 * 1024 + 17
    digest = upload_pattern(s3, bucket, "mp.bin", size, seed=2)
    head = s3.head_object(Bucket=bucket, Key="mp.bin")
    assert head["ContentLength"] == size
    assert head["ETag"].strip('"').endswith("-3")
    body = s3.get_object(Bucket=bucket, Key="mp.bin")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == digest


def test_range_get_via_proxy_is_206_and_counted(
    s3server: DevServer, proxy: CountingProxy, obj: tuple[str, str]
) -> None:
    bucket, key = obj
    client = direct_client(s3server, proxy)
    response = client.get_object(Bucket=bucket, Key=key, Range="bytes=1000-1999")
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert response["ContentRange"] == f"bytes 1000-1999/{SIZE}"
    assert response["Body"].read() == pattern_bytes(1000, 1000, seed=7)

    assert proxy.count("GET", key, ranged_only=True) == 1
    assert proxy.bytes_sent(key) == 1000
    (record,) = proxy.matching("GET", key)
    assert (record.bucket, record.range, record.status, record.fault) == (
        bucket,
        "bytes=1000-1999",
        206,
        None,
    )

    etag = client.head_object(Bucket=bucket, Key=key)["ETag"]
    assert proxy.count("HEAD", key) == 1
    body = client.get_object(Bucket=bucket, Key=key, IfMatch=etag)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == pattern_sha256(SIZE, 7)
    assert proxy.bytes_sent(key) == 1000 + SIZE
    assert proxy.matching("GET", key)[-1].if_match == etag
    with pytest.raises(ClientError) as info:
        client.get_object(Bucket=bucket, Key=key, Range="bytes=0-9", IfMatch='"stale"')
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert proxy.connections_accepted == 1, "keep-alive must be preserved end to end"


def test_put_and_list_via_proxy(
    s3server: DevServer, proxy: CountingProxy, bucket: str, s3: Any
) -> None:
    client = direct_client(s3server, proxy)
    payload = pattern_bytes(0, 2 * 1024 * 1024 + 1, seed=9)
    client.put_object(Bucket=bucket, Key="a b/ü+x.bin", Body=payload)
    assert s3.get_object(Bucket=bucket, Key="a b/ü+x.bin")["Body"].read() == payload
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["a b/ü+x.bin"]
    assert proxy.count("PUT", "a b/ü+x.bin") == 1
    (listing,) = proxy.matching("GET", bucket=bucket)
    assert listing.key is None and "list-type=2" in listing.query


def test_inject_503_hits_next_ranged_get_only(
    s3server: DevServer, proxy: CountingProxy, obj: tuple[str, str]
) -> None:
    bucket, key = obj
    client = direct_client(s3server, proxy, max_attempts=1)
    proxy.inject("503")
    client.list_objects_v2(Bucket=bucket)
    client.head_object(Bucket=bucket, Key=key)
    assert proxy.pending_injections() == 1
    with pytest.raises(ClientError) as info:
        client.get_object(Bucket=bucket, Key=key, Range="bytes=0-99")
    assert info.value.response["Error"]["Code"] == "SlowDown"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert proxy.pending_injections() == 0
    assert client.get_object(Bucket=bucket, Key=key, Range="bytes=0-99")["Body"].read() == (
        pattern_bytes(0, 100, seed=7)
    )
    faults = [(r.status, r.fault) for r in proxy.matching("GET", key)]
    assert faults == [(503, "503"), (206, None)]
    assert proxy.bytes_sent(key) == 100


def test_cut_gives_short_read_with_exact_byte_count(
    s3server: DevServer, proxy: CountingProxy, obj: tuple[str, str]
) -> None:
    bucket, key = obj
    client = direct_client(s3server, proxy, max_attempts=1)
    proxy.inject("cut:1000")
    response = client.get_object(Bucket=bucket, Key=key, Range="bytes=0-99999")
    assert response["ContentLength"] == 100_000
    with pytest.raises((BotoCoreError, OSError)):
        response["Body"].read()
    (record,) = proxy.matching("GET", key)
    assert (record.status, record.body_bytes, record.fault) == (206, 1000, "cut:1000")
    assert client.get_object(Bucket=bucket, Key=key, Range="bytes=5-9")["Body"].read() == (
        pattern_bytes(5, 5, seed=7)
    )


def test_refuse_and_retry(s3server: DevServer, proxy: CountingProxy, obj: tuple[str, str]) -> None:
    bucket, key = obj
    proxy.inject("refuse")
    with pytest.raises(BotoCoreError):
        direct_client(s3server, proxy, max_attempts=1).get_object(
            Bucket=bucket, Key=key, Range="bytes=0-9"
        )
    proxy.inject("refuse", "500")
    retrying = direct_client(s3server, proxy, max_attempts=3)
    body = retrying.get_object(Bucket=bucket, Key=key, Range="bytes=0-9")["Body"].read()
    assert body == pattern_bytes(0, 10, seed=7)
    assert [r.fault for r in proxy.matching("GET", key)] == ["refuse", "refuse", "500", None]


def test_stall_triggers_client_read_timeout(
    s3server: DevServer, proxy: CountingProxy, obj: tuple[str, str]
) -> None:
    bucket, key = obj
    client = direct_client(s3server, proxy, max_attempts=1, read_timeout=0.5)
    proxy.inject("stall:20")
    started = time.monotonic()
    with pytest.raises((BotoCoreError, OSError)):
        client.get_object(Bucket=bucket, Key=key, Range="bytes=0-99999")["Body"].read()
    assert time.monotonic() - started < 5


def test_rates_latency_and_bandwidth(
    s3server: DevServer, proxy: CountingProxy, obj: tuple[str, str]
) -> None:
    bucket, key = obj
    client = direct_client(s3server, proxy, max_attempts=1)
    proxy.set_faults(error_rate=0.5)
    outcomes = []
    for _ in range(20):
        try:
            client.get_object(Bucket=bucket, Key=key, Range="bytes=0-0")["Body"].read()
            outcomes.append(True)
        except ClientError:
            outcomes.append(False)
    assert 0 < outcomes.count(False) < 20
    assert proxy.count("GET", key, status=503) == outcomes.count(False)
    client.list_objects_v2(Bucket=bucket)

    proxy.faults = Faults(latency=0.3)
    started = time.monotonic()
    client.head_object(Bucket=bucket, Key=key)
    assert time.monotonic() - started >= 0.3

    proxy.faults = Faults(bandwidth=4 * 1024 * 1024)
    started = time.monotonic()
    body = client.get_object(Bucket=bucket, Key=key, Range="bytes=0-1048575")["Body"].read()
    elapsed = time.monotonic() - started
    assert len(body) == 1 << 20 and 0.2 <= elapsed < 2, elapsed


def test_down_refuses_connections(
    s3server: DevServer, proxy: CountingProxy, obj: tuple[str, str]
) -> None:
    bucket, key = obj
    client = direct_client(s3server, proxy, max_attempts=1)
    proxy.faults.down = True
    with pytest.raises(BotoCoreError):
        client.head_object(Bucket=bucket, Key=key)
    with pytest.raises(BotoCoreError):
        client.list_objects_v2(Bucket=bucket)
    proxy.faults.down = False
    assert client.head_object(Bucket=bucket, Key=key)["ContentLength"] == SIZE


def test_unplug_refuses_connections_and_hang_leaves_requests_unanswered(
    s3server: DevServer, proxy: CountingProxy, obj: tuple[str, str]
) -> None:
    from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

    bucket, key = obj
    client = direct_client(s3server, proxy, max_attempts=1, read_timeout=0.5)
    assert client.head_object(Bucket=bucket, Key=key)["ContentLength"] == SIZE
    proxy.unplug()
    with pytest.raises(EndpointConnectionError):
        client.list_objects_v2(Bucket=bucket)
    proxy.plug()
    assert client.head_object(Bucket=bucket, Key=key)["ContentLength"] == SIZE
    proxy.set_faults(hang=True)
    started = time.monotonic()
    with pytest.raises(ReadTimeoutError):
        client.list_objects_v2(Bucket=bucket, MaxKeys=1)
    assert time.monotonic() - started < 5
    proxy.set_faults(hang=False)
    assert client.head_object(Bucket=bucket, Key=key)["ContentLength"] == SIZE
    assert [r.fault for r in proxy.records][-2:] == ["hang", None]


def test_denied_identity_is_refused(s3server: DevServer, obj: tuple[str, str]) -> None:
    bucket, key = obj
    assert s3server.denied_access_key and s3server.denied_secret_key
    denied = s3server.client(
        access_key=s3server.denied_access_key,
        secret_key=s3server.denied_secret_key,
        max_attempts=1,
    )
    with pytest.raises(ClientError) as info:
        denied.list_objects_v2(Bucket=bucket)
    assert info.value.response["Error"]["Code"] == "AccessDenied"
    unknown = s3server.client(access_key="nobody", secret_key="nothing", max_attempts=1)
    with pytest.raises(ClientError) as info:
        unknown.get_object(Bucket=bucket, Key=key)
    assert info.value.response["Error"]["Code"] == "InvalidAccessKeyId"


def test_env_isolates_credentials(s3server: DevServer) -> None:
    env = s3server.env()
    script = (
        "import boto3; c = boto3.Session().get_credentials(); "
        "print(c.access_key, boto3.Session().region_name)"
    )
    result = run([sys.executable, "-c", script], env=env, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [s3server.access_key, "us-east-1"]
    assert not os.path.exists(env["AWS_CONFIG_FILE"])


def test_moto_keeps_odd_keys(moto_server: DevServer, make_bucket: Callable[..., str]) -> None:
    bucket = make_bucket(server=moto_server)
    client = moto_server.client()
    keys = ["a//b", "./x", "../y", "dir/" + "z" * 300]
    for key in keys:
        client.put_object(Bucket=bucket, Key=key, Body=key.encode())
    listed = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert sorted(listed) == sorted(keys)
    with CountingProxy(moto_server.endpoint_url) as proxy:
        via_proxy = moto_server.client(proxy.url)
        assert via_proxy.get_object(Bucket=bucket, Key="a//b")["Body"].read() == b"a//b"
        assert proxy.count("GET", "a//b") == 1
