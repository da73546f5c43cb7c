"""Chunk arithmetic: spans cover the read exactly, never overlap, the last chunk is short."""

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rangefs import chunks


@settings(deadline=None)
@given(
    size=st.integers(0, 10**7),
    chunk_size=st.integers(64, 10**6),
    offset=st.integers(0, 10**7),
    length=st.integers(0, 10**6),
)
def test_pieces_cover_exactly_the_clipped_read(size, chunk_size, offset, length):
    parts = chunks.pieces(offset, length, size, chunk_size)
    covered = [(p.index * chunk_size + p.start, p.index * chunk_size + p.end) for p in parts]
    want_end = min(offset + length, size)
    if offset >= want_end:
        assert parts == []
        return
    assert covered[0][0] == offset
    assert covered[-1][1] == want_end
    for (_, end), (start, _) in itertools.pairwise(covered):
        assert end == start
    for p in parts:
        assert 0 <= p.start < p.end <= chunks.chunk_length(p.index, size, chunk_size)
    assert len({p.index for p in parts}) == len(parts)


@settings(deadline=None)
@given(size=st.integers(1, 10**9), chunk_size=st.integers(1, 10**8))
def test_chunks_tile_the_object_and_only_the_last_is_short(size, chunk_size):
    count = chunks.chunk_count(size, chunk_size)
    first = chunks.chunk_bounds(0, size, chunk_size)
    last = chunks.chunk_bounds(count - 1, size, chunk_size)
    assert first[0] == 0 and last[1] == size
    assert 0 < last[1] - last[0] <= chunk_size
    if count > 1:
        assert chunks.chunk_length(count - 2, size, chunk_size) == chunk_size


def test_range_header_matches_the_s3_form():
    c = 8 * 1024 * 1024
    size = 3 * c - 5
    assert chunks.range_header(0, size, c) == f"bytes=0-{c - 1}"
    assert chunks.range_header(1, size, c) == f"bytes={c}-{2 * c - 1}"
    assert chunks.range_header(2, size, c) == f"bytes={2 * c}-{size - 1}"


def test_chunk_outside_object_is_refused():
    with pytest.raises(ValueError):
        chunks.chunk_bounds(1, 10, 10)
    with pytest.raises(ValueError):
        chunks.chunk_bounds(0, 0, 10)
