"""Issue 3, parts 5-6: the cache's bounds and the side commands, run as a user would.

* ``--cache-size`` bounds the value files; a full disk (a small tmpfs) turns caching off
  with a "cache full" line but never fails a read; two mounts may share a cache dir.
* ``rangefs prefetch`` (mounted paths and ``s3://`` URLs) fills the cache, resumes after a
  kill and names what failed; ``rangefs status`` shows a file's chunk map; ``rangefs cache
  stats|verify|clear`` report, repair and empty a cache directory.
"""

import hashlib
import os
import re
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support import mount_stats, run, sha256_file, wait_for, wait_fully_cached
from tests.support import rangefs_cli as cli
from tests.support.patterns import pattern_sha256, upload_pattern

C = 1024 * 1024


def assert_one_line_error(result, *needles: str) -> None:
    err = result.stderr.strip()
    assert result.returncode != 0, (result.returncode, result.stdout, err)
    assert err.startswith("rangefs: ") and "\n" not in err, err
    assert "Traceback" not in result.stdout + result.stderr
    for needle in needles:
        assert needle in err, (needle, err)


def drop_page_cache() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def cached_bytes(path: Path) -> int:
    return int(os.getxattr(path, "user.rangefs.cached").split()[0])


def chunk_flags(path: Path) -> str:
    return os.getxattr(path, "user.rangefs.chunks").decode().split()[1]


def settle(proxy, key: str, quiet: float = 1.0, timeout: float = 30) -> int:
    """Waits until the proxy has no open request and sent nothing new for ``quiet`` s;
    returns the bytes of ``key`` it sent."""
    last = [-1, time.monotonic()]

    def idle() -> bool:
        sent = proxy.bytes_sent(key)
        busy = any(r.finished is None for r in proxy.records)
        if busy or sent != last[0]:
            last[:] = [sent, time.monotonic()]
            return False
        return time.monotonic() - last[1] >= quiet

    wait_for(idle, timeout=timeout, interval=0.1, what="the daemon to stop fetching")
    return proxy.bytes_sent(key)


def value_files(cache_dir: Path) -> list[Path]:
    return [p for p in cache_dir.rglob("*.val") if p.is_file()]


SIZE_UNITS = {"B": 1, "KiB": 1024, "MiB": C, "GiB": 1024 * C}


def parse_stats(text: str) -> dict[str, object]:
    """The numbers of ``rangefs cache stats``."""
    m = re.search(r"^used\s+([\d.]+) (\w+) of ([\d.]+) (\w+)$", text, re.M)
    assert m, text
    chunks = re.search(r"^chunks\s+(\d+)$", text, re.M)
    objects = re.search(r"^objects\s+(\d+)", text, re.M)
    directory = re.search(r"^directory\s+(.+)$", text, re.M)
    assert chunks and objects and directory, text
    return {
        "used": float(m.group(1)) * SIZE_UNITS[m.group(2)],
        "limit": float(m.group(3)) * SIZE_UNITS[m.group(4)],
        "chunks": int(chunks.group(1)),
        "objects": int(objects.group(1)),
        "directory": directory.group(1),
    }


# --- 5. cache bounds ---------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_cache_size_bounds_the_value_files(tmp_path, seeded_bucket, proxied_mount):
    size, key = 32 * C, "bounded.bin"
    bucket = seeded_bucket({key: (size, 71)})
    cache = tmp_path / "cache"
    mount = proxied_mount(bucket, "--cache-size", "8M")
    path = mount.path / key
    assert sha256_file(path) == pattern_sha256(size, 71)
    wait_for(
        lambda: (s := mount_stats(mount))["chunks_stored"] + s["store_failures"] >= 32,
        timeout=20,
        what="every chunk written to (or refused by) the cache",
    )

    def index_agrees() -> bool:
        # The daemon's last write (the proof's record) may cull a chunk after the last store.
        stdout = cli("cache", "stats", "--cache-dir", str(cache)).stdout
        return parse_stats(stdout)["chunks"] == len(value_files(cache))

    wait_for(index_agrees, timeout=10, what="the cache index to list every value file")
    files = value_files(cache)
    total = sum(p.stat().st_size for p in files)
    print(f"\n[figures] --cache-size 8M after 32 MiB: {len(files)} value files, {total} B")
    assert total <= 9 * C, f"{len(files)} value files hold {total} B"
    result = cli("cache", "stats", "--cache-dir", str(cache))
    assert result.returncode == 0, result.stderr
    st = parse_stats(result.stdout)
    assert st["limit"] == 8 * C and st["objects"] == 1
    assert st["chunks"] == len(files) and st["used"] <= 9 * C, result.stdout
    assert st["used"] >= total - 0.1 * C, result.stdout  # volume includes the value files

    drop_page_cache()
    assert sha256_file(path) == pattern_sha256(size, 71), "reads stay correct after eviction"
    assert mount_stats(mount)["read_errors"] == 0


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    """A 6 MiB tmpfs. Request it before ``rangefs_mount`` so that it is unmounted after the
    rangefs mounts whose cache lives on it."""
    where = tmp_path / "small"
    where.mkdir()
    result = run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(where)])
    assert result.returncode == 0, result.stderr
    try:
        yield where
    finally:
        if run(["umount", str(where)]).returncode != 0:
            run(["umount", "-l", str(where)])


