"""What is measured: each scenario drives one peer (or a few) and adds samples to rows.

A scenario does not know which peer it drives beyond what :mod:`tests.benchmark.peers`
promises; the page cache is dropped before every cold read, and every mount, cache,
copy and proxy a scenario starts is gone when it returns or raises.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.benchmark.common import (
    BUCKET,
    CONC_READERS,
    FIO_BLOCK,
    LINK_STREAMS,
    MAIN_KEY,
    VIDEO_KEY,
    WAN_KEY,
    BenchError,
    Budget,
    LinkProfile,
    MiB,
    Scratch,
    conc_key,
    deferred_sigint,
    drop_caches,
    fio_pass,
    log,
    one_line,
    run,
    timeout_for,
)
from tests.benchmark.link import CPU_COUNTER
from tests.benchmark.peers import MountPeer, Peer, Reader
from tests.benchmark.results import Results, Sample
from tests.benchmark.workload import Workload
from tests.support import sha256_file


@dataclass
class Context:
    """What every scenario needs besides its peer."""

    results: Results
    scratch: Scratch
    workload: Workload
    endpoint: str
    repeat: int
    budget: Budget
    fio_runtime: int
    #: The server's credentials (AWS_* variables), for presigned URLs.
    env: dict[str, str] = field(default_factory=dict)
    link_workers: int | None = None

    def repeats(self, extra: int = 0) -> Iterator[int]:
        """``--repeat`` (+ ``extra``) runs, fewer once the budget is spent (the first always
        runs)."""
        for i in range(self.repeat + extra):
            if i > 0 and self.budget.expired():
                log("   (time budget: fewer repeats)")
                return
            yield i


def cold_copy(reader: Reader, key: str, nbytes: int, dest: Path | None = None) -> Sample:
    """Look the object up, drop the page cache, then read it all, timed."""
    reader.lookup(key)
    drop_caches()
    return reader.copy(key, nbytes, dest)


def local_copies(ctx: Context, peer: Peer[Reader], disk_row: str, page_row: str) -> None:
    """The local-disk baselines: one file, read cold from disk, then again from the page
    cache."""
    size = ctx.workload.size
    with peer.fresh() as local:
        for _ in ctx.repeats():
            ctx.results.add(disk_row, cold_copy(local, MAIN_KEY, size))
            ctx.results.add(page_row, local.copy(MAIN_KEY, size))


def cold_copies(ctx: Context, runs: list[tuple[Peer[Reader], str]], extra: int = 0) -> None:
    """One cold read of the main object per peer and repeat (``extra`` more runs for rows
    whose ratio is too close to 1 for three runs to tell), each on a fresh cache."""
    for _ in ctx.repeats(extra):
        for peer, row in runs:
            with peer.fresh() as reader:
                ctx.results.add(row, cold_copy(reader, MAIN_KEY, ctx.workload.size))


def verified_copy(ctx: Context, peer: Peer[Reader], row: str) -> None:
    """A cold copy to a local file; the first one is checked against the object's SHA-256."""
    dest = ctx.scratch.root / f"{peer.tool}-copy.bin"
    for i in ctx.repeats():
        try:
            with peer.fresh() as reader:
                ctx.results.add(row, cold_copy(reader, MAIN_KEY, ctx.workload.size, dest))
            if i == 0:
                if sha256_file(dest) != ctx.workload.sha:
                    raise BenchError("the copy's SHA-256 differs from the object's")
                ctx.results.note(row, "copy verified (SHA-256)")
        finally:
            dest.unlink(missing_ok=True)


def cache_cycle(ctx: Context, peer: Peer[Reader], rows: tuple[str, str, str]) -> None:
    """Fresh cache: cold copy, warm copy in the same session, then unmount, remount
    on the same cache and copy again (page cache dropped before each cold read)."""
    cold, warm, remount = rows
    size = ctx.workload.size
    for _ in ctx.repeats():
        with peer.cache() as cache:
            with peer.session(cache) as reader:
                ctx.results.add(cold, cold_copy(reader, MAIN_KEY, size))
                ctx.results.add(warm, reader.copy(MAIN_KEY, size))
                peer.settle()
            with peer.session(cache) as reader:
                ctx.results.add(remount, cold_copy(reader, MAIN_KEY, size))


@contextlib.contextmanager
def counting_proxy(endpoint: str) -> Iterator[Any]:
    """Counts what the server sends; stopped with Ctrl-C held back until it is."""
    from tests.support.proxy import CountingProxy

    proxy = CountingProxy(endpoint)
    try:
        yield proxy
    finally:
        with deferred_sigint():
            proxy.stop()


