"""Issue 12: read-ahead across files, proven from outside with rsync, cp -r and tar.

A tree of hundreds of small pattern objects (and a few of several chunks) behind the counting
proxy with WAN-like latency: the copies are byte-identical, every object is fetched once (no
byte twice), no HEAD is sent and each directory is listed once; a reader opening a few files
out of order triggers no read-ahead; an rsync killed half way and run again refetches nothing.
"""

import contextlib
import io
import os
import random
import secrets
import subprocess
import tarfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support import mount_stats, run, sha256_file, wait_for
from tests.support.patterns import pattern_bytes, pattern_sha256, upload_pattern

LATENCY = 0.02  # seconds before the proxy forwards each request
MiB = 1024 * 1024
SMALL = {f"small/f{i:04d}": (300 + i * 137 % 7000, i) for i in range(200)}
SMALL["small/empty"] = (0, 999)
MIXED = {f"mixed/a{i:03d}": (100 + i * 211 % 9000, 1000 + i) for i in range(60)}
MIXED |= {f"mixed/sub/s{i:02d}": (2000 + i, 2000 + i) for i in range(20)}
MIXED |= {"mixed/big1": (3 * MiB + 5, 1), "mixed/big2": (MiB + 7, 2), "mixed/c-big3": (2 * MiB, 3)}
TREE = SMALL | MIXED


@pytest.fixture(scope="module")
def tree_bucket(s3server) -> Iterator[str]:
    """One bucket for the module: uploading the tree costs a few seconds, with many threads."""
    bucket = "t-walk-" + secrets.token_hex(3)
    client = s3server.client()
    client.create_bucket(Bucket=bucket)
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda kv: upload_pattern(client, bucket, kv[0], *kv[1]), TREE.items()))
    yield bucket
    with contextlib.suppress(Exception):
        s3server.client(max_attempts=1).delete_bucket(Bucket=bucket)


@pytest.fixture
def slow_proxy(proxy):
    proxy.set_faults(latency=LATENCY)
    return proxy


def check_copy(dest: Path, prefix: str) -> None:
    for key, (size, seed) in TREE.items():
        if key.startswith(prefix):
            path = dest / key.removeprefix(prefix)
            assert path.stat().st_size == size, key
            assert sha256_file(path) == pattern_sha256(size, seed), key


def check_fetched_once(proxy, bucket: str, prefix: str) -> None:
    """Every object under ``prefix`` fetched once: small ones in one GET, no byte twice."""
    for key, (size, _) in TREE.items():
        if not key.startswith(prefix):
            continue
        assert proxy.bytes_sent(key, bucket=bucket) == size, key
        if 0 < size <= MiB:
            assert proxy.count("GET", key, bucket=bucket) == 1, key
    assert proxy.count("HEAD") == 0


def listings(proxy, bucket: str) -> int:
    """ListObjectsV2 requests, but the mount's own access check (``max-keys=1``)."""
    return sum(
        1
        for r in proxy.matching("GET", bucket=bucket)
        if r.key is None and "max-keys=1&" not in r.query + "&"
    )


def rsync(mount, prefix: str, dest: Path) -> list[str]:
    return ["rsync", "-a", f"{mount.path}/{prefix}", f"{dest}/"]


