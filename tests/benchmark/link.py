"""A fast TCP link simulator for the benchmark's WAN rows: latency and a per-connection
bandwidth cap, nothing else.

The kernel here has no netem, so a slow link has to be simulated in user space, and the
simulator must stay far above what is measured through it. This one never parses HTTP:

* each client connection gets its own upstream connection; bytes pass unchanged;
* latency: when the client sends after the server has answered (a direction change,
  i.e. a new request on a keep-alive connection, or the first one), those bytes are held
  for ``latency`` seconds before they go upstream, so every response's first byte comes
  at least ``latency`` after its request was sent;
* bandwidth: a token bucket per connection and direction (burst: 10 ms worth);
* speed: several worker processes accept on one listening socket, two threads per
  connection move the bytes with ``os.splice`` through a pipe (no copy into Python),
  up to 1 MiB per call.

Run standalone (prints its URL, runs until SIGTERM, then prints its counters)::

    python -m tests.benchmark.link --upstream http://127.0.0.1:8333 --latency 0.02 \\
        --bandwidth 50e6

or as :func:`link` from Python. The counters are ``connections``, ``turns`` (direction
changes client→server: about one per request), ``down_bytes`` (server→client, HTTP
headers included), ``up_bytes`` and ``cpu_ms`` (the workers' CPU time).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import mmap
import os
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator

from tests.benchmark.common import deferred_sigint
from tests.support import REPO_ROOT

__all__ = ["COUNTERS", "CPU_COUNTER", "LinkError", "link"]

MAX_CHUNK = 1024 * 1024
COUNTERS = ("connections", "turns", "down_bytes", "up_bytes")
#: After :data:`COUNTERS` on stop: the workers' CPU time, user + system, in milliseconds.
CPU_COUNTER = "cpu_ms"
_SLOT = struct.Struct(f"{len(COUNTERS)}q")


class LinkError(RuntimeError):
    """The simulator did not start."""


class Bucket:
    """A token bucket: :meth:`take` sleeps so that the bytes taken average ``rate``/s."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = chunk_for(rate)
        self.tokens = float(self.burst)
        self.stamp = time.monotonic()

    def take(self, n: int) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate) - n
        self.stamp = now
        if self.tokens < 0:
            time.sleep(-self.tokens / self.rate)


def chunk_for(rate: float | None) -> int:
    """Bytes per read: 1 MiB, or 10 ms worth of a capped link (at least 16 KiB)."""
    if not rate:
        return MAX_CHUNK
    return max(16 * 1024, min(MAX_CHUNK, int(rate / 100)))


class Counters:
    """One worker's counters in memory shared with the parent (one slot per worker)."""

    def __init__(self, shared: mmap.mmap, slot: int) -> None:
        self.shared, self.offset = shared, slot * _SLOT.size
        self.lock = threading.Lock()

    def add(self, index: int, n: int) -> None:
        with self.lock:
            values = list(_SLOT.unpack_from(self.shared, self.offset))
            values[index] += n
            _SLOT.pack_into(self.shared, self.offset, *values)