def counted_cycle(ctx: Context, peer: Peer[Reader], rows: tuple[str, str, str]) -> None:
    """The cache cycle once more, through the counting proxy: the object bytes and
    GETs the server sent for the cold read, the warm read and the read after remount."""
    counts: list[tuple[int, int]] = []
    size = ctx.workload.size
    try:
        with counting_proxy(ctx.endpoint) as proxy, peer.cache() as cache:

            def copy(reader: Reader, cold: bool) -> None:
                if cold:
                    reader.lookup(MAIN_KEY)
                    drop_caches()
                proxy.reset()
                reader.copy(MAIN_KEY, size)
                time.sleep(0.5)  # let background fetches show up
                counts.append(
                    (
                        proxy.bytes_sent(MAIN_KEY, bucket=BUCKET),
                        proxy.count("GET", MAIN_KEY, bucket=BUCKET),
                    )
                )

            with peer.session(cache, proxy.url) as reader:
                copy(reader, cold=True)
                copy(reader, cold=False)
                peer.settle()
            with peer.session(cache, proxy.url) as reader:
                copy(reader, cold=True)
    finally:
        for row_key, (nbytes, gets) in zip(rows, counts, strict=False):
            row = ctx.results.rows[row_key]
            row.server_bytes, row.gets = nbytes, gets


