"""A cache of private data is private: owner-only on disk, whatever the umask."""

import os
import stat
from contextlib import contextmanager

import pytest

from tests.support import run, sha256_file
from tests.support.patterns import pattern_sha256

C = 1024 * 1024


@contextmanager
def umask(value: int):
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def loose_entries(root):
    """Everything under ``root`` (itself included) that another user could read or enter."""
    paths = [root, *root.rglob("*")]
    return {str(p): oct(p.stat().st_mode & 0o777) for p in paths if p.stat().st_mode & 0o077}


@pytest.mark.timeout(90)
def test_cache_and_log_are_owner_only_even_with_umask_0(seeded_bucket, rangefs_mount, tmp_path):
    key, size = "private.bin", 3 * C + 5
    bucket = seeded_bucket({key: (size, 81)})
    cache = tmp_path / "cache"
    with umask(0):
        mount = rangefs_mount(bucket, cache_dir=cache)
    assert sha256_file(mount.path / key) == pattern_sha256(size, 81)
    mount.unmount()
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert any(cache.rglob("*.val")), "chunks were stored"
    assert loose_entries(cache) == {}
    assert stat.S_IMODE(mount.log_file.stat().st_mode) & 0o077 == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", [0o755, 0o770, 0o701])
def test_a_cache_dir_others_can_use_is_refused(mode, seeded_bucket, rangefs_mount, tmp_path):
    bucket = seeded_bucket({"x.bin": (C, 82)})
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(mode)
    result, mount = rangefs_mount.try_mount(bucket, cache_dir=cache)
    assert result.returncode == 1 and mount is None
    assert result.stderr == (
        f"rangefs: cache dir {cache} is open to other users (mode {mode:o}): "
        f"run 'chmod 700 {cache}'\n"
    )
    assert list(cache.iterdir()) == [], "nothing written into the refused dir"
    cache.chmod(0o700)
    assert rangefs_mount(bucket, cache_dir=cache).mounted


@pytest.mark.timeout(60)
def test_a_cache_dir_of_another_user_is_refused(seeded_bucket, rangefs_mount, tmp_path):
    bucket = seeded_bucket({"x.bin": (C, 83)})
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    os.chown(cache, 65534, 65534)
    result, mount = rangefs_mount.try_mount(bucket, cache_dir=cache)
    assert result.returncode == 1 and mount is None
    assert "belongs to uid 65534, not to this user" in result.stderr
    assert result.stderr.count("\n") == 1
    assert run(["ls", "-A", str(cache)]).stdout == ""