@pytest.mark.timeout(90)
def test_full_cache_disk_never_fails_a_read(
    small_tmpfs, make_bucket, s3server, proxy, rangefs_mount
):
    bucket = make_bucket()
    client = s3server.client()
    size, key = 32 * C, "big.bin"
    upload_pattern(client, bucket, key, size, seed=72)
    upload_pattern(client, bucket, "small.bin", 3 * C + 1, seed=73)
    mount = rangefs_mount(bucket, endpoint=proxy.url, cache_dir=small_tmpfs / "cache")
    result = run(["sha256sum", str(mount.path / key)])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == pattern_sha256(size, 72)
    assert "cache full" in mount.log(), mount.log_tail()

    drop_page_cache()
    assert sha256_file(mount.path / key) == pattern_sha256(size, 72)
    assert sha256_file(mount.path / "small.bin") == pattern_sha256(3 * C + 1, 73)
    assert mount_stats(mount)["read_errors"] == 0
    assert mount.alive and "Traceback" not in mount.log()
    mount.unmount()


@pytest.mark.timeout(60)
def test_full_cache_disk_leaves_no_partial_value_file(small_tmpfs, rangefs_mount, seeded_bucket):
    """A value file cut short by ENOSPC is not in diskcache's index, so nothing (eviction,
    ``cache verify``, ``cache clear``) would ever delete it: it must not be left behind."""
    size, key = 12 * C, "fill.bin"
    bucket = seeded_bucket({key: (size, 70)})
    cache = small_tmpfs / "cache"
    mount = rangefs_mount(bucket, cache_dir=cache)
    assert sha256_file(mount.path / key) == pattern_sha256(size, 70)
    assert "cache full" in mount.log(), mount.log_tail()
    mount.unmount()
    db = sqlite3.connect(f"file:{cache / 'cache.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT filename FROM Cache WHERE filename IS NOT NULL").fetchall()
    finally:
        db.close()
    known = {cache / name for (name,) in rows}
    orphans = {str(p.relative_to(cache)): p.stat().st_size for p in value_files(cache)}
    for path in known:
        orphans.pop(str(path.relative_to(cache)), None)
    assert orphans == {}, f"partial value files left on the full disk: {orphans}"


@pytest.mark.timeout(90)
def test_two_mounts_share_one_cache_dir(make_bucket, s3server, proxy, rangefs_mount, tmp_path):
    bucket = make_bucket()
    client = s3server.client()
    upload_pattern(client, bucket, "both.bin", 32 * C, seed=74)
    upload_pattern(client, bucket, "later.bin", 8 * C + 9, seed=75)
    shared = tmp_path / "shared"
    first = rangefs_mount(bucket, endpoint=proxy.url, cache_dir=shared)
    second = rangefs_mount(bucket, endpoint=proxy.url, cache_dir=shared)

    with ThreadPoolExecutor(2) as pool:
        digests = list(pool.map(lambda m: sha256_file(m.path / "both.bin"), [first, second]))
    assert digests == [pattern_sha256(32 * C, 74)] * 2

    assert sha256_file(first.path / "later.bin") == pattern_sha256(8 * C + 9, 75)
    wait_fully_cached(first.path / "later.bin")
    proxy.reset()
    assert sha256_file(second.path / "later.bin") == pattern_sha256(8 * C + 9, 75)
    assert proxy.count("GET", key="later.bin") == 0, "served from the shared cache"
    stats = mount_stats(second)
    assert stats["range_hits"] >= 9, stats
    logs = first.log() + second.log()
    assert "Traceback" not in logs
    assert "dropping bad chunk" not in logs, "a chunk the other mount was writing is not bad"


