"""The chunk store on a real diskcache directory: keys, checksums, damage, ETag binding."""

import ctypes
import hashlib
import mmap
import os
import time
from pathlib import Path

import pytest

from rangefs.cache import proofs
from rangefs.cache.chunk_cache import ChunkCache, Pin
from rangefs.errors import UserError
from rangefs.keys import ChunkKey
from rangefs.remote.store import ObjectVersion

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


def test_a_read_from_the_page_cache_needs_no_thread_and_never_serves_a_damaged_block(
    cache, tmp_path
):
    key, chunk = V1.chunk(CHUNK, 0), data(CHUNK, 3)
    cache.put(key, chunk)
    assert cache.read_range_cached(key, CHUNK, 0, 10) is None  # not open yet: a thread opens it
    assert cache.read_range(key, CHUNK, 0, 10) == chunk[:10]
    assert cache.read_range_cached(key, CHUNK, 70_000, 200_000) == chunk[70_000:200_000]
    (path,) = value_files(tmp_path / "cache")
    with open(path, "r+b") as f:  # through the page cache, as a disk that mangled a write
        f.seek(-1, os.SEEK_END)
        flipped = f.read(1)[0] ^ 0xFF
        f.seek(-1, os.SEEK_END)
        f.write(bytes([flipped]))
    assert cache.read_range_cached(key, CHUNK, CHUNK - 10, CHUNK) is None  # left to the thread
    assert cache.contains(key)
    assert cache.read_range(key, CHUNK, CHUNK - 10, CHUNK) is None  # which drops the chunk
    assert not cache.contains(key)


def test_warm_opens_a_stored_chunk_for_reads_without_a_thread(cache):
    key, chunk = V1.chunk(CHUNK, 1), data(CHUNK, 5)
    cache.warm(key, CHUNK)  # absent: nothing
    cache.put(key, chunk)
    cache.warm(key, CHUNK)  # just written: its bytes are in the page cache already
    assert cache.read_range_cached(key, CHUNK, 0, CHUNK) == chunk


