"""Issue 11, item 4: ``rangefs pin`` keeps files cached, whatever else is read.

One mount with a small cache (2 MiB, 256 KiB chunks, so the default pin limit is 1 MiB),
through the counting proxy. ``rangefs pin DIR`` fetches a tree; reading 4 MiB of other files
evicts everything but it; the pinned files are then read with no GET and, with S3 gone,
byte-identical. A pin past the limit is one line and exit 1, with nothing pinned or fetched.
A pinned object changed upstream is read at its new version online, at its old one while
offline, and once the new one is whole the old one's chunks go. ``rangefs unpin`` lets the
tree be evicted again.
"""

import subprocess
import time
from pathlib import Path

import pytest

from rangefs.fs import xattrs
from tests.support import Mount, forget_pages, rangefs_cli, run, wait_for, wait_fully_cached
from tests.support.patterns import pattern_sha256, upload_pattern
from tests.support.proxy import CountingProxy

K = 1024
CHUNK = 256 * K
PINNED = {"tree/a.bin": (300 * K, 1), "tree/sub/b.bin": (200 * K, 2)}
FILLERS = {f"fill/{i}.bin": (512 * K, 10 + i) for i in range(8)}  # 4 MiB: twice the cache
BIG = {"big.bin": (900 * K, 3)}  # with the tree pinned, past the 1 MiB limit
TTL = 1.0
OPTIONS = ("--chunk-size", "256K", "--cache-size", "2M", "--metadata-ttl", str(TTL),
           "--connect-timeout", "1", "--read-timeout", "1", "--retries", "2",
           "--retry-seconds", "2")  # fmt: skip


def sha256sum(path: Path) -> str:
    forget_pages(path)
    result = run(["sha256sum", str(path)])
    assert result.returncode == 0, result.stderr
    return result.stdout.split()[0]


def all_cached(path: Path) -> bool:
    return all(xattrs.read_chunks(path)[1])


def cat(path: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``cat PATH > /dev/null`` from the daemon (not the page cache): status and errors."""
    forget_pages(path)
    return run(["dd", f"if={path}", "of=/dev/null", "bs=1M", "status=none"], timeout=timeout)


def read_fillers(mount: Mount) -> None:
    for key in FILLERS:
        assert cat(mount.path / key).returncode == 0
        wait_fully_cached(mount.path / key)


def pin_gets(proxy: CountingProxy, bucket: str) -> int:
    return sum(proxy.count("GET", key, bucket=bucket) for key in PINNED)


@pytest.mark.timeout(150)
def test_pinned_tree_outlives_eviction_limit_changes_and_unpin(
    make_bucket, s3, proxy: CountingProxy, proxied_mount
):
    bucket = make_bucket()
    for key, (size, seed) in {**PINNED, **FILLERS, **BIG}.items():
        upload_pattern(s3, bucket, key, size, seed)
    mount = proxied_mount(bucket, *OPTIONS)
    tree = mount.path / "tree"
    a, b = tree / "a.bin", tree / "sub/b.bin"

    result = rangefs_cli("pin", "--no-progress", str(tree), str(a))  # a named twice: once
    assert result.returncode == 0, result.stderr
    assert "pinned 2 files (500.0 KiB)" in result.stdout, result.stdout
    assert xattrs.read_pinned(a) and xattrs.read_pinned(b)
    assert all_cached(a) and all_cached(b)
    info = xattrs.read_pins(mount.path)
    assert (info.files, info.bytes, info.limit) == (2, 500 * K, 1024 * K)
    status = rangefs_cli("status", str(mount.path))
    assert status.returncode == 0 and f"pin     {a}" in status.stdout, status

    # Twice the cache size of other reads: everything but the pinned tree is evicted.
    read_fillers(mount)
    first_filler = mount.path / next(iter(FILLERS))
    assert not all_cached(first_filler), "the fillers should have evicted each other"
    assert all_cached(a) and all_cached(b), "a pinned chunk was evicted"
    gets = pin_gets(proxy, bucket)
    for key, (size, seed) in PINNED.items():
        assert sha256sum(mount.path / key) == pattern_sha256(size, seed)
    assert pin_gets(proxy, bucket) == gets, "pinned files were read from S3 again"

    # Past the limit: one line, exit 1, nothing pinned, nothing fetched.
    big = mount.path / "big.bin"
    result = rangefs_cli("pin", "--no-progress", str(big))
    assert result.returncode == 1, result
    assert result.stderr.count("\n") == 1 and "over --pin-limit 1.0 MiB" in result.stderr
    assert "nothing pinned" in result.stderr, result.stderr
    assert not xattrs.read_pinned(big) and proxy.count("GET", "big.bin", bucket=bucket) == 0

    # Changed upstream: offline the old bytes, online the new ones; then only the new kept.
    upload_pattern(s3, bucket, "tree/a.bin", 300 * K, 99)
    time.sleep(TTL)
    assert run(["stat", str(a)]).returncode == 0  # the daemon lists the new ETag
    proxy.unplug()
    failed = cat(first_filler)  # evicted bytes: S3 is tried
    assert failed.returncode == 1 and not xattrs.read_online(mount.path), failed.stderr
    assert sha256sum(a) == pattern_sha256(300 * K, 1), "offline: the old pinned version"
    assert sha256sum(b) == pattern_sha256(200 * K, 2)
    assert "offline: serving the pinned version" in mount.log()
    proxy.plug()
    wait_for(lambda: xattrs.read_online(mount.path), timeout=20, what="back online")
    assert sha256sum(a) == pattern_sha256(300 * K, 99), "online: the new version"
    wait_for(lambda: "dropped" in mount.log(), timeout=20, what="the old version dropped")
    assert xattrs.read_pinned(a) and all_cached(a)
    assert xattrs.read_pins(mount.path).files == 2

    # Unpinned: the tree is evicted like anything else.
    result = rangefs_cli("unpin", str(tree))
    assert result.returncode == 0 and "unpinned 2 files" in result.stdout, result
    assert not xattrs.read_pinned(a)
    read_fillers(mount)
    assert not (all_cached(a) and all_cached(b)), "unpinned chunks were kept"
