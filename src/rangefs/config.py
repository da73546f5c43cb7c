"""The frozen mount configuration: defaults with units, and the parsing of sizes and sources.

Tunables live here as named defaults with the reason for each value.
"""

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from rangefs.errors import UsageError

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

DEFAULT_CHUNK_SIZE = 8 * MiB  # one Range GET: large enough for throughput, small for seeks
MIN_CHUNK_SIZE = 64 * KiB  # below this the per-request overhead dominates
MAX_CHUNK_SIZE = 256 * MiB  # a chunk is held whole in memory while it is served
DEFAULT_CACHE_SIZE = 10 * GiB
DEFAULT_METADATA_TTL = 60.0  # seconds a listing or an object's size/ETag is trusted
DEFAULT_MEMORY_LIMIT = 56 * MiB  # chunks in flight + chunks held in memory, all files together
DEFAULT_MAX_READAHEAD = 40 * MiB  # largest read-ahead window (also capped by memory_limit)
DEFAULT_PARALLEL = 8  # Range GETs in flight at once (resumable download's "routines")
DEFAULT_KERNEL_READAHEAD_KB = 1024  # kernel read-ahead = FUSE request size (1 MiB, not 128 KiB)
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 30.0
DEFAULT_RETRIES = 6  # attempts per request before the read fails with EIO
DEFAULT_RETRY_SECONDS = 60.0  # total time one request may spend in retries
DEFAULT_MOUNT_TIMEOUT = 60.0  # how long `rangefs mount` waits for the daemon to be ready
LOG_LEVELS = ("debug", "info", "warning", "error")
ADDRESSING_STYLES = ("path", "virtual", "auto")  # path for most S3-compatible stores

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": KiB, "m": MiB, "g": GiB, "t": 1024 * GiB}
_BUCKET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]$")


def parse_size(text: str) -> int:
    """``8M``, ``512k``, ``20G``, ``1.5G``, ``4096`` -> bytes (binary units)."""
    m = _SIZE_RE.match(str(text))
    if not m:
        raise ValueError(f"not a size: {text!r} (use e.g. 8M, 512K, 20G)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def format_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def parse_source(text: str) -> tuple[str, str]:
    """``BUCKET``, ``BUCKET/PREFIX`` or ``s3://BUCKET[/PREFIX]`` -> (bucket, ``prefix/`` or '')."""
    rest = text[5:] if text.startswith("s3://") else text
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET_RE.match(bucket):
        raise UsageError(f"invalid bucket name in source {text!r}")
    prefix = prefix.strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise UsageError(f"invalid prefix in source {text!r}")
    return bucket, prefix + "/" if prefix else ""


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rangefs"


@dataclass(frozen=True, slots=True)
class S3Settings:
    """How to reach S3 and how hard to try: shared by the mount and ``prefetch s3://``."""

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    addressing_style: str = "path"
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    retries: int = DEFAULT_RETRIES
    retry_seconds: float = DEFAULT_RETRY_SECONDS


@dataclass(frozen=True)
class Config:
    bucket: str
    prefix: str
    mountpoint: Path
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    cache_dir: Path = field(default_factory=default_cache_dir)
    cache_size: int = DEFAULT_CACHE_SIZE
    chunk_size: int = DEFAULT_CHUNK_SIZE
    metadata_ttl: float = DEFAULT_METADATA_TTL
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)
    umask: int = 0o022
    allow_other: bool = False
    shared_cache: bool = False
    log_level: str = "info"
    log_file: Path | None = None
    pid_file: Path | None = None
    foreground: bool = False
    memory_limit: int = DEFAULT_MEMORY_LIMIT
    max_readahead: int = DEFAULT_MAX_READAHEAD
    parallel: int = DEFAULT_PARALLEL
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    retries: int = DEFAULT_RETRIES
    retry_seconds: float = DEFAULT_RETRY_SECONDS
    mount_timeout: float = DEFAULT_MOUNT_TIMEOUT
    metrics_addr: str | None = None
    addressing_style: str = "path"
    kernel_readahead_kb: int = DEFAULT_KERNEL_READAHEAD_KB

    def __post_init__(self) -> None:
        if not MIN_CHUNK_SIZE <= self.chunk_size <= MAX_CHUNK_SIZE:
            raise UsageError(
                f"--chunk-size must be between {format_size(MIN_CHUNK_SIZE)} and "
                f"{format_size(MAX_CHUNK_SIZE)}"
            )
        if self.cache_size < self.chunk_size:
            raise UsageError("--cache-size must hold at least one chunk")
        if self.metadata_ttl < 0:
            raise UsageError("--metadata-ttl must be >= 0")
        if self.log_level not in LOG_LEVELS:
            raise UsageError(f"--log-level must be one of {', '.join(LOG_LEVELS)}")
        if self.parallel < 1 or self.retries < 1:
            raise UsageError("--parallel and --retries must be >= 1")
        if min(self.connect_timeout, self.read_timeout) <= 0:
            raise UsageError("timeouts must be > 0")
        if self.memory_limit < 3 * self.chunk_size:
            raise UsageError("--memory-limit must hold at least three chunks")

    @property
    def s3(self) -> S3Settings:
        return S3Settings(
            endpoint_url=self.endpoint_url,
            region=self.region,
            profile=self.profile,
            addressing_style=self.addressing_style,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            retries=self.retries,
            retry_seconds=self.retry_seconds,
        )

    @property
    def source(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def file_mode(self) -> int:
        return 0o444 & ~self.umask

    @property
    def dir_mode(self) -> int:
        return 0o555 & ~self.umask
