"""AWS details without a network: the addressing style the client would use, the SSE-C key
file, the parameters every request carries (captured just before sending), and which
failures are no answer from S3 at all (what takes a mount offline)."""

import base64
import dataclasses
import os
from pathlib import Path
from typing import Any

import botocore.utils
import pytest

from rangefs import cli, options
from rangefs.config import CustomerKey, S3Settings, load_customer_key
from rangefs.errors import AccessDenied, NoAnswer, RemoteError, Transient, Unreachable
from rangefs.remote.retry import Retrier, RetryPolicy
from rangefs.remote.s3 import RequestArgs, S3Store, classify, make_client, parse_timestamp

KEY = bytes(range(100, 132))  # 32 bytes
KEY_B64 = base64.b64encode(KEY).decode()


class Captured(Exception):
    """Raised by the before-send hook: the request is recorded, never sent."""


def settings(**changes: Any) -> S3Settings:
    parser = cli.build_parser()
    args = parser.parse_args(["prefetch", "s3://bucket/k"])
    given = {**options.values(args, options.PREFETCH), "region": "eu-west-1"}
    return dataclasses.replace(options.make_s3_settings(given), **changes)


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    """Static fake keys and no AWS config or endpoint from the host."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def capture(client: Any) -> list[Any]:
    """Requests the client would send: URL and headers, nothing goes on the wire."""
    sent: list[Any] = []

    def before_send(request: Any, **_: Any) -> None:
        sent.append(request)
        raise Captured

    client.meta.events.register("before-send.s3", before_send)
    return sent


def url_of_head(client: Any, bucket: str = "my-bucket") -> str:
    sent = capture(client)
    with pytest.raises(Captured):
        client.head_object(Bucket=bucket, Key="dir/key")
    return str(sent[-1].url)


# --- addressing style ------------------------------------------------------------------------


def test_aws_gets_virtual_hosted_requests(aws_env):
    client = make_client(settings(), pool=1)
    assert client.meta.config.s3["addressing_style"] == "virtual"
    assert url_of_head(client) == "https://my-bucket.s3.eu-west-1.amazonaws.com/dir/key"


def test_a_custom_endpoint_gets_path_style_requests(aws_env):
    client = make_client(settings(endpoint_url="https://minio.example.com"), pool=1)
    assert client.meta.config.s3["addressing_style"] == "path"
    assert url_of_head(client) == "https://minio.example.com/my-bucket/dir/key"


def test_an_endpoint_from_the_environment_gets_path_style_requests(aws_env, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000")
    client = make_client(settings(), pool=1)
    assert client.meta.config.s3["addressing_style"] == "path"
    assert url_of_head(client) == "http://127.0.0.1:9000/my-bucket/dir/key"


@pytest.mark.parametrize(
    ("endpoint", "style", "url"),
    [(None, "path", "https://s3.eu-west-1.amazonaws.com/my-bucket/dir/key"),
     ("https://oss.example.com", "virtual", "https://my-bucket.oss.example.com/dir/key")],
)  # fmt: skip
def test_an_explicit_addressing_style_wins(aws_env, endpoint, style, url):
    client = make_client(settings(endpoint_url=endpoint, addressing_style=style), pool=1)
    assert client.meta.config.s3["addressing_style"] == style
    assert url_of_head(client) == url


# --- what every request carries --------------------------------------------------------------


def requests_of(s3: S3Settings) -> dict[str, Any]:
    """The list, HEAD and ranged GET an S3Store built from ``s3`` would send."""
    client = make_client(s3, pool=1)
    store = S3Store(client, "my-bucket", Retrier(RetryPolicy(1, 1.0)), RequestArgs.of(s3))
    sent = capture(client)
    calls = {
        "list": lambda: list(store.list_dir_pages("")),
        "head": lambda: store.head("k"),
        "get": lambda: store.get_range("k", 0, 10, '"etag"', 100),
    }
    out = {}
    for name, call in calls.items():
        with pytest.raises(Captured):
            call()
        headers = sent[-1].headers.items()  # prepared: values are bytes
        out[name] = {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in headers}
    return out


def test_requester_pays_is_on_every_request(aws_env):
    for headers in requests_of(settings(requester_pays=True)).values():
        assert headers["x-amz-request-payer"] == "requester"
    for headers in requests_of(settings()).values():
        assert "x-amz-request-payer" not in headers


def test_sse_c_key_is_on_object_reads_only(aws_env):
    sent = requests_of(settings(sse_c_key=CustomerKey(Path("/k"), KEY)))
    for name in ("head", "get"):
        headers = sent[name]
        assert headers["x-amz-server-side-encryption-customer-algorithm"] == "AES256"
        assert headers["x-amz-server-side-encryption-customer-key"] == KEY_B64
        assert "x-amz-server-side-encryption-customer-key-md5" in headers
    assert not any(h.startswith("x-amz-server-side") for h in sent["list"])


# --- the key file ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content", [KEY, KEY_B64.encode(), KEY_B64.encode() + b"\n", b"  " + KEY_B64.encode() + b"\r\n"]
)
def test_key_file_raw_or_base64(tmp_path, content):
    path = tmp_path / "key"
    path.write_bytes(content)
    assert load_customer_key(str(path)) == CustomerKey(path, KEY)


def secret_forms(content: bytes) -> list[str]:
    return [KEY.hex(), KEY_B64, base64.b64encode(content).decode(), content.decode("latin-1")]


def test_the_key_is_in_no_repr(tmp_path):
    path = tmp_path / "key"
    path.write_text(KEY_B64)
    s3 = settings(sse_c_key=load_customer_key(str(path)))
    for text in (repr(s3), str(s3.sse_c_key), repr(RequestArgs.of(s3))):
        assert str(path) in text or "RequestArgs" in text
        for secret in (*secret_forms(KEY_B64.encode()), repr(KEY)):
            assert secret not in text


@pytest.mark.parametrize(
    ("content", "why"),
    [(None, "No such file or directory"),
     ("dir", "Is a directory"),
     (KEY + b"\n", "it holds 33 bytes"),
     (KEY_B64[:-4].encode(), "it holds 40 bytes"),
     (base64.b64encode(KEY + b"x"), "it holds 44 bytes"),
     (KEY_B64.encode() + b"!", "it holds 45 bytes")],
)  # fmt: skip
def test_a_bad_key_file_is_a_one_line_usage_error(tmp_path, capsys, content, why):
    path = tmp_path / "key"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    argvs = [
        ["mount", "--sse-c-key-file", str(path), "bucket", str(mountpoint)],
        ["mount", "bucket", str(mountpoint), "-o", f"sse_c_key_file={path}"],
        ["prefetch", "--sse-c-key-file", str(path), "s3://bucket/k"],
    ]
    for argv in argvs:
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("rangefs: --sse-c-key-file: ") and err.count("\n") == 1, err
        assert why in err and str(path) in err
        if isinstance(content, bytes):
            for secret in secret_forms(content):
                assert secret.strip() not in err


def test_a_failed_credential_renewal_is_access_denied_in_one_line():
    import botocore.exceptions

    exc = botocore.exceptions.CredentialRetrievalError(
        provider="custom-process", error_msg="token service down\ntry later"
    )
    mapped = classify(exc, "GET s3://b/k bytes=0-9")
    assert isinstance(mapped, AccessDenied)
    assert "\n" not in str(mapped) and "token service down try later" in str(mapped)


def _no_answers() -> list[BaseException]:
    import socket

    import botocore.exceptions as b
    import urllib3.exceptions as u

    url = "http://127.0.0.1:9"
    return [
        b.EndpointConnectionError(endpoint_url=url),
        b.ConnectTimeoutError(endpoint_url=url),
        b.ReadTimeoutError(endpoint_url=url),
        b.ConnectionClosedError(endpoint_url=url),
        u.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset")),
        ConnectionRefusedError(111, "Connection refused"),
        socket.gaierror(-2, "Name or service not known"),
    ]


@pytest.mark.parametrize("exc", _no_answers(), ids=lambda e: type(e).__name__)
def test_no_answer_from_s3_is_the_one_failure_that_can_take_a_mount_offline(exc):
    mapped = classify(exc, "GET s3://b/k bytes=0-9")
    assert isinstance(mapped, NoAnswer), mapped
    assert mapped.cause == ("timeout" if "timeout" in type(exc).__name__.lower() else "connection")


def test_answers_and_broken_bodies_do_not_take_a_mount_offline():
    import botocore.exceptions as b

    for exc in (
        b.ResponseStreamingError(error="reset mid-body"),  # S3 answered, then the body broke
        b.SSLError(endpoint_url="https://s3", error="certificate verify failed"),
        b.ClientError(
            {"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}},
            "GetObject",
        ),
    ):
        mapped = classify(exc, "GET s3://b/k bytes=0-9")
        assert isinstance(mapped, Transient) and not isinstance(mapped, NoAnswer), exc


def test_the_retrier_says_unreachable_when_the_last_attempt_got_no_answer(caplog):
    policy = RetryPolicy(attempts=2, max_seconds=5, initial_backoff=0.001, jitter=0.001)
    answers = iter([Transient("503", "http_503"), NoAnswer("refused", "connection")])

    def attempt() -> None:
        raise next(answers)

    with pytest.raises(Unreachable):
        Retrier(policy).call("GET s3://b/k", attempt)
    answers = iter([NoAnswer("refused", "connection"), Transient("503", "http_503")])
    with pytest.raises(RemoteError) as exc:
        Retrier(policy).call("GET s3://b/k", attempt)
    assert not isinstance(exc.value, Unreachable)
    caplog.clear()
    quiet = Retrier(dataclasses.replace(policy, attempts=1, quiet=True))
    answers = iter([NoAnswer("refused", "connection")])
    with pytest.raises(Unreachable):
        quiet.call("probe", attempt)
    assert caplog.records == [] and quiet.stats.errors == {}


def test_an_offline_mount_stops_retrying():
    """Another request found S3 unreachable: this one gives up after its current attempt."""
    attempts = []

    def attempt() -> None:
        attempts.append(1)
        raise NoAnswer("read timeout", "timeout")

    retrier = Retrier(RetryPolicy(attempts=5, max_seconds=5, initial_backoff=0.001, jitter=0))
    retrier.stats.online = 0
    with pytest.raises(Unreachable):
        retrier.call("GET s3://b/k", attempt)
    assert len(attempts) == 1


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-28T04:10:09.000Z",  # a listed key's LastModified
        "2026-11-28T04:10:09Z",
        "2026-11-28T04:10:09.123456Z",
        "Sat, 28 Nov 2026 04:10:09 GMT",  # an HTTP date: botocore's parser
        "1700000000",
    ],
)
def test_timestamps_parse_as_botocore_parses_them(value: str) -> None:
    assert parse_timestamp(value) == botocore.utils.parse_timestamp(value)