def cp_r(mount, prefix: str, dest: Path) -> list[str]:
    return ["cp", "-r", f"{mount.path}/{prefix}.", f"{dest}/"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("tool", [rsync, cp_r], ids=["rsync -a", "cp -r"])
@pytest.mark.parametrize("prefix", ["small/", "mixed/"])
def test_a_tree_copy_fetches_each_object_once_ahead_of_the_tool(
    tree_bucket, proxied_mount, slow_proxy, tmp_path, tool, prefix
):
    mount = proxied_mount(tree_bucket)
    dest = tmp_path / "copy"
    dest.mkdir()
    result = run(tool(mount, prefix, dest), timeout=90)
    assert result.returncode == 0, result.stderr
    check_copy(dest, prefix)
    check_fetched_once(slow_proxy, tree_bucket, prefix)
    directories = 2 if prefix == "small/" else 3  # the root, the prefix, mixed/sub
    assert listings(slow_proxy, tree_bucket) <= directories
    stats = mount_stats(mount)
    files = sum(1 for key, (size, _) in TREE.items() if key.startswith(prefix) and size)
    assert stats["walk_files_ahead"] >= files * 0.8, stats
    assert stats["walk_files_opened"] == stats["walk_files_ahead"], stats
    assert f"walk detected in /{prefix.rstrip('/')} at " in mount.log()  # --log-level debug


@pytest.mark.timeout(120)
def test_tar_c_of_a_tree_is_byte_identical_and_fetches_each_object_once(
    tree_bucket, proxied_mount, slow_proxy
):
    mount = proxied_mount(tree_bucket)
    result = subprocess.run(
        ["tar", "c", "-C", str(mount.path), "mixed"], capture_output=True, timeout=90, check=False
    )
    assert result.returncode == 0, result.stderr
    with tarfile.open(fileobj=io.BytesIO(result.stdout)) as archive:
        for key, (size, seed) in MIXED.items():
            member = archive.extractfile(key)
            assert member is not None, key
            assert member.read() == pattern_bytes(0, size, seed), key
    check_fetched_once(slow_proxy, tree_bucket, "mixed/")
    assert mount_stats(mount)["walk_files_ahead"] > 0


@pytest.mark.timeout(60)
def test_a_reader_opening_files_out_of_order_triggers_no_read_ahead(
    tree_bucket, proxied_mount, slow_proxy, tmp_path
):
    mount = proxied_mount(tree_bucket)
    picked = random.Random(3).sample(sorted(SMALL.keys() - {"small/empty"}), 12)
    result = run(
        ["cat", *(str(mount.path / key) for key in picked)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    keys = {r.key for r in slow_proxy.matching("GET", bucket=tree_bucket) if r.key}
    assert keys == set(picked)
    assert mount_stats(mount)["walk_files_ahead"] == 0
    assert "walk detected" not in mount.log()


@pytest.mark.timeout(120)
def test_an_rsync_killed_half_way_then_run_again_refetches_nothing(
    tree_bucket, proxied_mount, slow_proxy, tmp_path
):
    mount = proxied_mount(tree_bucket)
    dest = tmp_path / "copy"
    dest.mkdir()
    argv = rsync(mount, "small/", dest)
    argv[2:2] = ["--bwlimit=300"]  # rsync itself slowed down (KB/s), so it is caught midway
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(os.listdir(dest)) >= 60, timeout=60, what="rsync a third done")
    finally:
        proc.kill()
        proc.wait(timeout=10)
    copied = len(os.listdir(dest))
    assert copied < len(SMALL), "rsync finished before it was killed"
    result = run(rsync(mount, "small/", dest), timeout=90)
    assert result.returncode == 0, result.stderr
    check_copy(dest, "small/")
    check_fetched_once(slow_proxy, tree_bucket, "small/")


@pytest.mark.timeout(120)
def test_after_a_remount_within_the_metadata_ttl_a_walk_lists_nothing_and_sends_no_head(
    tree_bucket, proxied_mount, slow_proxy, tmp_path
):
    """The listing comes from the metadata index: the walk, and stat of each file, need no
    request besides the GETs of the files (each once)."""
    mount = proxied_mount(tree_bucket, "--metadata-ttl", "600")
    assert len(os.listdir(mount.path / "small")) == len(SMALL)
    mount.unmount()
    slow_proxy.reset()
    mount = proxied_mount(tree_bucket, "--metadata-ttl", "600")
    dest = tmp_path / "copy"
    dest.mkdir()
    result = run(rsync(mount, "small/", dest), timeout=90)
    assert result.returncode == 0, result.stderr
    check_copy(dest, "small/")
    check_fetched_once(slow_proxy, tree_bucket, "small/")
    assert listings(slow_proxy, tree_bucket) == 0
    assert mount_stats(mount)["walk_files_ahead"] >= len(SMALL) * 0.8
