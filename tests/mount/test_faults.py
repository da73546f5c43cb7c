"""Issue 3, parts 2-4: damaged cache files, objects changing under an open file, a bad
network.

* Every chunk read from the disk cache is checked (length + xxh3): a truncated, flipped or
  deleted value file is dropped with one log line and fetched again — exactly that chunk,
  never an EIO and never wrong bytes.
* An open file is pinned to the version (ETag) it was opened with: after the object is
  overwritten, its reads are served from the old version's cached chunks or fail with
  ESTALE; a new open (after ``--metadata-ttl``) sees the new object.
* Network faults (short bodies, resets, 5xx, stalls, refused connections) are retried per
  chunk; a persistent failure is an EIO in bounded time, logged with key, range and cause.
"""

import errno
import os
import re
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from rangefs.remote.store import ObjectVersion
from tests.support import mount_stats, run, sha256_file, wait_for, wait_fully_cached
from tests.support.patterns import pattern_bytes, pattern_sha256, upload_pattern
from tests.support.proxy import asked_bytes, covered, spans

C = 1024 * 1024
DROP_LINE = re.compile(r"dropping bad chunk (\d+) of s3://(\S+?)/(\S+) \(([^)]*)\)")


def drop_page_cache() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def chunk_range(index: int, size: int) -> str:
    return f"bytes={index * C}-{min((index + 1) * C, size) - 1}"


def assert_fetched_exactly(records: list, chunks: tuple[int, ...], size: int) -> None:
    """The GETs asked for exactly the bytes of ``chunks``, each byte once (however the reader
    split them into GETs)."""
    ranges = [r.range for r in records]
    wanted = [chunk_range(i, size) for i in chunks]
    assert covered(ranges) == covered(wanted), f"exactly the damaged: {sorted(ranges)}"
    assert asked_bytes(ranges) == asked_bytes(wanted), f"each byte once: {sorted(ranges)}"


