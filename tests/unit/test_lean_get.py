"""The lean GET (:class:`rangefs.remote.s3.LeanGets`) against a scripted local HTTP server:
the request is the one boto3 sends (URL, Range, If-Match, versionId, requester-pays, a SigV4
signature), the answer gets the checks of a ranged GET, errors map as boto3's would; a whole
small object's failed attempts are retried and deliver nothing, a streamed range's retry
asks only for what did not arrive."""

import dataclasses
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from rangefs.config import CustomerKey
from rangefs.errors import (
    AccessDenied,
    BadResponse,
    NotFound,
    ObjectChanged,
    RemoteError,
    Unreachable,
)
from rangefs.remote.retry import Retrier, RetryPolicy
from rangefs.remote.s3 import LeanGets, RequestArgs, S3Store, make_client
from rangefs.remote.store import RangeGet
from tests.unit.test_aws_details import Captured, aws_env, capture, settings  # noqa: F401

BODY = bytes(range(256)) * 40  # 10240 bytes
ETAG = '"0123456789abcdef0123456789abcdef"'
Answer = Callable[[BaseHTTPRequestHandler], None]


def partial(body: bytes = BODY, etag: str = ETAG, content_range: str | None = None) -> Answer:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(206)
        whole = f"bytes 0-{len(BODY) - 1}/{len(BODY)}"
        handler.send_header("Content-Range", content_range or whole)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("ETag", etag)
        handler.end_headers()
        handler.wfile.write(body)

    return answer


def error(status: int, code: str = "") -> Answer:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        body = f"<Error><Code>{code}</Code><Message>no</Message></Error>".encode() if code else b""
        handler.send_response(status)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return answer