class Connection:
    """One client connection and its upstream; one thread per direction."""

    def __init__(
        self,
        client: socket.socket,
        upstream: socket.socket,
        latency: float,
        bandwidth: float | None,
        splice: bool,
        counters: Counters,
    ) -> None:
        self.client, self.upstream = client, upstream
        self.latency, self.bandwidth, self.splice = latency, bandwidth, splice
        self.counters = counters
        self.answered = True  # the first client bytes start a turn
        self.lock = threading.Lock()
        self.running = 2

    def start(self) -> None:
        for up in (True, False):
            threading.Thread(target=self.pump, args=(up,), daemon=True).start()

    def pump(self, up: bool) -> None:
        src, dst = (self.client, self.upstream) if up else (self.upstream, self.client)
        try:
            if self.splice:
                self._splice(src, dst, up)
            else:
                self._copy(src, dst, up)
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
        except OSError:
            for s in (self.client, self.upstream):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
        finally:
            with self.lock:
                self.running -= 1
                last = self.running == 0
            if last:
                self.client.close()
                self.upstream.close()

    def _arrived(self, up: bool, n: int, bucket: Bucket | None) -> None:
        """``n`` bytes are in hand: apply the latency and the cap before they go on."""
        if up:
            if self.answered:
                self.answered = False
                self.counters.add(1, 1)
                if self.latency > 0:
                    time.sleep(self.latency)
        else:
            # Set before the bytes go on: the client cannot answer what it has not seen.
            self.answered = True
        if bucket is not None:
            bucket.take(n)
        self.counters.add(3 if up else 2, n)

    def _splice(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        chunk = chunk_for(self.bandwidth)
        bucket = Bucket(self.bandwidth) if self.bandwidth else None
        r, w = os.pipe()
        try:
            with contextlib.suppress(OSError):
                fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, chunk)
            sfd, dfd = src.fileno(), dst.fileno()
            while True:
                n = os.splice(sfd, w, chunk)
                if n == 0:
                    return
                self._arrived(up, n, bucket)
                left = n
                while left:
                    left -= os.splice(r, dfd, left)
        finally:
            os.close(r)
            os.close(w)

    def _copy(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        chunk = chunk_for(self.bandwidth)
        bucket = Bucket(self.bandwidth) if self.bandwidth else None
        view = memoryview(bytearray(chunk))
        while True:
            n = src.recv_into(view, chunk)
            if n == 0:
                return
            self._arrived(up, n, bucket)
            dst.sendall(view[:n])


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _worker(
    listener: socket.socket,
    upstream: tuple[str, int],
    args: argparse.Namespace,
    counters: Counters,
) -> None:
    _die_with_parent()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            continue
        try:
            remote = socket.create_connection(upstream, timeout=10)
            remote.settimeout(None)
        except OSError:
            client.close()
            continue
        for s in (client, remote):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        counters.add(0, 1)
        Connection(
            client, remote, args.latency, args.bandwidth, args.mode == "splice", counters
        ).start()


def serve(args: argparse.Namespace) -> dict[str, int]:
    """Listen, fork the workers, print the URL, wait for SIGTERM/SIGINT; the counters."""
    parsed = urllib.parse.urlsplit(args.upstream if "//" in args.upstream else "//" + args.upstream)
    upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))
    listener.listen(1024)
    shared = mmap.mmap(-1, _SLOT.size * args.workers)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    pids = []
    try:
        for slot in range(args.workers):
            pid = os.fork()
            if pid == 0:
                try:
                    _worker(listener, upstream, args, Counters(shared, slot))
                finally:
                    os._exit(0)
            pids.append(pid)
        host, port = listener.getsockname()[:2]
        print(f"http://{host}:{port}", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(OSError):
                os.waitpid(pid, 0)
        listener.close()
    totals = [0] * len(COUNTERS)
    for slot in range(args.workers):
        for i, v in enumerate(_SLOT.unpack_from(shared, slot * _SLOT.size)):
            totals[i] += v
    counters = dict(zip(COUNTERS, totals, strict=True))
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    counters[CPU_COUNTER] = round((usage.ru_utime + usage.ru_stime) * 1000)
    return counters


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tests.benchmark.link",
        description="TCP link simulator: latency per direction change and a bandwidth cap "
        "per connection; runs until SIGTERM, then prints its counters on stderr.",
    )
    p.add_argument("--upstream", required=True, help="host:port or URL, e.g. http://127.0.0.1:8333")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency", type=float, default=0.0, help="seconds before each request")
    p.add_argument("--bandwidth", type=float, default=None, help="bytes/s per connection")
    p.add_argument("--workers", type=int, default=default_workers(), help="processes")
    p.add_argument("--mode", choices=("splice", "copy"), default="splice")
    args = p.parse_args(argv)
    if args.bandwidth is not None and args.bandwidth <= 0:
        args.bandwidth = None
    return args


def default_workers() -> int:
    return max(2, os.cpu_count() or 1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    counters = serve(args)
    print(" ".join(f"{k}={v}" for k, v in counters.items()), file=sys.stderr, flush=True)
    return 0


@contextlib.contextmanager
def link(
    upstream: str,
    *,
    latency: float = 0.0,
    bandwidth: float | None = None,
    workers: int | None = None,
    mode: str = "splice",
    stats: dict[str, int] | None = None,
) -> Iterator[str]:
    """The simulator in its own process group, in front of ``upstream``; yields its URL.
    ``stats`` gets its counters when it stops."""
    cmd = [
        sys.executable,
        "-m",
        "tests.benchmark.link",
        "--upstream",
        upstream,
        "--latency",
        str(latency),
        "--bandwidth",
        str(bandwidth or 0),
        "--workers",
        str(workers or default_workers()),
        "--mode",
        mode,
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        url = proc.stdout.readline().strip() if ready and proc.stdout else ""
        if not url.startswith("http://"):
            raise LinkError(f"link simulator did not start: {url!r}")
        yield url
    finally:
        with deferred_sigint():
            proc.send_signal(signal.SIGTERM)
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate(timeout=10)
        if stats is not None:
            for word in (err or "").split():
                name, _, value = word.partition("=")
                if value.isdigit():
                    stats[name] = int(value)


if __name__ == "__main__":
    sys.exit(main())
