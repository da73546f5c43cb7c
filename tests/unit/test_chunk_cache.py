"""The chunk store on a real diskcache directory: keys, checksums, damage, ETag binding."""

import os
from pathlib import Path

import pytest

from rangefs.chunk_cache import ChunkCache
from rangefs.store import ObjectVersion

V1 = ObjectVersion("bucket", "dir/key", '"etag1"', 3_000_000)
V2 = ObjectVersion("bucket", "dir/key", '"etag2"', 3_000_000)
CHUNK = 1_048_576


@pytest.fixture
def cache(tmp_path):
    c = ChunkCache(tmp_path / "cache", 100 * CHUNK)
    yield c
    c.close()


def data(n, seed=0):
    return bytes((i * 7 + seed) % 251 for i in range(n))


def value_files(directory: Path):
    return [p for p in directory.rglob("*.val")]


def test_roundtrip_and_key_parts(cache):
    chunk = data(CHUNK)
    assert cache.get(V1.chunk(CHUNK, 0), CHUNK) is None
    assert cache.put(V1.chunk(CHUNK, 0), chunk)
    assert cache.get(V1.chunk(CHUNK, 0), CHUNK) == chunk
    assert cache.get(V2.chunk(CHUNK, 0), CHUNK) is None  # another ETag
    assert cache.get(V1.chunk(CHUNK * 2, 0), CHUNK) is None  # another chunk size
    assert cache.get(V1.chunk(CHUNK, 1), CHUNK) is None  # another index


def test_wrong_length_is_a_miss_and_dropped(cache):
    cache.put(V1.chunk(CHUNK, 0), data(CHUNK))
    assert cache.get(V1.chunk(CHUNK, 0), CHUNK - 1) is None
    assert not cache.contains(V1.chunk(CHUNK, 0))


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_damaged_file_is_a_miss_never_wrong_bytes(cache, tmp_path, damage):
    cache.put(V1.chunk(CHUNK, 0), data(CHUNK))
    (path,) = value_files(tmp_path / "cache")
    if damage == "truncate":
        os.truncate(path, CHUNK // 2)
    elif damage == "flip":
        raw = bytearray(path.read_bytes())
        raw[CHUNK // 3] ^= 0x01
        path.write_bytes(bytes(raw))
    else:
        path.unlink()
    assert cache.get(V1.chunk(CHUNK, 0), CHUNK) is None
    assert not cache.contains(V1.chunk(CHUNK, 0))
    assert cache.put(V1.chunk(CHUNK, 0), data(CHUNK))
    assert cache.get(V1.chunk(CHUNK, 0), CHUNK) == data(CHUNK)


def test_new_etag_drops_old_version(cache):
    cache.bind_etag(V1.id)
    cache.put(V1.chunk(CHUNK, 0), data(CHUNK))
    cache.put(V1.chunk(CHUNK, 1), data(CHUNK, 1))
    cache.bind_etag(V1.id)
    assert cache.contains(V1.chunk(CHUNK, 1))
    cache.bind_etag(V2.id)
    assert not cache.contains(V1.chunk(CHUNK, 0)) and not cache.contains(V1.chunk(CHUNK, 1))


def test_verify_reports_and_drops_bad_chunks(cache, tmp_path):
    for i in range(3):
        cache.put(V1.chunk(CHUNK, i), data(CHUNK, i))
    victim = sorted(value_files(tmp_path / "cache"))[1]
    os.truncate(victim, 100)
    report = cache.verify()
    assert (report.checked, report.bad) == (3, 1)
    assert sum(cache.cached_map(V1.id, CHUNK, 3)) == 2
    assert cache.summary().chunks == 2


def test_size_limit_evicts_least_recently_used(tmp_path):
    cache = ChunkCache(tmp_path / "small", 4 * CHUNK)
    try:
        for i in range(12):
            cache.put(V1.chunk(CHUNK, i), data(CHUNK, i))
        assert cache.volume() <= 5 * CHUNK
        assert cache.contains(V1.chunk(CHUNK, 11))
        assert not cache.contains(V1.chunk(CHUNK, 0))
    finally:
        cache.close()


@pytest.mark.parametrize(
    ("start", "end"), [(0, 1), (0, CHUNK), (65535, 65537), (100_000, 300_000), (CHUNK - 3, CHUNK)]
)
def test_read_range_returns_exactly_the_slice(cache, start, end):
    chunk = data(CHUNK, 4)
    cache.put(V1.chunk(CHUNK, 2), chunk)
    assert cache.read_range(V1.chunk(CHUNK, 2), CHUNK, start, end) == chunk[start:end]


def test_read_range_of_a_short_last_chunk(cache):
    chunk = data(70_001, 9)
    cache.put(V1.chunk(CHUNK, 5), chunk)
    assert cache.read_range(V1.chunk(CHUNK, 5), 70_001, 65_000, 70_001) == chunk[65_000:]
    assert cache.read_range(V1.chunk(CHUNK, 5), CHUNK, 0, 10) is None  # wrong expected length


def test_read_range_detects_a_flipped_byte_in_the_blocks_it_reads(cache, tmp_path):
    cache.put(V1.chunk(CHUNK, 0), data(CHUNK))
    (path,) = value_files(tmp_path / "cache")
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF  # the last byte of the last block
    path.write_bytes(bytes(raw))
    assert cache.read_range(V1.chunk(CHUNK, 0), CHUNK, 0, 4096) == data(CHUNK)[:4096]  # other block
    assert cache.read_range(V1.chunk(CHUNK, 0), CHUNK, CHUNK - 10, CHUNK) is None
    assert not cache.contains(V1.chunk(CHUNK, 0))


def test_read_range_of_a_truncated_file_is_a_miss(cache, tmp_path):
    cache.put(V1.chunk(CHUNK, 0), data(CHUNK))
    (path,) = value_files(tmp_path / "cache")
    os.truncate(path, CHUNK // 2)
    assert cache.read_range(V1.chunk(CHUNK, 0), CHUNK, CHUNK - 100, CHUNK) is None
    assert not cache.contains(V1.chunk(CHUNK, 0))
