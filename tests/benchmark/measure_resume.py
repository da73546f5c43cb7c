"""Measures what a kill -9 at about half of a copy costs: bytes refetched on resume.

    python -m tests.benchmark.measure_resume [--size-mib 1024] [--at 0.5] [--link 0.02,50e6]

Starts SeaweedFS, puts a counting proxy in front of it (and with ``--link``, the WAN link
simulator between the two, as the benchmark's WAN media rows do), mounts rangefs (default 8 MiB
chunks), copies the object to a file, SIGKILLs the daemon when the copy is at ``--at`` of
the object, mounts again with the same cache dir and copies again. Prints the bytes the
server sent in each run against the ideal (the part not fetched before) in chunks.
"""

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.benchmark.link import link
from tests.support import is_mounted, sha256_file
from tests.support.patterns import upload_pattern
from tests.support.proxy import CountingProxy
from tests.support.servers import start_seaweedfs

MiB = 1024 * 1024


def mount(env, endpoint, cache, mnt, pid_file, chunk):
    subprocess.run(
        [sys.executable, "-m", "rangefs", "mount", "--endpoint-url", endpoint, "--cache-dir",
         str(cache), "--pid-file", str(pid_file), "--chunk-size", chunk, "bkt", str(mnt)],
        env=env, check=True, timeout=60,
    )  # fmt: skip
    return int(pid_file.read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--at", type=float, default=0.5)
    ap.add_argument("--chunk-size", default="8M")
    ap.add_argument(
        "--link",
        metavar="LATENCY,BANDWIDTH",
        help="through the link simulator: seconds to the first byte, bytes/s per connection",
    )
    args = ap.parse_args()
    wan = [float(v) for v in args.link.split(",")] if args.link else None
    size = args.size_mib * MiB
    base = Path(tempfile.mkdtemp(prefix="rangefs-resume-"))
    server = start_seaweedfs(base / "s3")
    mnt, cache, dst, pid_file = base / "mnt", base / "cache", base / "copy.bin", base / "pid"
    mnt.mkdir()
    try:
        client = server.client()
        client.create_bucket(Bucket="bkt")
        want = upload_pattern(client, "bkt", "big.bin", size, 1)
        with contextlib.ExitStack() as stack:
            upstream = server.endpoint_url
            if wan is not None:
                upstream = stack.enter_context(link(upstream, latency=wan[0], bandwidth=wan[1]))
            proxy = stack.enter_context(CountingProxy(upstream))
            pid = mount(server.env(), proxy.url, cache, mnt, pid_file, args.chunk_size)
            cp = subprocess.Popen(["cp", str(mnt / "big.bin"), str(dst)])
            while (dst.stat().st_size if dst.exists() else 0) < args.at * size:
                time.sleep(0.005)
            os.kill(pid, signal.SIGKILL)
            copied = dst.stat().st_size
            cp.kill()
            cp.wait()
            subprocess.run(["fusermount3", "-uz", str(mnt)], check=False, timeout=30)
            first = proxy.bytes_sent("big.bin")
            proxy.reset()
            pid = mount(server.env(), proxy.url, cache, mnt, pid_file, args.chunk_size)
            started = time.monotonic()
            subprocess.run(["cp", str(mnt / "big.bin"), str(dst)], check=True, timeout=600)
            seconds = time.monotonic() - started
            second = proxy.bytes_sent("big.bin")
            subprocess.run(["fusermount3", "-u", str(mnt)], check=False, timeout=30)
        digest = sha256_file(dst)
        chunk = int(args.chunk_size.rstrip("M")) * MiB
        ideal = size - first
        through = ""
        if wan is not None:
            through = f", link {wan[0] * 1000:.0f} ms + {wan[1] / 1e6:.0f} MB/s per connection"
        print(f"object            {size / MiB:.0f} MiB, chunk {args.chunk_size}{through}")
        print(f"killed at         cp had written {copied / MiB:.0f} MiB ({copied / size:.0%})")
        print(f"run 1 (killed)    server sent {first / MiB:.1f} MiB")
        extra = second - ideal
        print(
            f"run 2 (resumed)   server sent {second / MiB:.1f} MiB in {seconds:.1f}s; ideal (not "
            f"sent before) {ideal / MiB:.1f} MiB; overhead {extra / MiB:+.1f} MiB = "
            f"{extra / chunk:+.2f} chunks"
        )
        print(
            f"total sent        {(first + second) / MiB:.1f} MiB for a {size / MiB:.0f} MiB object"
        )
        print(f"result            {'byte-identical' if digest == want else 'MISMATCH'}")
        return 0 if digest == want else 1
    finally:
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-uz", str(mnt)], check=False, timeout=30)
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
