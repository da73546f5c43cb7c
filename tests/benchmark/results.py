"""Measured runs and the report's rows: what scenarios fill in and the report reads."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from tests.benchmark.common import MiB, log


@dataclass
class Sample:
    """One measured run."""

    seconds: float
    nbytes: int = 0
    peak_rss: int | None = None
    cpu: float | None = None
    server_bytes: int | None = None
    gets: int | None = None
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def mbps(self) -> float | None:
        if self.nbytes and self.seconds > 0:
            return self.nbytes / 1e6 / self.seconds
        return None


@dataclass
class Row:
    """One line of the results table: the samples of one tool in one scenario."""

    key: str
    scenario: str
    tool: str
    variant: str = ""
    peer: str | None = None
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    # From a separate run through the counting proxy (throughput runs go direct).
    server_bytes: int | None = None
    gets: int | None = None
    chart: bool = True

    @property
    def label(self) -> str:
        return f"{self.tool} ({self.variant})" if self.variant else self.tool

    def _median(self, values: list[float]) -> float | None:
        return statistics.median(values) if values else None

    @property
    def mbps(self) -> float | None:
        return self._median([s.mbps for s in self.samples if s.mbps is not None])

    @property
    def seconds(self) -> float | None:
        return self._median([s.seconds for s in self.samples])

    @property
    def cpu(self) -> float | None:
        return self._median([s.cpu for s in self.samples if s.cpu is not None])

    @property
    def peak_rss(self) -> int | None:
        values = [s.peak_rss for s in self.samples if s.peak_rss is not None]
        return max(values) if values else None

    def extra(self, name: str) -> float | None:
        return self._median([s.extra[name] for s in self.samples if name in s.extra])

    @property
    def server(self) -> tuple[int | None, int | None]:
        """(bytes, GETs) the server sent: per-run values if the runs were proxied."""
        nbytes = [s.server_bytes for s in self.samples if s.server_bytes is not None]
        gets = [s.gets for s in self.samples if s.gets is not None]
        if nbytes:
            return int(statistics.median(nbytes)), (int(statistics.median(gets)) if gets else None)
        return self.server_bytes, self.gets


class Results:
    """The rows in report order; a row's error is kept only while it has no sample,
    so one failed repeat does not hide the runs that succeeded."""

    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}

    def declare(
        self, key: str, scenario: str, tool: str, variant: str = "", peer: str | None = None
    ) -> None:
        self.rows[key] = Row(key, scenario, tool, variant, peer)

    def add(self, key: str, sample: Sample) -> None:
        self.rows[key].samples.append(sample)
        row = self.rows[key]
        rate = f"{sample.mbps:8.0f} MB/s" if sample.mbps else ""
        rss = f" rss {sample.peak_rss / MiB:.0f} MiB" if sample.peak_rss else ""
        srv = f" server {sample.server_bytes / MiB:.1f} MiB" if sample.server_bytes else ""
        log(f"    {row.label:<30} {sample.seconds:7.2f} s {rate}{rss}{srv}")

    def fail(self, key: str, message: str) -> None:
        row = self.rows[key]
        if not row.samples and row.error is None:
            row.error = message

    def note(self, key: str, text: str) -> None:
        if text not in self.rows[key].notes:
            self.rows[key].notes.append(text)