# --- 6. rangefs prefetch -----------------------------------------------------------------


@pytest.mark.timeout(120)
def test_prefetch_mounted_file_resumes_after_kill(proxy, rangefs_mount, seeded_bucket):
    size, key = 64 * C, "pf/big.bin"
    bucket = seeded_bucket({key: (size, 76)})
    mount = rangefs_mount(bucket, endpoint=proxy.url)
    path = mount.path / key

    proxy.faults.bandwidth = 3 * C
    argv = [sys.executable, "-m", "rangefs", "prefetch", "--no-progress", "--jobs", "4", str(path)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(
            lambda: proc.poll() is None and cached_bytes(path) >= 0.4 * size,
            timeout=60,
            interval=0.05,
            what="prefetch at 40%",
        )
    finally:
        proc.kill()
        proc.wait(timeout=10)
    proxy.faults.bandwidth = None
    run1 = settle(proxy, key)  # the daemon finishes the GETs it had started, and stores them
    cached1 = cached_bytes(path)

    proxy.reset()
    result = cli("prefetch", "--no-progress", "--jobs", "4", str(path))
    assert result.returncode == 0, result.stderr
    assert "prefetch complete: 1 files" in result.stdout, result.stdout
    run2 = settle(proxy, key, quiet=0.3)
    print(
        f"\n[figures] prefetch of {size} B killed at ~40%: run 1 sent {run1} B "
        f"({cached1} B cached), run 2 sent {run2} B"
    )
    assert run1 < 0.9 * size, "the first prefetch was not interrupted"
    assert run2 <= size - run1 + 2 * C, "the second run re-fetched what the first got"
    assert run2 == size - cached1, "exactly the chunks that were missing"
    assert chunk_flags(path) == "#" * 64

    drop_page_cache()
    proxy.reset()
    cat = subprocess.run(["cat", str(path)], capture_output=True, timeout=60, check=False)
    assert cat.returncode == 0 and hashlib.sha256(cat.stdout).hexdigest() == pattern_sha256(
        size, 76
    )
    assert proxy.count("GET", key=key) == 0


TREE = {"tree/a.bin": 5 * C + 1, "tree/sub/b.bin": 3 * C, "tree/sub/deeper/c.bin": 1}


@pytest.mark.timeout(90)
def test_prefetch_directory_with_jobs(make_bucket, s3server, proxy, rangefs_mount):
    bucket = make_bucket()
    client = s3server.client()
    for seed, (key, size) in enumerate(TREE.items(), 80):
        upload_pattern(client, bucket, key, size, seed)
    upload_pattern(client, bucket, "outside.bin", 2 * C, seed=89)
    mount = rangefs_mount(bucket, endpoint=proxy.url)

    result = cli("prefetch", "--no-progress", "--jobs", "4", str(mount.path / "tree"))
    assert result.returncode == 0, result.stderr
    assert "prefetch complete: 3 files, 8.0 MiB fetched" in result.stdout, result.stdout
    for key, size in TREE.items():
        assert chunk_flags(mount.path / key) == "#" * -(-size // C), key
        ranges = sorted(r.range for r in proxy.matching("GET", key, ranged_only=True))
        want = sorted(f"bytes={i * C}-{min((i + 1) * C, size) - 1}" for i in range(-(-size // C)))
        assert ranges == want, (key, ranges)
    assert proxy.count("GET", key="outside.bin") == 0

    again = cli("prefetch", "--no-progress", "--jobs", "4", str(mount.path / "tree"))
    assert again.returncode == 0 and "0 B fetched" in again.stdout, again.stdout
    drop_page_cache()
    proxy.reset()
    for seed, (key, size) in enumerate(TREE.items(), 80):
        assert sha256_file(mount.path / key) == pattern_sha256(size, seed)
    assert proxy.count("GET") == 0


@pytest.mark.timeout(30)
def test_prefetch_refuses_paths_not_on_a_mount(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("not on rangefs")
    result = cli("prefetch", str(plain))
    assert_one_line_error(result, str(plain), "not a file on a rangefs mount")
    assert result.returncode == 1
    result = cli("prefetch", str(tmp_path / "missing"))
    assert_one_line_error(result, "no such file or directory")
    assert result.returncode == 1


@pytest.mark.timeout(90)
def test_prefetch_s3_urls_fill_the_cache_for_a_later_mount(
    make_bucket, s3server, proxy, rangefs_mount, tmp_path
):
    bucket = make_bucket()
    client = s3server.client()
    objects = {"one/x.bin": 6 * C + 1, "pre/a.bin": 3 * C, "pre/sub/b.bin": 2 * C + 5}
    for seed, (key, size) in enumerate(objects.items(), 90):
        upload_pattern(client, bucket, key, size, seed)
    upload_pattern(client, bucket, "prelude.bin", C, seed=99)  # shares "pre", not "pre/"
    cache = tmp_path / "cache"
    env = s3server.env()
    base = ("prefetch", "--no-progress", "--endpoint-url", proxy.url, "--cache-dir", str(cache),
            "--chunk-size", "1M")  # fmt: skip

    result = cli(*base, f"s3://{bucket}/one/x.bin", env=env)
    assert result.returncode == 0, result.stderr
    assert proxy.count("GET", key="one/x.bin", ranged_only=True) == 7
    result = cli(*base, "--jobs", "4", f"s3://{bucket}/pre/", env=env)
    assert result.returncode == 0, result.stderr
    assert "prefetch complete: 2 files" in result.stdout, result.stdout
    assert proxy.count("GET", key="prelude.bin") == 0

    proxy.reset()
    again = cli(*base, f"s3://{bucket}/pre/", env=env)
    assert again.returncode == 0 and "0 B fetched" in again.stdout, again.stdout
    assert proxy.count("GET", ranged_only=True) == 0

    mount = rangefs_mount(bucket, endpoint=proxy.url, cache_dir=cache, chunk_size="1M")
    for seed, (key, size) in enumerate(objects.items(), 90):
        assert sha256_file(mount.path / key) == pattern_sha256(size, seed), key
    assert proxy.count("GET", ranged_only=True) == 0, "all served from the prefetched cache"


@pytest.mark.timeout(60)
def test_prefetch_s3_failure_names_the_range(make_bucket, s3server, proxy, tmp_path):
    bucket = make_bucket()
    upload_pattern(s3server.client(), bucket, "fail.bin", 2 * C, seed=98)
    proxy.faults.error_rate = 1.0
    started = time.monotonic()
    result = cli("prefetch", "--no-progress", "--retries", "2", "--endpoint-url", proxy.url,
                 "--cache-dir", str(tmp_path / "cache"), "--chunk-size", "1M",
                 f"s3://{bucket}/fail.bin", env=s3server.env())  # fmt: skip
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert time.monotonic() - started < 30
    assert f"failed: s3://{bucket}/fail.bin bytes=0-1048575" in result.stderr, result.stderr
    assert f"failed: s3://{bucket}/fail.bin bytes=1048576-2097151" in result.stderr
    assert "503" in result.stderr and "Traceback" not in result.stderr
    assert "2 chunks FAILED" in result.stdout, result.stdout


# --- 6. rangefs status --------------------------------------------------------------------


def status(path: Path) -> dict[str, str]:
    result = cli("status", str(path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == str(path), result.stdout
    return {k: v.strip() for k, _, v in (line.strip().partition(" ") for line in lines[1:])}


@pytest.mark.timeout(60)
def test_status_shows_the_chunk_map(make_bucket, s3server, rangefs_mount):
    bucket = make_bucket()
    client = s3server.client()
    size, key = 32 * C, "st/obj.bin"
    upload_pattern(client, bucket, key, size, seed=77)
    etag = client.head_object(Bucket=bucket, Key=key)["ETag"]
    mount = rangefs_mount(bucket)
    path = mount.path / key

    before = status(path)
    assert before["uri"] == f"s3://{bucket}/{key}"
    assert before["etag"] == etag
    assert before["cached"] == "0 B of 32.0 MiB (0%), 0 of 32 chunks of 1.0 MiB"
    assert before["map"] == "[" + "." * 32 + "]"

    dd = run(["dd", f"if={path}", "of=/dev/null", "bs=1M", "skip=10", "count=1"])
    assert dd.returncode == 0, dd.stderr
    seen: list[str] = []

    def settled() -> bool:
        seen.append(status(path)["map"])
        return "#" in seen[-1] and len(seen) >= 3 and len(set(seen[-3:])) == 1

    wait_for(settled, timeout=20, interval=0.2, what="the chunk map to settle")
    after = status(path)
    cells = after["map"].strip("[]")
    assert re.fullmatch(r"\.+#+\.+", cells) and cells[10] == "#", cells
    n = cells.count("#")
    m = re.fullmatch(r"([\d.]+) MiB of 32.0 MiB \((\d+)%\), (\d+) of 32 chunks of 1.0 MiB",
                     after["cached"])  # fmt: skip
    assert m and float(m.group(1)) == n and int(m.group(3)) == n, after["cached"]
    assert int(m.group(2)) == round(100 * n / 32)

    not_mounted = cli("status", str(mount.cache_dir))
    assert_one_line_error(not_mounted, "not a file on a rangefs mount")


# --- 6. rangefs cache stats|verify|clear -------------------------------------------------


@pytest.mark.timeout(90)
def test_cache_stats_verify_clear(make_bucket, s3server, proxy, tmp_path, proxied_mount):
    bucket = make_bucket()
    client = s3server.client()
    upload_pattern(client, bucket, "x.bin", 8 * C, seed=78)
    upload_pattern(client, bucket, "y.bin", 3 * C, seed=79)
    cache = tmp_path / "cache"
    mount = proxied_mount(bucket)
    for key in ("x.bin", "y.bin"):
        assert sha256_file(mount.path / key) != ""
        wait_fully_cached(mount.path / key)
    mount.unmount()

    result = cli("cache", "stats", "--cache-dir", str(cache))
    assert result.returncode == 0, result.stderr
    st = parse_stats(result.stdout)
    files = value_files(cache)
    volume = sum(p.stat().st_size for p in files)
    assert st["directory"] == str(cache)
    assert (st["chunks"], st["objects"], len(files)) == (11, 2, 11), result.stdout
    assert volume - 0.1 * C <= st["used"] <= volume + C, (volume, result.stdout)
    assert st["limit"] == 10 * 1024 * C

    db = sqlite3.connect(f"file:{cache / 'cache.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT key, filename FROM Cache WHERE filename IS NOT NULL").fetchall()
    finally:
        db.close()
    by_file = {cache / name: key for key, name in rows}
    victims = sorted(by_file)[:2]
    os.truncate(victims[0], 1000)
    with victims[1].open("r+b") as f:
        f.seek(5000)
        byte = f.read(1)
        f.seek(5000)
        f.write(bytes([byte[0] ^ 1]))

    verify = cli("cache", "verify", "--cache-dir", str(cache))
    assert verify.returncode == 1, (verify.stdout, verify.stderr)
    assert "verified 11 chunks: 2 bad" in verify.stdout, verify.stdout
    bad = [line for line in verify.stdout.splitlines() if line.strip().startswith("bad:")]
    assert len(bad) == 2, verify.stdout
    for key in (by_file[v] for v in victims):
        _, _, obj, _, _, index = key.split("\0")
        assert any(f"s3://{bucket}/{obj} " in line and f"chunk {index} " in line for line in bad)
    verify = cli("cache", "verify", "--cache-dir", str(cache))
    assert verify.returncode == 0 and "verified 9 chunks: 0 bad" in verify.stdout, verify.stdout

    clear = cli("cache", "clear", "--cache-dir", str(cache))
    assert clear.returncode == 0, clear.stderr
    st = parse_stats(cli("cache", "stats", "--cache-dir", str(cache)).stdout)
    assert (st["chunks"], st["objects"]) == (0, 0)
    assert value_files(cache) == []

    proxy.reset()
    again = proxied_mount(bucket)
    assert sha256_file(again.path / "x.bin") == pattern_sha256(8 * C, 78)
    assert proxy.count("GET", key="x.bin", ranged_only=True) == 8, "everything fetched again"


@pytest.mark.timeout(30)
def test_cache_command_bad_inputs(tmp_path):
    missing = tmp_path / "missing"
    assert_one_line_error(cli("cache", "stats", "--cache-dir", str(missing)), str(missing))
    assert not missing.exists(), "a typo must not create a cache"
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    for action in ("stats", "verify", "clear"):
        result = cli("cache", action, "--cache-dir", str(empty))
        assert_one_line_error(result, "not a rangefs cache directory")
    assert (empty / "notes.txt").read_text() == "hello" and sorted(os.listdir(empty)) == [
        "notes.txt"
    ]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert_one_line_error(cli("cache", "stats", "--cache-dir", str(a_file)), str(a_file))
    result = cli("cache", "explode", "--cache-dir", str(empty))
    assert_one_line_error(result, "invalid choice: 'explode'")
    assert result.returncode == 2
