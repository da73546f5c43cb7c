"""Object content that cannot verify by accident.

Every 8-byte word of a pattern object is a hash of its word index and a seed,
so a read served from the wrong offset, the wrong chunk, a stale cache entry
of another object (different seed) or a zero-filled hole never compares
equal. Data is generated on the fly, which lets tests use multi-GiB objects
without keeping them in memory or on local disk.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
from typing import Any

import numpy as np

__all__ = [
    "MULTIPART_CHUNK",
    "PatternFile",
    "pattern_bytes",
    "pattern_sha256",
    "upload_pattern",
]

MULTIPART_CHUNK = 16 * 1024 * 1024
_GEN_WORDS = 1 << 21  # 16 MiB of words per numpy pass bounds temporary memory.
_MUL = np.uint64(0x9E3779B97F4A7C15)
_SEED_MUL = 0xD1B54A32D192ED03
_MASK64 = (1 << 64) - 1


def _words(first: int, count: int, seed: int, out: np.ndarray) -> None:
    """Fill ``out[:count]`` with words ``first .. first+count-1``.

    The xor-shift after the multiply spreads the high bits into the low bytes,
    so neighbouring words differ in every byte and seeds do not merely offset
    each other.
    """
    seed_mix = np.uint64((seed * _SEED_MUL + 0x632BE59BD9B4E019) & _MASK64)
    view = out[:count]
    view[:] = np.arange(first, first + count, dtype=np.uint64)
    view ^= seed_mix
    view *= _MUL
    view ^= view >> np.uint64(29)
    view *= _MUL
    view ^= view >> np.uint64(32)


def pattern_bytes(offset: int, length: int, seed: int = 0) -> bytes:
    """The ``length`` bytes at absolute ``offset`` of pattern object ``seed``."""
    if offset < 0 or length < 0:
        raise ValueError(f"negative offset/length: {offset}, {length}")
    if length == 0:
        return b""
    first_word = offset // 8
    skip = offset - first_word * 8
    nwords = (skip + length + 7) // 8
    buf = np.empty(nwords, dtype="<u8")
    for start in range(0, nwords, _GEN_WORDS):
        count = min(_GEN_WORDS, nwords - start)
        _words(first_word + start, count, seed, buf[start : start + count])
    return buf.view(np.uint8)[skip : skip + length].tobytes()


@functools.lru_cache(maxsize=256)
def pattern_sha256(size: int, seed: int = 0) -> str:
    """SHA-256 hex of a whole pattern object; cached because big objects are
    hashed by several tests."""
    digest = hashlib.sha256()
    for offset in range(0, size, MULTIPART_CHUNK):
        digest.update(pattern_bytes(offset, min(MULTIPART_CHUNK, size - offset), seed))
    return digest.hexdigest()


class PatternFile(io.RawIOBase):
    """A read-only, seekable file whose content is the pattern object.

    Hand it to ``upload_fileobj`` to upload GiB-sized objects without a local
    copy.
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        super().__init__()
        if size < 0:
            raise ValueError(f"negative size {size}")
        self.size = size
        self.seed = seed
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            pos = offset
        elif whence == os.SEEK_CUR:
            pos = self._pos + offset
        elif whence == os.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = max(0, min(len(view), self.size - self._pos))
        if n:
            view[:n] = pattern_bytes(self._pos, n, self.seed)
            self._pos += n
        return n

    def readall(self) -> bytes:
        data = pattern_bytes(self._pos, max(0, self.size - self._pos), self.seed)
        self._pos += len(data)
        return data


def upload_pattern(client: Any, bucket: str, key: str, size: int, seed: int = 0) -> str:
    """Upload pattern object ``seed`` of ``size`` bytes; return its SHA-256 hex.

    Objects above one part go through multipart upload with 16 MiB parts, like
    real large objects, so their ETags are of the ``md5-N`` form.
    """
    if size <= MULTIPART_CHUNK:
        client.put_object(Bucket=bucket, Key=key, Body=pattern_bytes(0, size, seed))
    else:
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(
            multipart_threshold=MULTIPART_CHUNK,
            multipart_chunksize=MULTIPART_CHUNK,
            max_concurrency=4,
            use_threads=True,
        )
        with PatternFile(size, seed) as f:
            client.upload_fileobj(f, bucket, key, Config=config)
    return pattern_sha256(size, seed)
