"""The Prometheus endpoint (``--metrics-addr``): a collector that reads :class:`Stats`.

A custom collector rather than prometheus_client's own counters keeps the core free of the
dependency: the counters are plain ints that tests, xattrs and the demo read as well.
"""

import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import CollectorRegistry

from rangefs.config import split_host_port
from rangefs.errors import UserError
from rangefs.stats import LATENCY_BUCKETS, Stats

log = logging.getLogger(__name__)


class StatsCollector:
    def __init__(self, stats: Stats, cache_bytes: Callable[[], int]) -> None:
        self.stats = stats
        self.cache_bytes = cache_bytes

    def collect(self) -> Iterator[Any]:
        s = self.stats
        for name, doc, value in (
            ("rangefs_gets", "Range GETs that completed", s.gets),
            ("rangefs_fetched_bytes", "Bytes received from S3", s.bytes_fetched),
            ("rangefs_cache_fill_hits", "Reads served from chunks being filled", s.fill_hits),
            ("rangefs_cache_range_hits", "Reads served from chunks complete on disk", s.range_hits),
            ("rangefs_cache_misses", "Reads that had to ask S3 and wait", s.misses),
            ("rangefs_chunks_stored", "Chunks written to the disk cache", s.chunks_stored),
            ("rangefs_cache_store_failures", "Chunks that could not be cached", s.store_failures),
            ("rangefs_bad_chunks", "Cached chunks dropped by verification", s.bad_chunks),
            ("rangefs_read_errors", "Range GETs that failed (after retries)", s.read_errors),
            ("rangefs_read_bytes", "Bytes returned to readers", s.bytes_read),
            ("rangefs_proofs_passed", "Versions whose bytes passed S3's proof", s.proofs_passed),
            ("rangefs_proofs_failed", "Proof mismatches (each refetched once)", s.proofs_failed),
            (
                "rangefs_proof_read_backs",
                "Chunks read back from the cache to be hashed, not hashed as they arrived",
                s.proof_read_backs,
            ),
            (
                "rangefs_went_offline",
                "Times S3 could not be reached and the mount went offline",
                s.went_offline,
            ),
            (
                "rangefs_offline_refused",
                "S3 requests failed at once while offline",
                s.offline_refused,
            ),
            (
                "rangefs_walk_files_ahead",
                "Files fetched ahead of a reader walking a directory",
                s.walk_files_ahead,
            ),
            (
                "rangefs_walk_files_opened",
                "Files fetched ahead of a walker that it then opened",
                s.walk_files_opened,
            ),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        retries = CounterMetricFamily("rangefs_retries", "Retried S3 requests", labels=["cause"])
        for cause, count in sorted(s.retries.items()):
            retries.add_metric([cause], count)
        yield retries
        errors = CounterMetricFamily(
            "rangefs_errors", "S3 requests failed after retries", labels=["cause"]
        )
        for cause, count in sorted(s.errors.items()):
            errors.add_metric([cause], count)
        yield errors
        yield GaugeMetricFamily(
            "rangefs_online", "1 while S3 answers, 0 while the mount is offline", value=s.online
        )
        yield GaugeMetricFamily(
            "rangefs_in_flight_bytes", "Bytes of Range GETs in flight", value=s.bytes_in_flight
        )
        yield GaugeMetricFamily(
            "rangefs_cache_used_bytes", "Bytes used by the disk cache", value=self.cache_bytes()
        )
        cumulative, buckets = 0, []
        for bound, count in zip(
            [*map(str, LATENCY_BUCKETS), "+Inf"], s.read_latency_counts, strict=True
        ):
            cumulative += count
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily(
            "rangefs_read_seconds",
            "Latency of FUSE reads",
            buckets=buckets,
            sum_value=s.read_latency_sum,
        )


def serve_metrics(addr: str, stats: Stats, cache_bytes: Callable[[], int]) -> Callable[[], None]:
    """Starts the endpoint in a daemon thread and returns what stops it; a busy or bad
    address is a user error."""
    host, port = split_host_port(addr)  # checked as the option was read
    registry = CollectorRegistry()
    registry.register(StatsCollector(stats, cache_bytes))
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise UserError(f"--metrics-addr {addr}: {exc.strerror or exc}") from None
    log.info("metrics on http://%s:%d/metrics", host, port)

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return stop
