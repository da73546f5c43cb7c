"""Issue 3, part 1: an interrupted copy resumes from the chunk cache (the checkpoint).

A copy off a mount is interrupted at about half way — the daemon SIGKILLed, a clean stop
(SIGTERM, or EIO then ``fusermount3 -u``), a "reboot" (kill -9, lazy unmount, page cache
dropped) — and run again on a new mount of the same ``--cache-dir``. The copy must be
byte-identical, and the server must send no more in the second run than what the first
run did not already deliver, plus the chunks that were in flight when the daemon stopped.

That bound: a chunk holds one of the reader's fetch slots from its GET until it is
written to the disk cache, so at most ``--parallel`` chunks can have been (partly) sent
without being stored. The tests mount with ``--parallel 4`` and allow 4 + 2 chunks.

The proxy's ``bandwidth`` (bytes/s per response) slows the first run down so that the
interruption lands near the middle; the second run goes at full speed.
"""

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import run, sha256_file, wait_for, wait_pid_gone
from tests.support.patterns import pattern_sha256

C = 1024 * 1024
PARALLEL = 4
IN_FLIGHT_BOUND = (PARALLEL + 2) * C  # documented: --parallel chunks in flight, + 2 slack


def settle(proxy, key: str | None = None, timeout: float = 15) -> int:
    """Waits until no request is open at the proxy; returns the bytes of ``key`` it sent."""
    wait_for(
        lambda: all(r.finished is not None for r in proxy.records),
        timeout=timeout,
        what="the proxy to finish every request",
    )
    return proxy.bytes_sent(key)


def largest_file(directory: Path) -> int:
    """Size of the biggest file in ``directory`` (rsync writes to a hidden temp file)."""
    sizes = [p.stat().st_size for p in directory.iterdir() if p.is_file()]
    return max(sizes, default=0)


def wait_progress(
    procs: list[subprocess.Popen], progress: Callable[[], bool], what: str, timeout: float = 60
) -> None:
    """Polls ``progress`` until true; fails if a copy finished before it was interrupted."""

    def check() -> bool:
        for proc in procs:
            assert proc.poll() is None, (
                f"{proc.args[0]} finished (exit {proc.returncode}) before it could be "
                "interrupted: slow the proxy down further"
            )
        return progress()

    wait_for(check, timeout=timeout, interval=0.02, what=what)


def stop(proc: subprocess.Popen) -> int:
    """The exit status of a copy whose source went away (killed if it still runs)."""
    try:
        return proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        return -9


