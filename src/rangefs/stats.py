"""Plain counters of what the mount did; read by the metrics endpoint, xattrs and the demo.

Only ever incremented from the trio thread or under the GIL with ``+=`` on ints, which is
good enough for monitoring figures.
"""

import bisect
from collections import Counter
from dataclasses import dataclass, field

LATENCY_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)


@dataclass
class Stats:
    gets: int = 0
    bytes_fetched: int = 0
    fill_hits: int = 0  # reads whose bytes had landed in a chunk being filled
    range_hits: int = 0
    misses: int = 0
    chunks_stored: int = 0
    store_failures: int = 0
    bad_chunks: int = 0
    read_errors: int = 0
    reads: int = 0
    lookups: int = 0
    bytes_read: int = 0
    bytes_in_flight: int = 0
    proofs_passed: int = 0  # object versions whose bytes matched S3's proof
    proofs_failed: int = 0  # mismatches (each is followed by one refetch of the chunks)
    proof_read_backs: int = 0  # chunks read back from the store to be hashed (not on arrival)
    online: int = 1  # 0 while S3 cannot be reached (rangefs.remote.reachability); retries stop then
    went_offline: int = 0  # times the mount went offline
    offline_refused: int = 0  # store calls failed at once while offline
    walk_files_ahead: int = 0  # files asked for ahead of a reader walking a directory
    walk_files_opened: int = 0  # of those, the ones the reader then opened
    retries: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    read_latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    read_latency_sum: float = 0.0

    def observe_read(self, seconds: float) -> None:
        """Counts one FUSE read in its latency bucket (the last bucket is +Inf)."""
        self.read_latency_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.read_latency_sum += seconds

    def as_dict(self) -> dict[str, object]:
        return {
            "gets": self.gets,
            "bytes_fetched": self.bytes_fetched,
            "fill_hits": self.fill_hits,
            "range_hits": self.range_hits,
            "misses": self.misses,
            "chunks_stored": self.chunks_stored,
            "store_failures": self.store_failures,
            "bad_chunks": self.bad_chunks,
            "read_errors": self.read_errors,
            "reads": self.reads,
            "lookups": self.lookups,
            "bytes_read": self.bytes_read,
            "proofs_passed": self.proofs_passed,
            "proofs_failed": self.proofs_failed,
            "proof_read_backs": self.proof_read_backs,
            "online": self.online,
            "went_offline": self.went_offline,
            "offline_refused": self.offline_refused,
            "walk_files_ahead": self.walk_files_ahead,
            "walk_files_opened": self.walk_files_opened,
            "retries": dict(self.retries),
            "errors": dict(self.errors),
        }
