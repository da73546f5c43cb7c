"""The byte layout of one cached chunk (pure: no I/O, property-testable).

A value is ``prefix + digests + data``: the prefix holds a magic, the block size and the data
length; then one xxh3-64 digest per 64 KiB block of data. diskcache does not fsync its value
files, so after a crash a stored chunk may be short or garbage: every reader checks the
length and the digests of the blocks it reads, and a random 64 KiB read verifies one block,
not the whole chunk.
"""

import struct

import xxhash

MAGIC = b"RFC2"
BLOCK = 64 * 1024  # checksum granularity: a random read verifies only the blocks it touches
PREFIX = struct.Struct("<4sII")  # magic, block size, data length; then one digest per block
DIGEST = 8


def checksum(data: bytes | memoryview) -> bytes:
    return xxhash.xxh3_64_digest(data)


def block_count(length: int) -> int:
    return -(-length // BLOCK)


def header_size(length: int) -> int:
    return PREFIX.size + DIGEST * block_count(length)


def block_digests(data: bytes | memoryview) -> bytes:
    """The digests of ``data``'s blocks, in order (the last block may be short)."""
    view = memoryview(data)
    return b"".join(checksum(view[i : i + BLOCK]) for i in range(0, len(view), BLOCK))


def encode_header(data: bytes | memoryview) -> bytes:
    return PREFIX.pack(MAGIC, BLOCK, len(data)) + block_digests(data)


def empty_header(length: int) -> bytes:
    """The header of a chunk whose blocks have not landed yet: every digest slot is zero (a
    block is present once its slot holds the digest of its bytes)."""
    return PREFIX.pack(MAGIC, BLOCK, length) + bytes(DIGEST * block_count(length))


def digest_offset(block: int) -> int:
    """Where block ``block``'s digest sits in a value."""
    return PREFIX.size + DIGEST * block


def block_span(block: int, length: int) -> tuple[int, int]:
    """Bytes ``[start, end)`` of block ``block`` within a chunk of ``length`` bytes."""
    start = block * BLOCK
    return start, min(start + BLOCK, length)


class EncodedReader:
    """Header + data as a file-like object, so diskcache writes the chunk without a copy."""

    def __init__(self, data: bytes | memoryview) -> None:
        self._parts = [memoryview(encode_header(data)), memoryview(data)]

    def read(self, size: int = -1) -> bytes | memoryview:
        while self._parts and not len(self._parts[0]):
            self._parts.pop(0)
        if not self._parts:
            return b""
        head = self._parts[0]
        n = len(head) if size < 0 else min(size, len(head))
        self._parts[0] = head[n:]
        return head[:n]


def parse_prefix(raw: bytes | memoryview, expected_length: int | None) -> int | None:
    """The data length recorded in a value's prefix, or None if it is not one of ours."""
    if len(raw) < PREFIX.size:
        return None
    magic, block, length = PREFIX.unpack_from(raw)
    if magic != MAGIC or block != BLOCK:
        return None
    if expected_length is not None and length != expected_length:
        return None
    return int(length)


def blocks_ok(digests: bytes | memoryview, first_block: int, data: memoryview) -> bool:
    """Whether ``data``, starting at block ``first_block``, matches its recorded digests."""
    for n, offset in enumerate(range(0, len(data), BLOCK)):
        at = (first_block + n) * DIGEST
        if checksum(data[offset : offset + BLOCK]) != digests[at : at + DIGEST]:
            return False
    return True


def decode(value: object, expected_length: int | None) -> memoryview | None:
    """The chunk bytes (a view, not a copy) if ``value`` is intact, else None."""
    if not isinstance(value, bytes):
        return None
    length = parse_prefix(value, expected_length)
    if length is None or len(value) != header_size(length) + length:
        return None
    view = memoryview(value)
    data = view[header_size(length) :]
    if not blocks_ok(view[PREFIX.size : header_size(length)], 0, data):
        return None
    return data