def spawn(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def copy_again(proxy, mount, key: str, dst: Path) -> int:
    """The second run at full speed: ``cp`` from a fresh mount of the same cache succeeds;
    returns the bytes of ``key`` the server sent for it."""
    proxy.faults.bandwidth = None
    proxy.reset()
    result = run(["cp", str(mount.path / key), str(dst)], timeout=90)
    assert result.returncode == 0, result.stderr
    return settle(proxy, key)


def assert_resumed(name: str, size: int, run1: int, run2: int) -> None:
    print(
        f"\n[figures] {name}: object {size} B ({size / C:.0f} MiB); run 1 sent {run1} B "
        f"({100 * run1 / size:.1f}%), run 2 sent {run2} B ({100 * run2 / size:.1f}%); "
        f"run1 + run2 - size = {run1 + run2 - size} B (bound {IN_FLIGHT_BOUND} B)"
    )
    # The daemon reads ahead of cp, so it has fetched more than cp wrote when it stops.
    assert 0.2 * size < run1 < size - 8 * C, f"the first run was not interrupted mid-way: {run1}"
    assert run2 <= size - run1 + IN_FLIGHT_BOUND, (
        f"{name}: run 2 re-fetched {run1 + run2 - size} B that run 1 had already received "
        f"(bound {IN_FLIGHT_BOUND} B = {PARALLEL}+2 chunks)"
    )


@pytest.mark.timeout(120)
def test_cp_resumes_after_kill_9_at_half(seeded_bucket, proxy, proxied_mount, tmp_path):
    size, key = 192 * C, "big.bin"
    bucket = seeded_bucket({key: (size, 31)})
    dst = tmp_path / "copy.bin"
    args = ("--parallel", str(PARALLEL))

    mount = proxied_mount(bucket, *args)
    proxy.faults.bandwidth = 8 * C  # per connection: ~25-30 MiB/s with 3-4 GETs in flight
    cp = spawn(["cp", str(mount.path / key), str(dst)])
    wait_progress([cp], lambda: dst.exists() and dst.stat().st_size >= size // 2, "cp at 50%")
    mount.kill()
    assert stop(cp) != 0, "cp must fail when the daemon dies under it"
    run1 = settle(proxy, key)
    assert "Traceback" not in mount.log()

    run2 = copy_again(proxy, proxied_mount(bucket, *args), key, dst)
    assert sha256_file(dst) == pattern_sha256(size, 31)
    assert_resumed("cp after kill -9", size, run1, run2)
    object_gets = [r for r in proxy.matching("GET", key) if "attributes" not in r.query]
    assert all(r.status == 206 for r in object_gets)  # GetObjectAttributes aside


@pytest.mark.timeout(90)
@pytest.mark.parametrize("how", ["sigterm", "eio-then-fusermount"])
def test_cp_resumes_after_clean_unmount_mid_copy(
    how, seeded_bucket, proxy, proxied_mount, tmp_path
):
    """A clean stop mid-copy, two ways: SIGTERM (how systemd or kill(1) stop a mount: the
    daemon unmounts while cp still reads) or the server failing so that cp gets EIO and
    then ``fusermount3 -u``. Either way cp fails, the daemon exits normally, and a new
    mount of the same cache resumes."""
    size, key = 64 * C, "dir/obj.bin"
    bucket = seeded_bucket({key: (size, 32)})
    dst = tmp_path / "copy.bin"
    args = ("--parallel", str(PARALLEL), "--retries", "2")

    mount = proxied_mount(bucket, *args)
    proxy.faults.bandwidth = 4 * C
    cp = spawn(["cp", str(mount.path / key), str(dst)])
    wait_progress([cp], lambda: dst.exists() and dst.stat().st_size >= size // 2, "cp at 50%")
    if how == "sigterm":
        os.kill(mount.pid, signal.SIGTERM)
        assert stop(cp) != 0, "cp must see an error when the mount goes away under it"
    else:
        proxy.faults.error_rate = 1.0
        assert stop(cp) != 0
        assert "Input/output error" in cp.stderr.read()
        proxy.faults.error_rate = 0.0
        settle(proxy)
        mount.unmount()
    assert wait_pid_gone(mount.pid, 30), mount.log_tail()
    assert not mount.mounted
    log = mount.log()
    assert "unmounted" in log and "Traceback" not in log, log
    run1 = settle(proxy, key)

    run2 = copy_again(proxy, proxied_mount(bucket, *args), key, dst)
    assert sha256_file(dst) == pattern_sha256(size, 32)
    assert_resumed(f"cp after a clean stop ({how})", size, run1, run2)


@pytest.mark.timeout(90)
def test_rsync_partial_resumes_after_kill_9(seeded_bucket, proxy, proxied_mount, tmp_path):
    size, key = 64 * C, "data.bin"
    bucket = seeded_bucket({key: (size, 33)})
    out = tmp_path / "out"
    out.mkdir()
    args = ("--parallel", str(PARALLEL))

    mount = proxied_mount(bucket, *args)
    proxy.faults.bandwidth = 4 * C
    rsync = spawn(["rsync", "--partial", str(mount.path / key), f"{out}/"])
    wait_progress([rsync], lambda: largest_file(out) >= size // 2, "rsync at 50%")
    mount.kill()
    assert stop(rsync) != 0
    run1 = settle(proxy, key)

    proxy.faults.bandwidth = None
    proxy.reset()
    again = proxied_mount(bucket, *args)
    result = run(["rsync", "--partial", str(again.path / key), f"{out}/"], timeout=60)
    assert result.returncode == 0, result.stderr
    run2 = settle(proxy, key)
    assert sha256_file(out / key) == pattern_sha256(size, 33)
    assert sorted(p.name for p in out.iterdir()) == [key], "no rsync temp file left behind"
    assert_resumed("rsync --partial after kill -9", size, run1, run2)


@pytest.mark.timeout(90)
def test_two_files_in_flight_both_resume(seeded_bucket, proxy, proxied_mount, tmp_path):
    size = 48 * C
    keys = {"a.bin": 34, "b/b.bin": 35}
    bucket = seeded_bucket({key: (size, seed) for key, seed in keys.items()})
    dsts = {key: tmp_path / key.replace("/", "_") for key in keys}
    args = ("--parallel", str(PARALLEL))

    mount = proxied_mount(bucket, *args)
    proxy.faults.bandwidth = 3 * C
    cps = [spawn(["cp", str(mount.path / key), str(dsts[key])]) for key in keys]

    def both_under_way() -> bool:
        done = [p.stat().st_size if p.exists() else 0 for p in dsts.values()]
        return min(done) >= size // 4 and sum(done) >= size

    wait_progress(cps, both_under_way, "both copies at ~50%")
    mount.kill()
    assert all(stop(cp) != 0 for cp in cps)
    settle(proxy)
    run1 = {key: proxy.bytes_sent(key) for key in keys}

    proxy.faults.bandwidth = None
    proxy.reset()
    again = proxied_mount(bucket, *args)
    for key, seed in keys.items():
        result = run(["cp", str(again.path / key), str(dsts[key])], timeout=60)
        assert result.returncode == 0, result.stderr
        assert sha256_file(dsts[key]) == pattern_sha256(size, seed), key
    settle(proxy)
    run2 = {key: proxy.bytes_sent(key) for key in keys}
    for key in keys:
        assert_resumed(f"two files: {key}", size, run1[key], run2[key])
    total1, total2 = sum(run1.values()), sum(run2.values())
    assert total2 <= 2 * size - total1 + IN_FLIGHT_BOUND, "the in-flight bound is global"


@pytest.mark.timeout(90)
def test_resume_after_reboot_like_crash(seeded_bucket, proxy, proxied_mount, tmp_path):
    """kill -9, lazy unmount, sync and drop the page cache: only what reached the disk
    cache counts, and every chunk read back is checked (a torn one would be re-fetched)."""
    size, key = 64 * C, "reboot.bin"
    bucket = seeded_bucket({key: (size, 36)})
    dst = tmp_path / "copy.bin"
    args = ("--parallel", str(PARALLEL))

    mount = proxied_mount(bucket, *args)
    proxy.faults.bandwidth = 4 * C
    cp = spawn(["cp", str(mount.path / key), str(dst)])
    wait_progress([cp], lambda: dst.exists() and dst.stat().st_size >= size // 2, "cp at 50%")
    mount.kill()  # SIGKILL + fusermount3 -uz
    stop(cp)
    assert not mount.mounted
    run1 = settle(proxy, key)
    assert run(["sync"]).returncode == 0
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
    time.sleep(0.2)

    again = proxied_mount(bucket, *args)
    run2 = copy_again(proxy, again, key, dst)
    assert sha256_file(dst) == pattern_sha256(size, 36)
    assert_resumed("cp after reboot-like crash", size, run1, run2)
    assert "Traceback" not in again.log()
