"""The extended attributes a mount answers: names and encodings, both ends in one place.

The daemon (:mod:`rangefs.fs.filesystem`) encodes them; ``rangefs prefetch``, ``rangefs status``
and the demo read them from another process through the readers below. Formats (stable,
documented in docs/OPERATIONS.md, read by people with ``getfattr``):

* ``user.rangefs.uri``     ``s3://BUCKET/KEY`` (directories end in ``/``)
* ``user.rangefs.etag``    the ETag the file is read at
* ``user.rangefs.version`` the S3 versionId the file is read at (``--version-at`` mounts only)
* ``user.rangefs.cached``  ``CACHED_BYTES SIZE``
* ``user.rangefs.chunks``  ``CHUNK_SIZE MAP``, one character per chunk: ``#`` cached, ``.`` not
* ``user.rangefs.verified`` the proof S3 gives for the file's bytes and whether they passed
  it yet: ``etag-md5 verified``, ``etag-multipart-md5 pending (3 parts of 8388608 B)``, or
  ``none (unverified: S3 gave no checksum rangefs can use for this object: REASON)``
* ``user.rangefs.pinned``  ``yes`` if the file's key is pinned (``rangefs pin``), else ``no``
* ``user.rangefs.pins``    (root only) what is pinned, as JSON: ``files`` (keys pinned),
  ``bytes`` (their size), ``stored`` (bytes of their chunks cached), ``limit``
  (``--pin-limit``) and ``cache_dir`` (where ``rangefs pin`` records pins)
* ``user.rangefs.stats``   (root only) the daemon's counters as JSON
* ``user.rangefs.online``  (root only) ``online``, or ``offline`` while S3 cannot be reached
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rangefs.errors import NotOnMount

PREFIX = "user.rangefs."
URI = PREFIX + "uri"
ETAG = PREFIX + "etag"
CACHED = PREFIX + "cached"
CHUNKS = PREFIX + "chunks"
STATS = PREFIX + "stats"
VERSION = PREFIX + "version"
VERIFIED = PREFIX + "verified"
ONLINE = PREFIX + "online"
PINNED = PREFIX + "pinned"
PINS = PREFIX + "pins"

ROOT_NAMES = (URI, STATS, ONLINE, PINS)
DIR_NAMES = (URI,)
FILE_NAMES = (URI, ETAG, CACHED, CHUNKS, VERIFIED, PINNED)
VERSIONED_FILE_NAMES = (*FILE_NAMES, VERSION)
CACHED_MARK, MISSING_MARK = "#", "."
PROVEN, PENDING = "verified", "pending"
ONLINE_WORDS = {True: "online", False: "offline"}
PINNED_WORDS = {True: "yes", False: "no"}


@dataclass(frozen=True, slots=True)
class PinsInfo:
    """What a mount's root says is pinned, and where pins are recorded."""

    files: int
    bytes: int
    stored: int
    limit: int
    cache_dir: str


def encode_chunks(chunk_size: int, cached: list[bool]) -> bytes:
    return f"{chunk_size} {''.join(CACHED_MARK if c else MISSING_MARK for c in cached)}".encode()


def encode_cached(cached_bytes: int, size: int) -> bytes:
    return f"{cached_bytes} {size}".encode()


def encode_verified(kind: str, proven: bool, detail: str = "") -> bytes:
    """``KIND STATE [(DETAIL)]``; a file with no proof is ``none (DETAIL)``."""
    if kind == "none":
        return f"none ({detail})".encode()
    state = PROVEN if proven else PENDING
    return f"{kind} {state}{f' ({detail})' if detail else ''}".encode()


def encode_online(online: bool) -> bytes:
    return ONLINE_WORDS[online].encode()


def encode_pinned(pinned: bool) -> bytes:
    return PINNED_WORDS[pinned].encode()


def encode_pins(files: int, size: int, stored: int, limit: int, cache_dir: str) -> bytes:
    info = {"files": files, "bytes": size, "stored": stored, "limit": limit,
            "cache_dir": cache_dir}  # fmt: skip
    return json.dumps(info, sort_keys=True).encode()


def encode_stats(stats: dict[str, object]) -> bytes:
    return json.dumps(stats, sort_keys=True).encode()


def _get(path: Path | str, name: str) -> str:
    try:
        return os.getxattr(path, name).decode()
    except OSError as exc:
        raise NotOnMount(f"{path}: not a file on a rangefs mount ({exc.strerror})") from None


def read_uri(path: Path | str) -> str:
    return _get(path, URI)


def read_etag(path: Path | str) -> str:
    return _get(path, ETAG)


def read_version(path: Path | str) -> str:
    """The versionId a file on a ``--version-at`` mount is read at."""
    return _get(path, VERSION)


def read_chunks(path: Path | str) -> tuple[int, list[bool]]:
    """Chunk size and the cached-chunk map of a file on a rangefs mount."""
    size_text, _, marks = _get(path, CHUNKS).partition(" ")
    return int(size_text), [c == CACHED_MARK for c in marks]


def read_cached(path: Path | str) -> tuple[int, int]:
    """Cached bytes and size of a file on a rangefs mount."""
    cached, size = _get(path, CACHED).split()
    return int(cached), int(size)


def read_verified(path: Path | str) -> tuple[str, bool, str]:
    """The proof kind of a file on a rangefs mount, whether its bytes passed it, and the
    detail (for ``none``: why there is no proof)."""
    text = _get(path, VERIFIED)
    kind, _, rest = text.partition(" ")
    if kind == "none":
        return kind, False, rest.strip()[1:-1]
    state, _, detail = rest.partition(" ")
    return kind, state == PROVEN, detail.strip()[1:-1]


def read_online(mountpoint: Path | str) -> bool:
    """Whether the mount's daemon reaches S3 (False: offline, serving what it has)."""
    return _get(mountpoint, ONLINE) == ONLINE_WORDS[True]


def read_stats(mountpoint: Path | str) -> dict[str, Any]:
    """The daemon's counters, read from the mount's root."""
    return json.loads(_get(mountpoint, STATS))


def read_pinned(path: Path | str) -> bool:
    """Whether the key of a file on a rangefs mount is pinned."""
    return _get(path, PINNED) == PINNED_WORDS[True]


def read_pins(mountpoint: Path | str) -> PinsInfo:
    """What is pinned on a mount, read from its root."""
    info = json.loads(_get(mountpoint, PINS))
    return PinsInfo(int(info["files"]), int(info["bytes"]), int(info["stored"]),
                    int(info["limit"]), str(info["cache_dir"]))  # fmt: skip
