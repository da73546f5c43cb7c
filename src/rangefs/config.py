"""The frozen mount configuration, and the parsing of sizes, sources and addresses.

The options that fill these records, with their defaults, units and limits, are declared once
in :mod:`rangefs.options`; build a :class:`Config` with ``options.make_config``.
"""

import base64
import os
import re
import time
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

from rangefs.errors import UsageError

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": KiB, "m": MiB, "g": GiB, "t": TiB}
_BUCKET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+$")
SSE_C_KEY_BYTES = 32  # SSE-C is AES-256: the key is 32 bytes
SSE_C_KEY_BASE64 = 44  # characters of those 32 bytes in base64


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


def parse_duration(text: str) -> float:
    """``1h30m`` -> 5400.0 seconds; ValueError if it is not a duration."""
    if not _DURATION.match(text):
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART.findall(text))


def parse_timestamp(text: str, now: float | None = None) -> float:
    """An RFC 3339 time or a duration back from ``now`` (default: the clock) -> epoch seconds.

    A time without a zone offset is refused rather than guessed (local time or UTC?).
    ValueError says what the text is not.
    """
    text = text.strip()
    if _DURATION.match(text):
        return (time.time() if now is None else now) - parse_duration(text)
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise ValueError(
            f"not an RFC 3339 time or a duration: {text!r} "
            "(use e.g. 2026-11-27T16:45:54Z or 2h, 30m, 1d)"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone (add Z or an offset such as +01:00)")
    return moment.timestamp()


def format_timestamp(when: float) -> str:
    """Epoch seconds as RFC 3339 in UTC; :func:`parse_timestamp` reads it back (to the
    microsecond)."""
    return datetime.fromtimestamp(when, UTC).isoformat().replace("+00:00", "Z")


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
class CustomerKey:
    """An SSE-C key and the file it came from. Its repr (hence any log line or message that
    formats a Config or S3Settings) shows the path, never the key."""

    path: Path
    key: bytes = field(repr=False)


def load_customer_key(text: str) -> CustomerKey:
    """The SSE-C key in file ``text``: exactly 32 raw bytes (``openssl rand 32``), or those
    32 bytes in base64 (``openssl rand -base64 32``; surrounding whitespace is ignored).

    A file that cannot be read or holds anything else is a ValueError that names the file and
    its length, never its content.
    """
    path = Path(text).absolute()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    if len(data) == SSE_C_KEY_BYTES:
        return CustomerKey(path, data)
    try:
        key = base64.b64decode(data.strip(), validate=True)
    except ValueError:  # binascii.Error
        key = b""
    if len(key) != SSE_C_KEY_BYTES:
        raise ValueError(
            f"{path} must hold a {SSE_C_KEY_BYTES}-byte key, raw or in base64 "
            f"({SSE_C_KEY_BASE64} characters); it holds {len(data)} bytes"
        )
    return CustomerKey(path, key)


@dataclass(frozen=True, slots=True)
class S3Settings:
    """How to reach S3 and how hard to try: shared by the mount and ``prefetch s3://``."""

    endpoint_url: str | None
    region: str | None
    profile: str | None
    addressing_style: str | None  # None: virtual-hosted for AWS, path-style for an endpoint
    connect_timeout: float
    read_timeout: float
    retries: int
    retry_seconds: float
    requester_pays: bool
    sse_c_key: CustomerKey | None


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
    proofs: str
    metadata_ttl: float
    negative_metadata_ttl: float | None
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
    addressing_style: str | None
    kernel_readahead_kb: int
    requester_pays: bool
    sse_c_key: CustomerKey | None
    version_at: float | None = None  # epoch seconds: the bucket as it was then (versioned)
    allow_offline: bool = False  # mount offline when S3 cannot be reached but the index can
    pin_limit: int | None = None  # bytes pinned at most; None: half of cache_size

    @property
    def pin_bytes(self) -> int:
        """The pin limit in force: ``--pin-limit``, else half of ``--cache-size``."""
        return self.cache_size // 2 if self.pin_limit is None else self.pin_limit

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
