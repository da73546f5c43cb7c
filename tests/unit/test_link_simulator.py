"""The benchmark's WAN link simulator in front of a tiny local HTTP server: bytes pass
unchanged, every request waits the latency, the bandwidth cap holds.

Timing is asserted loosely and one way only (at least the latency, at most the cap), so a
slow machine cannot make these fail.
"""

from __future__ import annotations

import http.client
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.benchmark.link import Bucket, chunk_for, link

PAYLOAD = bytes((i * 7 + i // 251) % 256 for i in range(3 * 1024 * 1024 + 123))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: several requests per connection

    def do_GET(self) -> None:
        size = int(self.path.strip("/") or len(PAYLOAD))
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        self.wfile.write(PAYLOAD[:size])

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def origin() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def get(conn: http.client.HTTPConnection, size: int) -> tuple[bytes, float]:
    start = time.monotonic()
    conn.request("GET", f"/{size}")
    response = conn.getresponse()
    body = response.read()
    assert response.status == 200
    return body, time.monotonic() - start


def connect(url: str) -> http.client.HTTPConnection:
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname is not None
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["splice", "copy"])
def test_bytes_pass_unchanged_and_are_counted(origin: str, mode: str) -> None:
    stats: dict[str, int] = {}
    with link(origin, workers=2, mode=mode, stats=stats) as url:
        conns = [connect(url) for _ in range(3)]
        try:
            for conn in conns:
                for size in (len(PAYLOAD), 1, 100_000):
                    body, _ = get(conn, size)
                    assert body == PAYLOAD[:size]
        finally:
            for conn in conns:
                conn.close()
    assert stats["connections"] == 3
    assert stats["turns"] == 9  # one per request on a kept-alive connection
    body_bytes = 3 * (len(PAYLOAD) + 1 + 100_000)
    assert body_bytes < stats["down_bytes"] < body_bytes + 9 * 1000  # bodies + headers
    assert stats["up_bytes"] > 0
    assert stats["cpu_ms"] >= 0


@pytest.mark.timeout(60)
def test_every_request_waits_the_latency_also_on_a_kept_alive_connection(origin: str) -> None:
    latency = 0.3
    with link(origin, latency=latency, workers=1) as url:
        conn = connect(url)
        try:
            times = [get(conn, 10)[1] for _ in range(3)]
        finally:
            conn.close()
    assert min(times) >= 0.8 * latency, times


@pytest.mark.timeout(60)
def test_the_bandwidth_cap_bounds_each_connection(origin: str) -> None:
    rate = 3e6  # 3 MB/s: the payload (3.1 MiB) needs ≥ 1 s, minus one burst
    with link(origin, bandwidth=rate, workers=1) as url:
        conn = connect(url)
        try:
            body, seconds = get(conn, len(PAYLOAD))
        finally:
            conn.close()
    assert body == PAYLOAD
    assert len(PAYLOAD) / seconds <= 1.5 * rate, f"{len(PAYLOAD) / seconds / 1e6:.1f} MB/s"


@pytest.mark.timeout(30)
def test_token_bucket_paces_to_its_rate() -> None:
    bucket = Bucket(10e6)
    assert bucket.burst == chunk_for(10e6) == 100_000
    start = time.monotonic()
    for _ in range(30):
        bucket.take(100_000)  # 3 MB at 10 MB/s: ≥ 0.29 s after the first burst
    assert time.monotonic() - start >= 0.25
    assert chunk_for(None) == 1024 * 1024
    assert chunk_for(1e6) == 16 * 1024