def resident_pages(path: Path) -> tuple[int, int]:
    """(pages of ``path`` in the page cache, pages in all), as mincore(2) tells."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]  # fmt: skip
    size = path.stat().st_size
    pages = -(-size // mmap.PAGESIZE)
    vec = (ctypes.c_ubyte * pages)()
    fd = os.open(path, os.O_RDONLY)
    try:
        address = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        assert address not in (None, ctypes.c_void_p(-1).value), ctypes.get_errno()
        try:
            assert libc.mincore(ctypes.c_void_p(address), ctypes.c_size_t(size), vec) == 0
        finally:
            libc.munmap(ctypes.c_void_p(address), ctypes.c_size_t(size))
    finally:
        os.close(fd)
    return sum(v & 1 for v in vec), pages


def test_warm_has_the_kernel_read_a_whole_chunk_in_from_disk(tmp_path):
    big = 8 * CHUNK
    version = ObjectVersion("bucket", "big", '"etag"', 2 * big)
    key, chunk = version.chunk(big, 0), os.urandom(big)
    cache = ChunkCache(tmp_path / "cache", 100 * CHUNK)
    assert cache.put(key, chunk)
    cache.close()
    (path,) = value_files(tmp_path / "cache")
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # as after a reboot: only on disk
    os.close(fd)
    if resident_pages(path)[0]:
        pytest.skip("this filesystem keeps the file in memory")
    cache = ChunkCache(tmp_path / "cache", 100 * CHUNK)
    try:
        cache.warm(key, big)
        deadline = time.monotonic() + 10
        while (held := resident_pages(path))[0] < held[1] and time.monotonic() < deadline:
            time.sleep(0.01)
        # Every page, the last one too (one WILLNEED for the chunk was cut at the kernel's
        # read-ahead size); read at once, nothing waits.
        assert held[0] == held[1]
        assert cache.read_range_cached(key, big, big - 100, big) == chunk[-100:]
    finally:
        cache.close()


def put_object(cache, body: bytes, etag: str, chunk: int = 64 * 1024) -> ObjectVersion:
    version = ObjectVersion("bucket", "proof/obj", etag, len(body))
    for i in range(0, len(body), chunk):
        cache.put(version.chunk(chunk, i // chunk), body[i : i + chunk])
    return version


def test_verify_rehashes_complete_versions_against_the_etag(cache):
    import hashlib

    body = os.urandom(3 * 64 * 1024 + 10)
    good = put_object(cache, body, f'"{hashlib.md5(body).hexdigest()}"')
    parts = b"".join(hashlib.md5(body[i : i + 65536]).digest() for i in range(0, len(body), 65536))
    multi = ObjectVersion(
        "bucket", "proof/multi", f'"{hashlib.md5(parts).hexdigest()}-4"', len(body)
    )
    for i in range(4):
        cache.put(multi.chunk(65536, i), body[i * 65536 : (i + 1) * 65536])
    report = cache.verify()
    assert (report.bad, report.proven, report.disproved) == (0, 2, [])
    assert cache.contains(good.chunk(65536, 3))


def test_verify_drops_bytes_that_were_damaged_before_they_were_stored(cache):
    """Consistent block digests, wrong bytes (a byte flipped on the wire, stored by 0.1)."""
    import hashlib

    body = os.urandom(2 * 64 * 1024 + 10)
    damaged = bytearray(body)
    damaged[70_000] ^= 1
    version = put_object(cache, bytes(damaged), f'"{hashlib.md5(body).hexdigest()}"')
    report = cache.verify()
    assert report.bad == 0 and report.proven == 0
    assert report.disproved == [version.id]
    assert not any(cache.contains(version.chunk(65536, i)) for i in range(3))


def test_verify_leaves_versions_it_cannot_size_or_prove(cache):
    exact = put_object(cache, os.urandom(2 * 65536), '"' + "0" * 32 + '"')  # last chunk full
    gap = ObjectVersion("bucket", "proof/gap", '"' + "1" * 32 + '"', 3 * 65536 + 5)
    cache.put(gap.chunk(65536, 0), os.urandom(65536))
    cache.put(gap.chunk(65536, 2), os.urandom(65536))
    report = cache.verify()
    assert (report.proven, report.disproved) == (0, [])
    assert cache.contains(exact.chunk(65536, 1)) and cache.contains(gap.chunk(65536, 2))


def test_verify_checks_what_the_proof_record_sizes(cache):
    """The proof record carries the object's size: a version whose last chunk is full is
    checked too, and so is one proven by a checksum (here a full-object CRC32C, which
    ``verify`` recombines from the chunks), damaged after it was proven."""
    import base64
    import hashlib

    from awscrt import checksums as crt

    from rangefs.cache import proofs
    from rangefs.remote.store import Checksum

    body = os.urandom(2 * 65536)  # the last chunk is full: the size cannot be told from it
    exact = put_object(cache, body, f'"{hashlib.md5(body).hexdigest()}"')
    cache.record_proof(exact.id, proofs.proof_for(exact.etag, len(body), 65536))
    crc = base64.b64encode(crt.crc32c(body).to_bytes(4, "big")).decode()
    checked = ObjectVersion("bucket", "proof/crc", '"opaque"', len(body))
    for i in range(2):
        cache.put(checked.chunk(65536, i), (body[:65536] + bytes(65536))[i * 65536 :][:65536])
    proof = proofs.checksum_proof(Checksum("crc32c", crc), len(body), 65536)
    cache.record_proof(checked.id, proof)
    assert cache.proof(checked.id) == proof
    report = cache.verify()
    assert (report.proven, report.disproved) == (1, [checked.id])
    assert cache.contains(exact.chunk(65536, 1)) and not cache.contains(checked.chunk(65536, 1))


SMALL = ObjectVersion("bucket", "dir/small", '"s1"', 5000)


def adopt(cache: ChunkCache, version: ObjectVersion, chunk: bytes) -> ChunkKey:
    """A chunk filled as GETs fill it, then moved into the store."""
    key = version.chunk(CHUNK, 0)
    file = cache.open_fill(key, len(chunk))
    assert file is not None
    file.write(0, memoryview(chunk))
    assert cache.adopt(key, file)
    file.close()
    return key


def test_a_small_chunk_just_stored_is_read_from_ram_until_it_is_dropped(cache):
    small = adopt(cache, SMALL, data(5000))
    assert cache.recent(small, 100, 200) == data(5000)[100:200]
    big = adopt(cache, V1, data(CHUNK))  # more than RECENT_CHUNK: read from disk only
    assert cache.recent(big, 0, 10) is None
    assert cache.read_range(big, CHUNK, 0, 10) == data(CHUNK)[:10]
    cache.discard(SMALL.id, CHUNK, 1)  # as after a failed proof
    assert cache.recent(small, 0, 10) is None
    assert cache.get(small, 5000) is None


def test_a_new_etag_drops_the_ram_copy_of_the_old_version(cache):
    small = adopt(cache, SMALL, data(5000))
    cache.bind_etag(SMALL.id)
    assert cache.recent(small, 0, 10) == data(5000)[:10]
    cache.bind_etag(ObjectVersion("bucket", "dir/small", '"s2"', 5000).id)
    assert cache.recent(small, 0, 10) is None


# -- pins ------------------------------------------------------------------------------------

OTHER = ObjectVersion("bucket", "other", '"etag3"', 3_000_000)


def test_pinned_chunks_are_never_culled_and_unpinned_ones_are_again(tmp_path):
    cache = ChunkCache(tmp_path / "small", 4 * CHUNK)
    try:
        cache.pin([Pin(V1.id, 2 * CHUNK)], limit=2 * CHUNK)
        for i in range(2):
            cache.put(V1.chunk(CHUNK, i), data(CHUNK, i))
        for i in range(12):  # three times the cache of other chunks, read after the pinned
            cache.put(OTHER.chunk(CHUNK, i), data(CHUNK, i))
        assert cache.cached_map(V1.id, CHUNK, 2) == [True, True]
        assert cache.volume() <= 6 * CHUNK  # the unpinned part still follows the limit
        assert cache.contains(OTHER.chunk(CHUNK, 11)) and not cache.contains(OTHER.chunk(CHUNK, 0))
        summary = cache.pin_summary()
        assert (summary.keys, summary.bytes) == (1, 2 * CHUNK) and summary.stored >= 2 * CHUNK

        assert cache.unpin([("bucket", "dir/key"), ("bucket", "never-pinned")]) == 1
        for i in range(12, 20):
            cache.put(OTHER.chunk(CHUNK, i), data(CHUNK, i))
        assert cache.cached_map(V1.id, CHUNK, 2) == [False, False]
    finally:
        cache.close()


def test_a_pin_over_the_limit_pins_nothing_and_says_why(cache):
    cache.pin([Pin(V1.id, 3 * CHUNK)], limit=4 * CHUNK)
    with pytest.raises(UserError) as raised:
        cache.pin([Pin(OTHER.id, 2 * CHUNK), Pin(V1.id, 3 * CHUNK)], limit=4 * CHUNK)
    message = str(raised.value)
    assert "\n" not in message and "would pin 5.0 MiB, over --pin-limit 4.0 MiB" in message
    assert "(3.0 MiB already pinned): nothing pinned" in message
    assert [p.obj for p in cache.pins()] == [V1.id]
    # Pinning again what is pinned costs nothing, even over a limit lowered since.
    assert cache.pin([Pin(V1.id, 3 * CHUNK)], limit=CHUNK).bytes == 3 * CHUNK


def test_a_pin_follows_the_key_and_keeps_the_old_version_until_the_new_is_whole(cache):
    cache.pin([Pin(V1.id, CHUNK)], limit=10 * CHUNK)
    cache.bind_etag(V1.id)
    cache.put(V1.chunk(CHUNK, 0), data(CHUNK))
    assert not cache.follow_pin(OTHER.id, CHUNK)  # not pinned: nothing recorded
    assert cache.follow_pin(V2.id, CHUNK)
    cache.bind_etag(V2.id)  # a new ETag does not drop a pinned key's old chunks
    assert cache.contains(V1.chunk(CHUNK, 0))
    assert [p.obj for p in cache.pinned(V1.id)] == [V2.id, V1.id]
    assert cache.pin_summary().keys == 1
    cache.put(V2.chunk(CHUNK, 0), data(CHUNK, 5))
    assert cache.keep_pinned(V2.id) == 1
    assert not cache.contains(V1.chunk(CHUNK, 0)) and cache.contains(V2.chunk(CHUNK, 0))
    assert [p.obj for p in cache.pinned(V1.id)] == [V2.id]
    # A version pinned after the one kept (another process saw a newer ETag) stays.
    v3 = ObjectVersion("bucket", "dir/key", '"etag3"', 3_000_000)
    assert cache.follow_pin(v3.id, CHUNK)
    assert cache.keep_pinned(V2.id) == 0
    assert [p.obj for p in cache.pinned(V1.id)] == [v3.id, V2.id]


def test_pins_survive_reopening_and_clear_drops_them(tmp_path):
    cache = ChunkCache(tmp_path / "c", 10 * CHUNK)
    cache.pin([Pin(V1.id, CHUNK)], limit=CHUNK)
    cache.close()
    cache = ChunkCache(tmp_path / "c")
    try:
        assert [p.obj for p in cache.pins()] == [V1.id]
        cache.put(V1.chunk(CHUNK, 0), data(CHUNK))
        assert cache.clear() == (1, 1)
        assert cache.pins() == [] and not cache.contains(V1.chunk(CHUNK, 0))
    finally:
        cache.close()


def test_the_ram_copy_goes_when_the_value_file_is_evicted(cache, tmp_path):
    small = adopt(cache, SMALL, data(5000))
    (path,) = value_files(tmp_path / "cache")
    path.unlink()  # as diskcache's cull does
    assert cache.recent(small, 0, 10) is None


def test_a_chunk_adopted_with_its_proof_and_etag_records_them_in_the_same_transaction(cache):
    """A small file fetched ahead of a walker: chunk, proof record and ETag in one commit
    (one transaction, not three), and an older version of the key dropped as bind_etag does."""
    cache.put(V1.chunk(CHUNK, 0), data(CHUNK))
    cache.bind_etag(V1.id)
    newer = ObjectVersion(V1.bucket, V1.key, f'"{hashlib.md5(data(5000)).hexdigest()}"', 5000)
    proof = proofs.proof_for(newer.etag, newer.size, CHUNK)
    assert proof.verifiable
    commits = []
    transact = cache._cache.transact

    def counted(*args, **kwargs):
        commits.append(args)
        return transact(*args, **kwargs)

    cache._cache.transact = counted
    key = newer.chunk(CHUNK, 0)
    file = cache.open_fill(key, 5000)
    assert file is not None
    file.write(0, memoryview(data(5000)))
    assert cache.adopt(key, file, proof=proof, bind=True)
    file.close()
    assert len(commits) == 1
    assert cache.proof(newer.id) == proof
    assert cache.get(key, 5000) == data(5000)
    assert not cache.contains(V1.chunk(CHUNK, 0))  # the key's old version went
    cache.bind_etag(newer.id)  # already bound: nothing more goes
    assert cache.contains(key)
