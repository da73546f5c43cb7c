"""A byte-counting, fault-injecting HTTP reverse proxy for S3 traffic.

rangefs runs as a separate daemon, so the only place a test can observe and
disturb what it sends to S3 is the wire. The proxy sits between the daemon and
the real server and

* records every request (method, bucket, key, Range, If-Match, the request
  headers, status, body bytes actually delivered), so tests can assert "one ranged GET per chunk",
  "nothing re-downloaded after remount", ...;
* injects the failures S3 clients meet in production: throttling errors,
  bodies cut short, stalled responses, slow links, an unreachable endpoint
  (``unplug``: connections refused; ``Faults.hang``: requests never answered).

Requests and headers are forwarded byte-for-byte (``Host`` and
``Authorization`` included) because SigV4 signs them; the upstream must see
exactly what the client signed. Response bodies are streamed in 64 KiB pieces
so GiB-sized objects pass through without being buffered.

Run standalone for benchmarks::

    python -m tests.support.proxy --upstream http://127.0.0.1:8333 --port 9000 --latency 0.05
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import http.client
import random
import signal
import socket
import struct
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["CountingProxy", "Faults", "RequestRecord"]

PIECE = 64 * 1024
_ERROR_CODES = {
    500: ("InternalError", "We encountered an internal error. Please try again."),
    502: ("BadGateway", "Bad gateway (injected by test proxy)."),
    503: ("SlowDown", "Please reduce your request rate."),
}
_RETRYABLE_UPSTREAM = (
    http.client.RemoteDisconnected,
    http.client.BadStatusLine,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
)


@dataclass
class RequestRecord:
    """One request as seen by the proxy.

    ``body_bytes`` counts response-body bytes relayed from the upstream and
    handed to the client socket; it is updated while the body streams, so it
    is exact as soon as the client has read the last byte. Synthetic error
    bodies are not counted: they carry no object data. ``status`` is 0 when
    the connection was dropped without an answer. ``headers`` holds every
    request header as sent, names in lower case.
    """

    method: str
    key: str | None
    bucket: str | None
    query: str
    range: str | None
    if_match: str | None
    status: int = 0
    body_bytes: int = 0
    fault: str | None = None
    started: float = 0.0
    finished: float | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclass
class Faults:
    """Fault settings; assign fields at any time, they apply to the next request.

    Rates are per eligible GET and mutually exclusive (one random draw picks at
    most one fault). With ``only_ranged`` (the default) only GETs carrying a
    Range header are eligible, so ListObjects, HEAD-like probes and plain
    downloads by the test itself stay clean. ``latency`` (seconds before each
    request is forwarded) and ``bandwidth`` (bytes/s per response body) apply
    to every request; ``down`` drops every request without an answer; ``hang``
    holds every request, unanswered, for as long as it is set (a black-holed
    network: the client's timeouts fire), then forwards it.
    """

    error_rate: float = 0.0
    error_status: int = 503
    cut_rate: float = 0.0
    stall_rate: float = 0.0
    stall_seconds: float = 30.0
    latency: float = 0.0
    bandwidth: float | None = None
    only_ranged: bool = True
    down: bool = False
    hang: bool = False


@dataclass
class _Injection:
    kind: str
    arg: float | None
    only_ranged: bool
    spec: str


def spans(ranges: Any) -> list[tuple[int, int]]:
    """The byte spans ``[start, end)`` of ``Range`` values (``bytes=a-b``), in order."""
    out = []
    for value in ranges:
        first, last = value.removeprefix("bytes=").split("-")
        out.append((int(first), int(last) + 1))
    return sorted(out)


def covered(ranges: Any) -> list[tuple[int, int]]:
    """The bytes that ``Range`` values cover together, as merged spans: GETs split
    differently cover the same bytes the same way."""
    merged: list[tuple[int, int]] = []
    for start, end in spans(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def asked_bytes(ranges: Any) -> int:
    """Bytes the ``Range`` values ask for, counting overlaps as many times as asked."""
    return sum(end - start for start, end in spans(ranges))


def _parse_injection(spec: str, only_ranged: bool) -> _Injection:
    kind, _, arg = spec.partition(":")
    if kind.isdigit() and not arg:
        return _Injection("error", int(kind), only_ranged, spec)
    if kind in ("cut", "reset") and arg:
        return _Injection(kind, int(arg), only_ranged, spec)
    if kind == "stall" and arg:
        return _Injection(kind, float(arg), only_ranged, spec)
    if kind == "refuse" and not arg:
        return _Injection(kind, None, only_ranged, spec)
    if kind == "flip" and arg:
        return _Injection(kind, int(arg), only_ranged, spec)
    raise ValueError(
        f"bad fault spec {spec!r}; expected STATUS, 'cut:N', 'reset:N', 'stall:S', 'flip:N' "
        "or 'refuse'"
    )


@dataclass
class FlipRule:
    """Inverts byte ``offset`` of the body of GETs of ``key`` whose Range starts at
    ``range_start`` (None: any), ``times`` times (None: every time)."""

    offset: int
    key: str | None = None
    range_start: int | None = None
    times: int | None = 1

    def matches(self, record: RequestRecord) -> bool:
        if self.times == 0 or record.range is None:
            return False
        if self.key is not None and record.key != self.key:
            return False
        start = record.range.removeprefix("bytes=").partition("-")[0]
        return self.range_start is None or start == str(self.range_start)


def _split_target(target: str) -> tuple[str | None, str | None, str]:
    path, _, query = target.partition("?")
    if "://" in path:
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    bucket, sep, key = path[1:].partition("/")
    return (
        urllib.parse.unquote(bucket) or None,
        urllib.parse.unquote(key) if sep and key else None,
        query,
    )


def _abort(sock: socket.socket) -> None:
    """Close with RST, like a crashed peer or a middlebox dropping the flow."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def _close_after_flush(sock: socket.socket) -> None:
    """Send FIN after everything written so far, so the peer sees exactly the
    bytes counted and then a premature EOF."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    proxy: CountingProxy


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    upstream: http.client.HTTPConnection | None = None

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.upstream = None
        self.server.proxy._track(self.connection, add=True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self._drop_upstream()
        self.server.proxy._track(self.connection, add=False)

    def handle(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            super().handle()

    def handle_one_request(self) -> None:
        super().handle_one_request()
        if self.close_connection is False and self.server.proxy._stopping.is_set():
            self.close_connection = True

    def do_GET(self) -> None:
        self._proxy_request()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = do_GET

    def _drop_upstream(self) -> None:
        if self.upstream is not None:
            self.server.proxy._track_upstream(self.upstream, add=False)
            with contextlib.suppress(OSError):
                self.upstream.close()
            self.upstream = None

    def _read_body(self) -> tuple[bytes | None, bool]:
        """The request body (buffered: S3 requests from tests are ≤ 16 MiB parts)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            pieces: list[bytes] = []
            while True:
                size_line = self.rfile.readline(1024)
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                pieces.append(self.rfile.read(size))
                self.rfile.readline(3)
            return b"".join(pieces), True
        length = self.headers.get("Content-Length")
        if length is None:
            return None, False
        return self.rfile.read(int(length)), False

    def _send_upstream(self, body: bytes | None, chunked: bool) -> http.client.HTTPResponse:
        proxy = self.server.proxy
        for attempt in (1, 2):
            reused = self.upstream is not None
            if self.upstream is None:
                self.upstream = http.client.HTTPConnection(
                    proxy.upstream_host, proxy.upstream_port, timeout=proxy.upstream_timeout
                )
                proxy._track_upstream(self.upstream, add=True)
            conn = self.upstream
            try:
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    conn.putheader(name, value)
                conn.endheaders()
                if body:
                    if chunked:
                        conn.send(b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
                    else:
                        conn.send(body)
                elif chunked:
                    conn.send(b"0\r\n\r\n")
                return conn.getresponse()
            except _RETRYABLE_UPSTREAM:
                self._drop_upstream()
                if attempt == 2 or not reused:
                    raise
        raise AssertionError("unreachable")

    def _write_head(self, status: int, reason: str, headers: list[tuple[str, str]]) -> None:
        lines = [f"HTTP/1.1 {status} {reason}\r\n"]
        lines += [f"{name}: {value}\r\n" for name, value in headers]
        lines.append("\r\n")
        self.wfile.write("".join(lines).encode("latin-1"))

    def _send_error_reply(self, record: RequestRecord, status: int) -> None:
        code, message = _ERROR_CODES.get(status, ("InternalError", "Injected error."))
        request_id = f"PROXY{record.started:.6f}".replace(".", "")
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            f"<Resource>{self.path.partition('?')[0]}</Resource>"
            f"<RequestId>{request_id}</RequestId></Error>"
        ).encode()
        self._write_head(
            status,
            http.client.responses.get(status, "Error"),
            [
                ("Content-Type", "application/xml"),
                ("Content-Length", str(len(body))),
                ("x-amz-request-id", request_id),
                ("Date", self.date_time_string()),
            ],
        )
        self.wfile.write(body)

    def _proxy_request(self) -> None:
        proxy = self.server.proxy
        faults = proxy.faults
        bucket, key, query = _split_target(self.path)
        record = RequestRecord(
            method=self.command,
            key=key,
            bucket=bucket,
            query=query,
            range=self.headers.get("Range"),
            if_match=self.headers.get("If-Match"),
            started=time.monotonic(),
            headers={name.lower(): value for name, value in self.headers.items()},
        )
        proxy._add(record)
        try:
            if faults.hang:
                record.fault = "hang"
                while proxy.faults.hang:
                    if proxy._stopping.wait(0.02):
                        raise ConnectionAbortedError("proxy stopping")
            if faults.down:
                record.fault = "down"
                self.close_connection = True
                _abort(self.connection)
                return
            self._serve(record, faults)
        except Exception as e:
            if record.status == 0 and record.fault is None:
                record.fault = f"error:{type(e).__name__}"
            self.close_connection = True
            self._drop_upstream()
            _abort(self.connection)
        finally:
            record.finished = time.monotonic()

    def _serve(self, record: RequestRecord, faults: Faults) -> None:
        proxy = self.server.proxy
        body, chunked = self._read_body()
        if faults.latency > 0 and proxy._stopping.wait(faults.latency):
            raise ConnectionAbortedError("proxy stopping")
        fault = proxy._choose_fault(record) if record.method == "GET" else None

        if fault is not None and fault.kind == "refuse":
            record.fault = fault.spec
            self.close_connection = True
            _abort(self.connection)
            return
        if fault is not None and fault.kind == "error":
            record.fault = fault.spec
            record.status = int(fault.arg or 503)
            self._send_error_reply(record, record.status)
            return

        response = self._send_upstream(body, chunked)
        record.status = response.status
        if fault is not None:
            record.fault = fault.spec
        headers = response.getheaders()
        content_length = response.getheader("Content-Length")
        upstream_chunked = response.chunked
        self._write_head(response.status, response.reason, headers)

        flip_at = proxy._flip_offset(record)
        if fault is not None and fault.kind == "flip":
            flip_at = int(fault.arg or 0)
        if flip_at is not None:
            record.fault = record.fault or f"flip:{flip_at}"
        limit: int | None = None
        cut_mode = ""
        if fault is not None and fault.kind in ("cut", "reset"):
            cut_mode = fault.kind
            if fault.arg is not None and fault.arg >= 0:
                limit = int(fault.arg)
            else:
                total = int(content_length) if content_length else PIECE
                limit = int(total * proxy._uniform(0.05, 0.95))
        if fault is not None and fault.kind == "stall":
            seconds = float(fault.arg) if fault.arg is not None else faults.stall_seconds
            if proxy._stopping.wait(seconds):
                raise ConnectionAbortedError("proxy stopping")

        self._relay_body(response, record, limit, upstream_chunked, faults, flip_at)
        if cut_mode:
            self.close_connection = True
            self._drop_upstream()
            if cut_mode == "reset":
                _abort(self.connection)
            else:
                _close_after_flush(self.connection)
            return
        if response.will_close:
            self._drop_upstream()
            self.close_connection = True

    def _relay_body(
        self,
        response: http.client.HTTPResponse,
        record: RequestRecord,
        limit: int | None,
        chunked: bool,
        faults: Faults,
        flip_at: int | None = None,
    ) -> None:
        proxy = self.server.proxy
        buf = bytearray(PIECE)
        view = memoryview(buf)
        start = time.monotonic()
        sent = 0
        while limit is None or sent < limit:
            want = PIECE if limit is None else min(PIECE, limit - sent)
            bandwidth = faults.bandwidth
            if bandwidth:
                want = max(1, min(want, int(bandwidth / 20)))
            n = response.readinto(view[:want])
            if not n:
                break
            if bandwidth:
                ahead = (sent + n) / bandwidth - (time.monotonic() - start)
                if ahead > 0 and proxy._stopping.wait(ahead):
                    raise ConnectionAbortedError("proxy stopping")
            if flip_at is not None and sent <= flip_at < sent + n:
                view[flip_at - sent] ^= 0xFF  # lengths and headers untouched
            with proxy._lock:
                record.body_bytes += n
            try:
                if chunked:
                    self.wfile.write(b"%x\r\n" % n)
                    self.wfile.write(view[:n])
                    self.wfile.write(b"\r\n")
                else:
                    self.wfile.write(view[:n])
            except OSError:
                with proxy._lock:
                    record.body_bytes -= n
                raise
            sent += n
        if chunked and limit is None:
            self.wfile.write(b"0\r\n\r\n")


class CountingProxy:
    """Reverse proxy in a background thread; see the module docstring.

    Usable as a context manager. ``url`` is what the client uses as its
    endpoint.
    """

    def __init__(
        self,
        upstream: str,
        *,
        port: int = 0,
        seed: int = 0,
        faults: Faults | None = None,
        upstream_timeout: float = 120.0,
    ) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self.upstream = upstream
        self.upstream_host = parsed.hostname
        self.upstream_port = parsed.port or 80
        self.upstream_timeout = upstream_timeout
        self._faults = faults or Faults()
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._records: list[RequestRecord] = []
        self._injections: collections.deque[_Injection] = collections.deque()
        self._flips: list[FlipRule] = []
        self._connections: set[socket.socket] = set()
        self._upstreams: set[http.client.HTTPConnection] = set()
        self.connections_accepted = 0
        """Client connections accepted so far: shows whether clients reuse them."""
        self._stopping = threading.Event()
        self.port: int = port
        self._listen()
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def faults(self) -> Faults:
        return self._faults

    @faults.setter
    def faults(self, value: Faults) -> None:
        self._faults = value

    def set_faults(self, **changes: Any) -> Faults:
        """Replace several fault fields at once (atomically for readers)."""
        self._faults = dataclasses.replace(self._faults, **changes)
        return self._faults

    def clear_faults(self) -> None:
        """No faults, no latency, no pending injections or flips."""
        self._faults = Faults()
        with self._lock:
            self._injections.clear()
            self._flips.clear()

    def flip(
        self,
        offset: int,
        *,
        key: str | None = None,
        range_start: int | None = None,
        times: int | None = 1,
    ) -> FlipRule:
        """Invert byte ``offset`` of the response body of ranged GETs (of ``key``, whose
        Range starts at ``range_start``), ``times`` times (None: until cleared); status,
        headers and lengths untouched: only a checksum of the bytes can tell."""
        rule = FlipRule(offset, key, range_start, times)
        with self._lock:
            self._flips.append(rule)
        return rule

    def _flip_offset(self, record: RequestRecord) -> int | None:
        if record.method != "GET":
            return None
        with self._lock:
            for rule in self._flips:
                if rule.matches(record):
                    if rule.times is not None:
                        rule.times -= 1
                    return rule.offset
        return None

    def inject(self, *specs: str, only_ranged: bool = True) -> None:
        """Queue one-shot faults for the next eligible GETs, in order.

        Specs: ``"503"``/``"500"`` (error reply), ``"cut:N"`` (N body bytes then
        FIN), ``"reset:N"`` (N body bytes then RST), ``"stall:S"`` (headers,
        then S seconds of silence, then the body), ``"flip:N"`` (byte N of the
        body inverted, nothing else changed) and ``"refuse"`` (drop the
        connection without answering).
        """
        parsed = [_parse_injection(spec, only_ranged) for spec in specs]
        with self._lock:
            self._injections.extend(parsed)

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._connections)

    def pending_injections(self) -> int:
        with self._lock:
            return len(self._injections)

    @property
    def records(self) -> list[RequestRecord]:
        with self._lock:
            return [dataclasses.replace(r) for r in self._records]

    def reset(self) -> None:
        """Forget recorded requests (faults stay as they are)."""
        with self._lock:
            self._records.clear()

    def count(
        self,
        method: str | None = "GET",
        key: str | None = None,
        ranged_only: bool = False,
        *,
        bucket: str | None = None,
        status: int | None = None,
    ) -> int:
        """Number of recorded requests matching every given filter."""
        return len(self.matching(method, key, ranged_only, bucket=bucket, status=status))

    def matching(
        self,
        method: str | None = "GET",
        key: str | None = None,
        ranged_only: bool = False,
        *,
        bucket: str | None = None,
        status: int | None = None,
    ) -> list[RequestRecord]:
        return [
            r
            for r in self.records
            if (method is None or r.method == method)
            and (key is None or r.key == key)
            and (bucket is None or r.bucket == bucket)
            and (status is None or r.status == status)
            and (not ranged_only or r.range is not None)
        ]

    def bytes_sent(self, key: str | None = None, *, bucket: str | None = None) -> int:
        """Object bytes delivered to clients by GETs (optionally for one key)."""
        return sum(r.body_bytes for r in self.matching("GET", key, bucket=bucket))

    def unplug(self) -> None:
        """Stop listening and cut every client connection: the endpoint refuses connections
        (ECONNREFUSED) until :meth:`plug`, as a server that is down or a laptop offline."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        self._cut(upstreams=False)

    def plug(self) -> None:
        """Listen again on the same port after :meth:`unplug`."""
        self._listen()

    def _listen(self) -> None:
        self._server = _Server(("127.0.0.1", self.port), _Handler)
        self._server.proxy = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"proxy-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and cut every open connection, both sides."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._cut(upstreams=True)
        self._thread.join(timeout=10)

    def _cut(self, *, upstreams: bool) -> None:
        with self._lock:
            connections = list(self._connections)
            upstream_conns = list(self._upstreams) if upstreams else []
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        for conn in upstream_conns:
            if conn.sock is not None:
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.close()

    def __enter__(self) -> CountingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"CountingProxy({self.url} -> {self.upstream})"

    def _track(self, sock: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self.connections_accepted += 1
                self._connections.add(sock)
            else:
                self._connections.discard(sock)

    def _track_upstream(self, conn: http.client.HTTPConnection, *, add: bool) -> None:
        with self._lock:
            if add:
                self._upstreams.add(conn)
            else:
                self._upstreams.discard(conn)

    def _add(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def _uniform(self, low: float, high: float) -> float:
        with self._lock:
            return self._rng.uniform(low, high)

    def _choose_fault(self, record: RequestRecord) -> _Injection | None:
        ranged = record.range is not None
        faults = self._faults
        with self._lock:
            if self._injections:
                head = self._injections[0]
                if ranged or not head.only_ranged:
                    return self._injections.popleft()
            if faults.only_ranged and not ranged:
                return None
            draw = self._rng.random()
        threshold = faults.error_rate
        if draw < threshold:
            return _Injection("error", faults.error_status, faults.only_ranged, "rate-error")
        threshold += faults.cut_rate
        if draw < threshold:
            return _Injection("cut", None, faults.only_ranged, "rate-cut")
        threshold += faults.stall_rate
        if draw < threshold:
            return _Injection("stall", faults.stall_seconds, faults.only_ranged, "rate-stall")
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.proxy",
        description="Counting/fault-injecting S3 reverse proxy; runs until SIGTERM.",
    )
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:8333")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per request")
    parser.add_argument("--bandwidth", type=float, default=None, help="bytes/s per connection")
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--cut-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    faults = Faults(
        latency=args.latency,
        bandwidth=args.bandwidth,
        error_rate=args.error_rate,
        cut_rate=args.cut_rate,
    )
    with CountingProxy(args.upstream, port=args.port, seed=args.seed, faults=faults) as proxy:
        print(proxy.url, flush=True)
        stop.wait()
        records = proxy.records
        print(
            f"requests={len(records)} get_bytes={proxy.bytes_sent()} "
            f"ranged_gets={proxy.count('GET', ranged_only=True)}",
            file=sys.stderr,
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
