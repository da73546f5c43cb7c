"""Pure chunk arithmetic: which chunks cover a read, and the Range header of a chunk.

Chunk *k* of an object of ``size`` bytes with chunk size ``C`` covers bytes
``[k*C, min((k+1)*C, size))``; the last chunk is short. Everything here is pure so it can be
property-tested.
"""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Piece:
    """The part of one chunk that a read needs: ``chunk[start:end]``."""

    index: int
    start: int
    end: int


def chunk_count(size: int, chunk_size: int) -> int:
    return -(-size // chunk_size)


def chunk_bounds(index: int, size: int, chunk_size: int) -> tuple[int, int]:
    """First byte and one past the last byte of chunk ``index`` (clipped at EOF)."""
    if index < 0 or index >= chunk_count(size, chunk_size):
        raise ValueError(f"chunk {index} outside object of {size} bytes")
    start = index * chunk_size
    return start, min(start + chunk_size, size)


def chunk_length(index: int, size: int, chunk_size: int) -> int:
    start, end = chunk_bounds(index, size, chunk_size)
    return end - start


def byte_range(start: int, end: int) -> str:
    """The HTTP ``Range`` value of bytes ``[start, end)`` (HTTP's end is inclusive)."""
    return f"bytes={start}-{end - 1}"


def range_header(index: int, size: int, chunk_size: int) -> str:
    """The HTTP ``Range`` value for chunk ``index`` (clipped at EOF)."""
    return byte_range(*chunk_bounds(index, size, chunk_size))


def pieces(offset: int, length: int, size: int, chunk_size: int) -> list[Piece]:
    """The chunk slices that together hold ``[offset, offset+length)`` clipped at EOF, in order."""
    if offset < 0 or length < 0:
        raise ValueError("negative offset or length")
    end = min(offset + length, size)
    result: list[Piece] = []
    pos = offset
    while pos < end:
        index = pos // chunk_size
        chunk_start = index * chunk_size
        piece_end = min(end, chunk_start + chunk_size)
        result.append(Piece(index, pos - chunk_start, piece_end - chunk_start))
        pos = piece_end
    return result