def concurrent_readers(ctx: Context, peer: MountPeer, row: str) -> None:
    """``cp`` of the eight concurrent objects at once, cold; the daemon's CPU and RSS."""
    nbytes = ctx.workload.conc_size * CONC_READERS
    for _ in ctx.repeats():
        procs: list[subprocess.Popen[bytes]] = []
        try:
            with peer.fresh() as m:
                paths = [m.path / conc_key(i) for i in range(CONC_READERS)]
                for i in range(CONC_READERS):
                    m.lookup(conc_key(i))
                drop_caches()
                cpu0 = m.cpu()
                start = time.monotonic()
                procs = [
                    subprocess.Popen(
                        ["cp", str(p), "/dev/null"],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                    )
                    for p in paths
                ]
                deadline = start + timeout_for(nbytes)
                for p in procs:
                    try:
                        p.wait(timeout=max(1.0, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        raise BenchError("concurrent cp timed out") from None
                    if p.returncode != 0:
                        err = p.stderr.read().decode() if p.stderr else ""
                        raise BenchError(f"cp exited {p.returncode}: {one_line(err)}")
                seconds = time.monotonic() - start
                cpu = m.cpu_since(cpu0)
                ctx.results.add(
                    row, Sample(seconds=seconds, nbytes=nbytes, peak_rss=m.hwm(), cpu=cpu)
                )
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(timeout=10)
                if p.stderr:
                    p.stderr.close()


def fio_random_reads(ctx: Context, peer: MountPeer, row: str) -> None:
    """fio random 64 KiB reads of the main object, one pass (each block once, see
    :func:`~tests.benchmark.common.fio_command`; cut at ``--fio-runtime`` s), cold start.
    Also the peer's CPU per read: what a read costs it once the bytes are local, which a
    busy machine slows but does not change."""
    if shutil.which("fio") is None:
        raise BenchError("fio not installed (apt-get install fio)")
    for _ in ctx.repeats():
        with peer.fresh() as m:
            m.lookup(MAIN_KEY)
            drop_caches()
            cpu0 = m.cpu()
            done = fio_pass(m.path / MAIN_KEY, ctx.workload.size, ctx.fio_runtime)
            cpu = m.cpu_since(cpu0)
            extra = {"iops": done.iops}
            if cpu is not None and done.reads:
                extra["cpu_ms_per_read"] = 1000 * cpu / done.reads
            ctx.results.add(
                row,
                Sample(
                    seconds=done.seconds,
                    nbytes=done.reads * FIO_BLOCK,
                    peak_rss=m.hwm(),
                    cpu=cpu,
                    extra=extra,
                ),
            )


def media_seeks(
    ctx: Context,
    peer: MountPeer,
    probe_row: str,
    seek_row: str,
    profile: LinkProfile | None = None,
) -> None:
    """ffprobe and ffmpeg -ss on the MP4, each on a fresh mount and cache, counted; with
    ``profile``, through the link simulator (the counting proxy in front of it)."""
    middle = f"{ctx.workload.video_seconds / 2:.1f}"
    commands = {
        probe_row: lambda path: (
            ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", path]
        ),
        seek_row: lambda path: [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-ss",
            middle,
            "-i",
            path,
            "-frames:v",
            "1",
            "-f",
            "null",
            "-",
        ],
    }
    for _ in ctx.repeats():
        for row, command in commands.items():
            with contextlib.ExitStack() as stack:
                upstream = ctx.endpoint
                if profile is not None:
                    upstream = stack.enter_context(wan_link(ctx, {}, profile))
                proxy = stack.enter_context(counting_proxy(upstream))
                m = stack.enter_context(peer.fresh(proxy.url))
                m.lookup(VIDEO_KEY)
                argv = command(str(m.path / VIDEO_KEY))
                drop_caches()
                # The tool's libraries back in RAM: read from disk they cost 0.2-0.6 s,
                # a noise larger than what the peers differ by.
                run([argv[0], "-version"], timeout=60)
                proxy.reset()
                cpu0 = m.cpu()
                start = time.monotonic()
                run(argv, timeout=180)
                seconds = time.monotonic() - start
                cpu = m.cpu_since(cpu0)
                # Read-ahead may go on after the command: count it too.
                time.sleep(1.0)
                records = proxy.matching("GET", VIDEO_KEY, bucket=BUCKET)
                ctx.results.add(
                    row,
                    Sample(
                        seconds=seconds,
                        peak_rss=m.hwm(),
                        cpu=cpu,
                        server_bytes=sum(r.body_bytes for r in records),
                        gets=len(records),
                    ),
                )


def parallel_ranged_gets(urls: list[str], size: int, total: int) -> Sample:
    """``len(urls)`` curl processes at once, each GETting its own range of a ``size``-byte
    object as often as it takes for ``total`` bytes in all (one connection each, kept
    alive); the wall time of the lot. ``urls`` are presigned GETs of the object."""
    if shutil.which("curl") is None:
        raise BenchError("curl not installed (apt-get install curl)")
    streams = len(urls)
    passes = max(1, -(-total // size))
    step = -(-size // streams)
    procs: list[subprocess.Popen[str]] = []
    expected = 0
    try:
        start = time.monotonic()
        for i, url in enumerate(urls):
            first, last = i * step, min(size, (i + 1) * step) - 1
            if first > last:
                continue
            expected += (last - first + 1) * passes
            cmd = ["curl", "-sS", "--fail", "-r", f"{first}-{last}", "-w", "%{size_download}\\n"]
            for _ in range(passes):
                cmd += [url, "-o", "/dev/null"]
            procs.append(
                subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        got = 0
        deadline = start + timeout_for(expected)
        for proc in procs:
            try:
                out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise BenchError("parallel curl GETs timed out") from None
            if proc.returncode != 0:
                raise BenchError(f"curl exited {proc.returncode}: {one_line(err)}")
            got += sum(int(v) for v in out.split())
        seconds = time.monotonic() - start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    if got != expected:
        raise BenchError(f"parallel GETs got {got} bytes, expected {expected}")
    return Sample(seconds=seconds, nbytes=got)


@contextlib.contextmanager
def wan_link(ctx: Context, stats: dict[str, int], profile: LinkProfile | None) -> Iterator[str]:
    """The link simulator in front of the server (``profile`` None: no latency, no cap);
    ``stats`` gets its counters when it stops, also on Ctrl-C."""
    from tests.benchmark.link import LinkError, link

    latency, bandwidth = (profile.latency, profile.bandwidth) if profile else (0.0, None)
    try:
        with link(
            ctx.endpoint,
            latency=latency,
            bandwidth=bandwidth,
            workers=ctx.link_workers,
            stats=stats,
        ) as url:
            yield url
    except LinkError as e:
        raise BenchError(str(e)) from None


def wan_copy(ctx: Context, peer: Peer[Reader], row: str, profile: LinkProfile) -> None:
    """A cold read of the WAN object through the link simulator; the simulator counts the
    bytes the server sent (HTTP headers included)."""
    for _ in ctx.repeats():
        stats: dict[str, int] = {}
        with peer.cache() as cache:
            with (
                wan_link(ctx, stats, profile) as url,
                peer.session(cache, url) as reader,
            ):
                sample = cold_copy(reader, WAN_KEY, ctx.workload.wan_size)
            sample.server_bytes = stats.get("down_bytes")
            ctx.results.add(row, sample)


def link_ceiling(ctx: Context, link_row: str, direct_row: str) -> None:
    """The link simulator's own ceiling: ``LINK_STREAMS`` parallel ranged GETs of the WAN
    object (curl, presigned URLs) through it with no latency and no cap, and the same
    straight to the server; at least 1 GiB per measurement."""
    import boto3
    from botocore.config import Config

    size = ctx.workload.wan_size
    total = max(size, 1024 * MiB)

    def urls(endpoint: str) -> list[str]:
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=ctx.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=ctx.env["AWS_SECRET_ACCESS_KEY"],
            region_name=ctx.env.get("AWS_DEFAULT_REGION", "us-east-1"),
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )
        params = {"Bucket": BUCKET, "Key": WAN_KEY}
        return [
            client.generate_presigned_url("get_object", Params=params, ExpiresIn=3600)
            for _ in range(LINK_STREAMS)
        ]

    for _ in ctx.repeats():
        stats: dict[str, int] = {}
        with wan_link(ctx, stats, None) as url:
            sample = parallel_ranged_gets(urls(url), size, total)
        cpu = stats.get(CPU_COUNTER)
        if cpu is not None:
            sample.cpu = cpu / 1000
            sample.extra["cpu_s_per_gb"] = sample.cpu / (sample.nbytes / 1e9)
        sample.server_bytes = stats.get("down_bytes")
        ctx.results.add(link_row, sample)
        ctx.results.add(direct_row, parallel_ranged_gets(urls(ctx.endpoint), size, total))