def cut_short(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(206)
    handler.send_header("Content-Range", f"bytes 0-{len(BODY) - 1}/{len(BODY)}")
    handler.send_header("Content-Length", str(len(BODY)))
    handler.end_headers()
    handler.wfile.write(BODY[:1000])
    handler.close_connection = True


@dataclasses.dataclass
class Server:
    url: str
    answers: list[Answer]
    seen: list[tuple[str, dict[str, str]]]


@pytest.fixture
def server() -> Iterator[Server]:
    answers: list[Answer] = []
    seen: list[tuple[str, dict[str, str]]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            (answers.pop(0) if answers else partial())(self)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{httpd.server_address[1]}", answers, seen)
    finally:
        httpd.shutdown()
        httpd.server_close()


def store(url: str, **changes: Any) -> S3Store:
    s = settings(endpoint_url=url, connect_timeout=2.0, read_timeout=2.0, **changes)
    client = make_client(s, pool=2)
    policy = RetryPolicy(attempts=3, max_seconds=5, initial_backoff=0.001, jitter=0)
    return S3Store(client, "bkt", Retrier(policy), RequestArgs.of(s), LeanGets.of(client, s))


def get(s3: S3Store, key: str = "dir/a b+c.txt", version_id: str = "") -> list[bytes]:
    pieces: list[bytes] = []
    get = RangeGet(key, 0, len(BODY), ETAG, len(BODY), version_id)
    s3.get_range_into(get, lambda at, data: pieces.append(bytes(data)))
    return pieces


def test_the_lean_request_is_the_one_boto3_sends(aws_env, server):  # noqa: F811
    s3 = store(server.url, requester_pays=True)
    assert get(s3, version_id="v 1") == [BODY]  # the whole object, in one piece
    sent = capture(s3.client)
    with pytest.raises(Captured):
        s3.client.get_object(
            Bucket="bkt", Key="dir/a b+c.txt", Range=f"bytes=0-{len(BODY) - 1}", IfMatch=ETAG,
            VersionId="v 1", RequestPayer="requester",
        )  # fmt: skip
    boto = sent[-1]
    path, headers = server.seen[-1]
    assert server.url + path == boto.url
    for name in ("range", "if-match", "x-amz-request-payer", "x-amz-content-sha256"):
        value = boto.headers[name]
        assert headers[name] == (value.decode() if isinstance(value, bytes) else value), name
    assert headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIAFAKE/")
    signed = headers["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    assert {"host", "if-match", "range", "x-amz-date", "x-amz-request-payer"} <= set(signed)


def test_answers_get_the_checks_of_a_ranged_get(aws_env, server):  # noqa: F811
    s3 = store(server.url)
    server.answers[:] = [error(412, "PreconditionFailed")]
    with pytest.raises(ObjectChanged):
        get(s3)
    server.answers[:] = [error(404, "NoSuchKey")]
    with pytest.raises(NotFound):
        get(s3)
    server.answers[:] = [error(403, "AccessDenied")]
    with pytest.raises(AccessDenied):
        get(s3)
    server.answers[:] = [partial(content_range="bytes 0-99/10240")] * 3
    with pytest.raises(BadResponse, match="Content-Range"):
        get(s3)
    server.answers[:] = [partial(etag='"ffff"')]
    with pytest.raises(ObjectChanged, match="ETag"):
        get(s3)
    server.answers[:] = [error(200)]  # a server ignoring Range
    with pytest.raises(BadResponse, match="expected 206 Partial Content, got 200"):
        get(s3)


def test_failed_attempts_are_retried_and_deliver_nothing(aws_env, server):  # noqa: F811
    s3 = store(server.url)
    server.answers[:] = [error(503, "SlowDown"), cut_short]
    assert get(s3) == [BODY]  # one piece: nothing from the attempts that failed
    assert len(server.seen) == 3
    assert s3.retrier.stats.retries["http_503"] == 1
    assert s3.retrier.stats.retries["short_body"] == 1


def closed_idle(handler: BaseHTTPRequestHandler) -> None:
    """A server that closed a kept-alive connection: the request finds it shut."""
    handler.close_connection = True
    handler.connection.shutdown(socket.SHUT_RDWR)


def test_a_kept_alive_connection_closed_meanwhile_is_replaced_at_once(aws_env, server):  # noqa: F811
    s3 = store(server.url)
    assert get(s3) == [BODY]
    server.answers[:] = [closed_idle]
    assert get(s3) == [BODY]
    assert len(server.seen) == 3 and not s3.retrier.stats.retries


def test_no_answer_is_unreachable(aws_env):  # noqa: F811
    s3 = store("http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(Unreachable):
        get(s3)


def test_only_path_style_requests_without_a_customer_key_or_proxy_are_lean(
    aws_env,  # noqa: F811
    monkeypatch,
):
    def lean(**changes: Any) -> bool:
        s = settings(**changes)
        return LeanGets.of(make_client(s, pool=1), s) is not None

    assert lean(endpoint_url="http://127.0.0.1:9000")
    assert lean(endpoint_url="https://minio.example.com")
    assert not lean()  # AWS: virtual-hosted
    key = CustomerKey(Path("key"), bytes(32))
    assert not lean(endpoint_url="http://127.0.0.1:9000", sse_c_key=key)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example.com:3128")
    assert not lean(endpoint_url="http://s3.example.com:9000")
    monkeypatch.delenv("HTTP_PROXY")
    s = settings(endpoint_url="http://127.0.0.1:9000")
    client = make_client(s, pool=1)
    monkeypatch.delattr(client, "_request_signer")  # a botocore that renamed it
    assert LeanGets.of(client, s) is None


BIG = bytes(range(251)) * 4200  # 1,054,200 bytes: streamed in pieces, not one buffer


def ranged(data: bytes = BIG, *, cut_at: int | None = None, length_off: int = 0) -> Answer:
    """Answers the Range asked for from ``data``; ``cut_at``: the connection breaks after
    that many body bytes; ``length_off``: a Content-Length that many bytes off."""

    def answer(handler: BaseHTTPRequestHandler) -> None:
        first, last = (int(x) for x in handler.headers["Range"].removeprefix("bytes=").split("-"))
        body = data[first : last + 1]
        handler.send_response(206)
        handler.send_header("Content-Range", f"bytes {first}-{last}/{len(data)}")
        handler.send_header("Content-Length", str(len(body) + length_off))
        handler.send_header("ETag", ETAG)
        handler.end_headers()
        handler.wfile.write(body if cut_at is None else body[:cut_at])
        if cut_at is not None or length_off:
            handler.close_connection = True

    return answer


def stream(s3: S3Store, start: int, end: int) -> dict[int, bytes]:
    got: dict[int, bytes] = {}
    get = RangeGet("big", start, end, ETAG, len(BIG), "", 64 * 1024)
    s3.get_range_into(get, lambda at, data: got.__setitem__(at, bytes(data)))
    return got


def test_a_streamed_range_comes_lean_in_pieces_and_a_cut_resumes_at_a_block(aws_env, server):  # noqa: F811
    s3 = store(server.url)
    server.answers[:] = [ranged()]
    got = stream(s3, 65536, len(BIG))
    assert b"".join(got[at] for at in sorted(got)) == BIG[65536:]
    assert len(got) > 1 and max(len(piece) for piece in got.values()) <= 256 * 1024
    assert server.seen[-1][1]["range"] == f"bytes=65536-{len(BIG) - 1}"
    assert server.seen[-1][1]["if-match"] == ETAG
    server.answers[:] = [ranged(cut_at=200_000), ranged()]
    got = stream(s3, 0, 524288)
    assert b"".join(got[at] for at in sorted(got)) == BIG[:524288]
    assert server.seen[-1][1]["range"] == "bytes=196608-524287"  # from the last whole block
    assert s3.retrier.stats.retries["short_body"] == 1


def test_a_streamed_range_of_the_wrong_length_is_refused(aws_env, server):  # noqa: F811
    s3 = store(server.url)
    server.answers[:] = [ranged(length_off=1)] * 3
    with pytest.raises(BadResponse, match="Content-Length"):
        stream(s3, 0, 524288)


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (PEM files)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_a_streamed_range_over_tls_is_lean_and_checks_the_certificate(
    aws_env,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    import ssl

    cert_file, key_file = self_signed(tmp_path)
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            seen.append(self.headers["Range"])
            ranged()(self)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert_file, key_file)
    httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    url = f"https://127.0.0.1:{httpd.server_address[1]}"
    try:
        monkeypatch.setenv("AWS_CA_BUNDLE", str(cert_file))
        s3 = store(url)
        assert s3.lean is not None and s3.lean.tls is not None
        got = stream(s3, 0, 524288)
        assert b"".join(got[at] for at in sorted(got)) == BIG[:524288]
        assert seen == ["bytes=0-524287"]
        monkeypatch.delenv("AWS_CA_BUNDLE")  # the system's CAs do not know this certificate
        untrusted = store(url)
        refused = r"TLS certificate is not trusted \(self-signed certificate\)"
        with pytest.raises(RemoteError, match=refused):
            stream(untrusted, 0, 524288)
        assert len(seen) == 1  # no request went out on an unverified connection
        assert not untrusted.retrier.stats.retries  # a refused certificate is not retried
        with pytest.raises(RemoteError, match=refused):
            untrusted.check_access("")  # a listing, by boto3: the same
    finally:
        httpd.shutdown()
        httpd.server_close()