def value_files(cache_dir: Path, bucket: str, key: str, etag: str, size: int) -> dict[int, Path]:
    """Chunk index -> the diskcache value file holding it (read from diskcache's index)."""
    version = ObjectVersion(bucket, key, etag, size)
    wanted = {version.chunk(C, i).encode(): i for i in range(-(-size // C))}
    db = sqlite3.connect(f"file:{cache_dir / 'cache.db'}?mode=ro", uri=True, timeout=30)
    try:
        rows = db.execute("SELECT key, filename FROM Cache WHERE filename IS NOT NULL").fetchall()
    finally:
        db.close()
    found = {wanted[k]: cache_dir / name for k, name in rows if k in wanted}
    assert all(p.suffix == ".val" and p.is_file() for p in found.values()), found
    return found


def damage(files: dict[int, Path], truncate: int, flip: int, delete: int) -> None:
    """Three kinds of damage a crash or a bad disk leaves behind."""
    path = files[truncate]
    os.truncate(path, path.stat().st_size // 2)
    path = files[flip]
    with path.open("r+b") as f:
        f.seek(100_000)
        byte = f.read(1)
        f.seek(100_000)
        f.write(bytes([byte[0] ^ 0x40]))
    files[delete].unlink()


def drop_lines(log: str, key: str) -> dict[int, str]:
    """Chunk index -> reason, from the daemon's "dropping bad chunk" lines for ``key``;
    fails if one chunk is reported twice."""
    found: dict[int, str] = {}
    for m in DROP_LINE.finditer(log):
        if m.group(3) == key:
            index = int(m.group(1))
            assert index not in found, f"chunk {index} reported twice:\n{log}"
            found[index] = m.group(4)
    return found


# --- 2. every chunk read from the disk cache is verified -----------------------------------


@pytest.mark.timeout(90)
def test_damaged_value_files_are_refetched_after_remount(
    proxy, tmp_path, seeded_bucket, proxied_mount
):
    size, key = 16 * C + 777, "damaged.bin"
    bucket = seeded_bucket({key: (size, 41)})
    cache = tmp_path / "cache"
    mount = proxied_mount(bucket)
    path = mount.path / key
    assert sha256_file(path) == pattern_sha256(size, 41)
    wait_fully_cached(path)
    etag = os.getxattr(path, "user.rangefs.etag").decode()
    mount.unmount()

    files = value_files(cache, bucket, key, etag, size)
    assert {3, 7, 12} <= set(files), sorted(files)
    damage(files, truncate=3, flip=7, delete=12)
    drop_page_cache()

    proxy.reset()
    again = proxied_mount(bucket)
    result = run(["sha256sum", str(again.path / key)])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == pattern_sha256(size, 41)
    assert_fetched_exactly(proxy.matching("GET", key, ranged_only=True), (3, 7, 12), size)
    reasons = drop_lines(again.log(), key)
    assert sorted(reasons) == [3, 7, 12], again.log_tail()
    assert "value file missing" in reasons[12]
    assert mount_stats(again)["read_errors"] == 0
    wait_fully_cached(again.path / key)  # the re-fetched chunks are stored again


@pytest.mark.timeout(90)
def test_damage_while_mounted_is_detected(proxy, tmp_path, seeded_bucket, proxied_mount):
    """``--memory-limit 4M`` keeps the daemon's in-memory LRU to a few chunks, so the
    damaged (early) chunks of a 24-chunk object are read back from disk."""
    size, key = 24 * C, "live.bin"
    bucket = seeded_bucket({key: (size, 42)})
    cache = tmp_path / "cache"
    mount = proxied_mount(bucket, "--memory-limit", "4M")
    path = mount.path / key
    assert sha256_file(path) == pattern_sha256(size, 42)
    wait_fully_cached(path)
    etag = os.getxattr(path, "user.rangefs.etag").decode()

    files = value_files(cache, bucket, key, etag, size)
    damage(files, truncate=2, flip=6, delete=10)
    drop_page_cache()
    proxy.reset()
    result = run(["sha256sum", str(path)])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == pattern_sha256(size, 42)
    assert_fetched_exactly(proxy.matching("GET", key, ranged_only=True), (2, 6, 10), size)
    assert sorted(drop_lines(mount.log(), key)) == [2, 6, 10], mount.log_tail()
    assert mount_stats(mount)["read_errors"] == 0


# --- 3. an object overwritten while a file is open -----------------------------------------


def read_chunk(fd: int, index: int, size: int) -> tuple[bytes, OSError | None]:
    """Chunk ``index`` through ``fd``: the bytes returned and the error that stopped it."""
    start, end = index * C, min((index + 1) * C, size)
    got = b""
    while start + len(got) < end:
        try:
            block = os.pread(fd, end - start - len(got), start + len(got))
        except OSError as exc:
            return got, exc
        if not block:
            break
        got += block
    return got, None


@pytest.mark.timeout(90)
def test_overwritten_object_never_mixes_versions(make_bucket, s3server, proxy, rangefs_mount):
    bucket = make_bucket()
    client = s3server.client()
    key = "changing.bin"
    old_size, new_size = 32 * C + 5, 40 * C + 3
    old_chunks = 33
    upload_pattern(client, bucket, key, old_size, seed=51)
    old_etag = client.head_object(Bucket=bucket, Key=key)["ETag"]
    mount = rangefs_mount(bucket, "--metadata-ttl", "1", endpoint=proxy.url)
    path = mount.path / key

    fd = os.open(path, os.O_RDONLY)
    try:
        assert read_chunk(fd, 0, old_size) == (pattern_bytes(0, C, 51), None)

        # Read-ahead may bring a few more chunks in; wait until the map stops changing.
        def chunk_map() -> str:
            return os.getxattr(path, "user.rangefs.chunks").decode().split()[1]

        seen: list[str] = []

        def stable() -> bool:
            seen.append(chunk_map())
            return len(seen) >= 6 and len(set(seen[-6:])) == 1

        wait_for(stable, timeout=20, interval=0.1, what="read-ahead to settle")
        cached = {i for i, c in enumerate(seen[-1]) if c == "#"}
        assert 0 in cached and len(cached) < old_chunks, seen[-1]

        upload_pattern(client, bucket, key, new_size, seed=52)
        new_etag = client.head_object(Bucket=bucket, Key=key)["ETag"]
        assert new_etag != old_etag

        failed = set()
        for index in range(old_chunks):
            got, error = read_chunk(fd, index, old_size)
            assert got == pattern_bytes(index * C, len(got), 51), f"chunk {index}: new bytes!"
            if error is not None:
                assert error.errno == errno.ESTALE, (index, error)
                failed.add(index)
            else:
                assert len(got) == min(C, old_size - index * C), index
        print(
            f"\n[figures] cached before the overwrite: {sorted(cached)}; ESTALE: {sorted(failed)}"
        )
        assert failed == set(range(old_chunks)) - cached, (sorted(failed), sorted(cached))
        # A real program on the same open file: dd reading it as its stdin.
        dd = subprocess.run(
            ["dd", "bs=1M", f"skip={max(failed)}", "count=1", "of=/dev/null"],
            stdin=fd, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert dd.returncode == 1 and "Stale file handle" in dd.stderr, dd.stderr
    finally:
        os.close(fd)
    old_gets = proxy.matching("GET", key, ranged_only=True)
    assert old_gets and all(r.if_match == old_etag for r in old_gets)
    assert "object changed while open" in mount.log()

    time.sleep(1.5)  # > --metadata-ttl
    proxy.reset()
    assert path.stat().st_size == new_size
    assert sha256_file(path) == pattern_sha256(new_size, 52)
    assert os.getxattr(path, "user.rangefs.etag").decode() == new_etag
    new_gets = proxy.matching("GET", key, ranged_only=True)
    assert all(r.if_match == new_etag for r in new_gets)
    assert covered(r.range for r in new_gets) == [(0, new_size)]
    assert asked_bytes(r.range for r in new_gets) == new_size  # each byte once
    assert mount.alive


# --- 4. an unstable network -------------------------------------------------------------


@pytest.mark.timeout(150)
def test_cp_256mib_through_cuts_and_errors(proxy, rangefs_mount, tmp_path, seeded_bucket):
    size, key = 256 * C, "flaky.bin"
    bucket = seeded_bucket({key: (size, 61)})
    # 10 attempts: the chance that one of 256 chunks meets 10 faults in a row is ~1e-6.
    mount = rangefs_mount(bucket, "--retries", "10", endpoint=proxy.url)
    proxy.faults.cut_rate = 0.10
    proxy.faults.error_rate = 0.05
    dst = tmp_path / "copy.bin"
    started = time.monotonic()
    result = run(["cp", str(mount.path / key), str(dst)], timeout=120)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert sha256_file(dst) == pattern_sha256(size, 61)
    gets = proxy.matching("GET", key, ranged_only=True)
    faulted = [r for r in gets if r.fault]
    retries = re.findall(rf"retry \d+/\d+ GET s3://{bucket}/{key} (bytes=\d+-\d+)", mount.log())
    print(
        f"\n[figures] cp 256 MiB under cut_rate=0.10 error_rate=0.05: {elapsed:.1f} s, "
        f"{len(gets)} ranged GETs, {len(faulted)} faults injected "
        f"({sum(1 for r in faulted if 'cut' in r.fault)} cuts, "
        f"{sum(1 for r in faulted if 'error' in r.fault)} errors), {len(retries)} retries logged"
    )
    assert faulted, "the proxy injected no fault"
    assert len(retries) == len(faulted), "one retry per fault"
    assert covered(r.range for r in gets) == [(0, size)]
    # A cut body is resumed where it broke (to the 64 KiB block), not fetched again.
    cuts = sum(1 for r in faulted if "cut" in r.fault)
    assert size <= proxy.bytes_sent(key) <= size + cuts * 64 * 1024
    assert mount_stats(mount)["read_errors"] == 0


SINGLE_FAULTS = ["cut:1000", "reset:300000", "500", "503", "stall:10", "refuse"]


@pytest.mark.timeout(120)
def test_each_single_fault_is_retried(make_bucket, s3server, proxy, rangefs_mount):
    bucket = make_bucket()
    client = s3server.client()
    size = 2 * C + 99
    for seed in range(len(SINGLE_FAULTS)):
        upload_pattern(client, bucket, f"f{seed}.bin", size, seed)
    mount = rangefs_mount(bucket, "--read-timeout", "2", endpoint=proxy.url)
    # Newest first: a reader reading the files in listing order walks the directory, and the
    # GETs fetching the next files ahead would take the injected fault.
    for seed, spec in reversed(list(enumerate(SINGLE_FAULTS))):
        key = f"f{seed}.bin"
        proxy.inject(spec)
        started = time.monotonic()
        result = run(["sha256sum", str(mount.path / key)], timeout=60)
        elapsed = time.monotonic() - started
        assert result.returncode == 0, (spec, result.stderr)
        assert result.stdout.split()[0] == pattern_sha256(size, seed), spec
        assert proxy.pending_injections() == 0, spec
        gets = proxy.matching("GET", key, ranged_only=True)
        faulted = [r for r in gets if r.fault == spec]
        assert len(faulted) == 1, (spec, gets)
        # The retry asks for the same range, or for its rest when a cut body was resumed.
        (first, end), *_ = spans([faulted[0].range])
        retried = [r for r in gets if r is not faulted[0] and spans([r.range])[0][1] == end]
        assert len(retried) == 1 and retried[0].status == 206, (spec, retried)
        assert first <= spans([retried[0].range])[0][0], (spec, retried)
        assert len(gets) == 4, (spec, [r.range for r in gets])
        assert re.search(rf"retry 1/\d+ GET s3://{bucket}/{key} {faulted[0].range}", mount.log())
        if spec.startswith("stall"):
            assert 2 <= elapsed < 10, f"the stall must end by --read-timeout 2, took {elapsed}"
    assert mount_stats(mount)["read_errors"] == 0
    assert mount.alive


@pytest.mark.timeout(90)
def test_persistent_failure_is_eio_in_bounded_time(proxy, rangefs_mount, seeded_bucket):
    size, key = 8 * C, "down.bin"
    bucket = seeded_bucket({key: (size, 62)})
    mount = rangefs_mount(bucket, "--retries", "3", endpoint=proxy.url)
    proxy.faults.error_rate = 1.0
    started = time.monotonic()
    result = run(
        ["dd", f"if={mount.path / key}", "of=/dev/null", "bs=1M", "skip=5", "count=1"], timeout=60
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1 and "Input/output error" in result.stderr, result.stderr
    assert elapsed < 20, f"EIO took {elapsed:.1f} s"
    first = chunk_range(5, size).removeprefix("bytes=")
    assert proxy.count("GET", key=key) >= 3
    log = mount.log()
    assert re.search(rf"failed GET s3://{bucket}/{key} bytes={first}: .*503", log), log
    assert re.search(rf"read failed: s3://{bucket}/{key} bytes={first}: .*SlowDown", log), log

    proxy.faults.error_rate = 0.0
    assert mount.alive and mount.mounted
    assert sha256_file(mount.path / key) == pattern_sha256(size, 62)


@pytest.mark.timeout(60)
def test_retries_and_failures_are_counted_in_stats(make_bucket, s3server, proxy, rangefs_mount):
    """The ``user.rangefs.stats`` xattr (and /metrics, same counters) count retries and
    failed requests by cause."""
    bucket = make_bucket()
    client = s3server.client()
    upload_pattern(client, bucket, "ok.bin", C, seed=63)
    upload_pattern(client, bucket, "bad.bin", C, seed=64)
    mount = rangefs_mount(bucket, "--retries", "2", endpoint=proxy.url)
    proxy.inject("503")
    assert sha256_file(mount.path / "ok.bin") == pattern_sha256(C, 63)
    proxy.faults.error_rate = 1.0
    assert run(["cat", str(mount.path / "bad.bin")]).returncode == 1
    stats = {
        k: v for k, v in mount_stats(mount).items() if k in ("retries", "errors", "read_errors")
    }
    assert stats["read_errors"] >= 1, stats
    assert stats["retries"].get("http_503", 0) >= 2, stats  # ok.bin once, bad.bin once a read
    assert stats["errors"].get("http_503", 0) >= 1, stats
