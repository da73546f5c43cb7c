"""The frozen mount configuration, and the parsing of sizes, sources and addresses.

The options that fill these records, with their defaults, units and limits, are declared once
in :mod:`rangefs.options`; build a :class:`Config` with ``options.make_config``.
"""

import os
import re
from dataclasses import dataclass, fields
from pathlib import Path

from rangefs.errors import UsageError

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": KiB, "m": MiB, "g": GiB, "t": TiB}
_BUCKET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]$")


def parse_size(text: str) -> int:
    """``8M``, ``512k``, ``20G``, ``1.5G``, ``4096`` -> bytes (binary units)."""
    m = _SIZE_RE.match(str(text))
    if not m:
        raise ValueError(f"not a size: {text!r} (use e.g. 8M, 512K, 20G)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def compact_size(n: int) -> str:
    """The inverse of :func:`parse_size` in the shortest exact form: ``8388608`` -> ``8M``."""
    for letter in "tgmk":
        unit = _UNITS[letter]
        if n >= unit and n % unit == 0:
            return f"{n // unit}{letter.upper()}"
    return str(n)


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


def split_host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` (127.0.0.1) or ``[::1]:PORT`` -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not HOST:PORT: {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return (Path(base) / "rangefs").absolute()


@dataclass(frozen=True, slots=True)
class S3Settings:
    """How to reach S3 and how hard to try: shared by the mount and ``prefetch s3://``."""

    endpoint_url: str | None
    region: str | None
    profile: str | None
    addressing_style: str
    connect_timeout: float
    read_timeout: float
    retries: int
    retry_seconds: float


@dataclass(frozen=True)
class Config:
    """What one mount runs with; every field but the first three is an option's value."""

    bucket: str
    prefix: str
    mountpoint: Path
    endpoint_url: str | None
    region: str | None
    profile: str | None
    cache_dir: Path
    cache_size: int
    chunk_size: int
    metadata_ttl: float
    uid: int
    gid: int
    umask: int
    allow_other: bool
    shared_cache: bool
    log_level: str
    log_file: Path | None
    pid_file: Path | None
    foreground: bool
    memory_limit: int
    max_readahead: int
    parallel: int
    connect_timeout: float
    read_timeout: float
    retries: int
    retry_seconds: float
    mount_timeout: float
    metrics_addr: str | None
    addressing_style: str
    kernel_readahead_kb: int

    @property
    def s3(self) -> S3Settings:
        return S3Settings(**{f.name: getattr(self, f.name) for f in fields(S3Settings)})

    @property
    def source(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def file_mode(self) -> int:
        return 0o444 & ~self.umask

    @property
    def dir_mode(self) -> int:
        return 0o555 & ~self.umask
