"""Issue 11, item 2: a mount whose S3 cannot be reached serves what it has.

Through the proxy, S3 goes away in the two ways a network fails: the endpoint refuses
connections (``proxy.unplug()``) or never answers (``Faults.hang``: the client's read timeout
fires). Either way, once a request has failed after its retries, the mount is offline: cached
files read byte-identical, uncached bytes fail with EIO at once, listings are the last ones
seen (older than ``--metadata-ttl``: served anyway), unknown names are ENOENT, the root
xattr says ``offline``. When the proxy is back, the mount is online again within seconds,
by itself.
"""

import re
import time
import urllib.request
from pathlib import Path

import pytest

from rangefs.fs import xattrs
from tests.support import Mount, forget_pages, mount_stats, run, wait_for, wait_fully_cached
from tests.support.patterns import pattern_sha256, upload_pattern
from tests.support.proxy import CountingProxy
from tests.support.servers import free_port

C = 1024 * 1024
FILES = {  # key: (size, seed)
    "dir/cached.bin": (3 * C + 5, 1),
    "dir/uncached.bin": (2 * C, 2),
    "dir/sub/deep.txt": (100, 3),
    "top.txt": (10, 4),
}
TTL = 1.0  # --metadata-ttl (seconds; also the kernel's): 0 would list S3 at every read
# Short timeouts and retries: a request to an unreachable S3 gives up in about 2 s.
QUICK = ("--metadata-ttl", str(TTL), "--connect-timeout", "1", "--read-timeout", "1",
         "--retries", "2", "--retry-seconds", "2")  # fmt: skip
EIO_BOUND = 10.0  # seconds; an uncached read offline takes milliseconds (target: <= 5 s)
BACK_ONLINE_BOUND = 15.0  # seconds after the proxy is back; the probe waits at most 5 s


def listings(mount: Mount) -> tuple[str, str]:
    """What ``find`` and ``ls -laR`` print for the whole tree (names, sizes, times, modes)."""
    found = run(["find", str(mount.path), "-printf", "%P %s %T@ %m %y\n"])
    listed = run(["ls", "-laR", "--time-style=full-iso", "dir"], cwd=mount.path)
    assert found.returncode == 0 and listed.returncode == 0, (found.stderr, listed.stderr)
    return found.stdout, listed.stdout


def below_root(listed: tuple[str, str]) -> tuple[list[str], str]:
    """:func:`listings` without the root's own lines (its mtime is the mount's start)."""
    found, tree = listed
    return (
        [line for line in found.splitlines() if not line.startswith(" ")],
        [line for line in tree.splitlines() if not line.endswith(" ..")],
    )


def online(mount: Mount) -> bool:
    return xattrs.read_online(mount.path)


def online_gauge(port: int) -> float:
    """``rangefs_online`` as the Prometheus endpoint serves it."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        found = re.search(r"^rangefs_online (\S+)$", resp.read().decode(), re.M)
    assert found, "rangefs_online missing from /metrics"
    return float(found.group(1))


def sha256sum(path: Path) -> str:
    result = run(["sha256sum", str(path)])
    assert result.returncode == 0, result.stderr
    return result.stdout.split()[0]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("outage", ["refused", "timeout"])
def test_offline_serves_the_cache_fails_the_rest_fast_and_comes_back(
    outage, make_bucket, s3, proxy: CountingProxy, proxied_mount
):
    bucket = make_bucket()
    for key, (size, seed) in FILES.items():
        upload_pattern(s3, bucket, key, size, seed)
    port = free_port()
    mount = proxied_mount(bucket, *QUICK, "--metrics-addr", f"127.0.0.1:{port}")
    cached, uncached = mount.path / "dir/cached.bin", mount.path / "dir/uncached.bin"
    assert sha256sum(cached) == pattern_sha256(*FILES["dir/cached.bin"])
    wait_fully_cached(cached)
    before = listings(mount)
    assert online(mount) and online_gauge(port) == 1

    if outage == "refused":
        proxy.unplug()
    else:
        proxy.set_faults(hang=True)
    time.sleep(TTL)  # every listing (and kernel entry) shown from now on is older than the TTL
    started = time.monotonic()
    result = run(["cat", str(uncached)], timeout=60)
    assert result.returncode == 1 and "Input/output error" in result.stderr, result.stderr
    assert not online(mount), "a request failed as unreachable after its retries: offline"
    assert online_gauge(port) == 0
    gave_up = time.monotonic() - started
    sent = len(proxy.records)

    # Offline: the cache and the last listings, nothing waits for S3.
    forget_pages(cached)
    assert sha256sum(cached) == pattern_sha256(*FILES["dir/cached.bin"])
    started = time.monotonic()
    result = run(["cat", str(uncached)], timeout=60)
    eio = time.monotonic() - started
    assert result.returncode == 1 and "Input/output error" in result.stderr, result.stderr
    assert eio < EIO_BOUND, f"an uncached read offline took {eio:.1f} s"
    assert listings(mount) == before
    result = run(["stat", str(mount.path / "dir/no-such-file")])
    assert result.returncode == 1 and "No such file or directory" in result.stderr
    probes = proxy.records[sent:]
    assert all(r.key is None and "max-keys=1" in r.query for r in probes), [
        (r.method, r.key, r.query) for r in probes
    ]
    stats = mount_stats(mount)
    assert stats["online"] == 0 and stats["went_offline"] == 1 and stats["offline_refused"] > 0

    if outage == "refused":
        proxy.plug()
    else:
        proxy.set_faults(hang=False)
    back = time.monotonic()
    wait_for(lambda: online(mount), timeout=BACK_ONLINE_BOUND, what="the mount back online")
    recovered = time.monotonic() - back
    assert online_gauge(port) == 1
    assert sha256sum(uncached) == pattern_sha256(*FILES["dir/uncached.bin"])
    log = mount.log()
    assert len(re.findall(r"offline: S3 at \S+ cannot be reached", log)) == 1, log
    assert len(re.findall(r"online: S3 at \S+ answers again after", log)) == 1, log
    print(
        f"\n[figures] {outage}: offline after {gave_up:.1f} s (retries), uncached read offline: "
        f"EIO in {eio * 1000:.0f} ms, back online {recovered:.1f} s after S3 returned"
    )


@pytest.mark.timeout(120)
def test_allow_offline_mounts_from_the_index_when_s3_cannot_be_reached(
    make_bucket, s3, proxy: CountingProxy, proxied_mount, rangefs_mount, tmp_path
):
    bucket = make_bucket()
    for key, (size, seed) in FILES.items():
        upload_pattern(s3, bucket, key, size, seed)
    first = proxied_mount(bucket, *QUICK)
    assert sha256sum(first.path / "dir/cached.bin") == pattern_sha256(*FILES["dir/cached.bin"])
    wait_fully_cached(first.path / "dir/cached.bin")
    before = listings(first)
    first.unmount()

    proxy.unplug()  # (without --allow-offline: test_mount_errors, "cannot reach S3")
    result, mount = rangefs_mount.try_mount(
        bucket, *QUICK, "--allow-offline", endpoint=proxy.url, cache_dir=tmp_path / "other"
    )
    assert mount is None and result.returncode == 1, result.stderr
    why = "--allow-offline needs a listing of s3://"
    assert result.stderr.count("\n") == 1 and why in result.stderr, result.stderr

    result, mount = rangefs_mount.try_mount(
        bucket, *QUICK, "--allow-offline", endpoint=proxy.url, cache_dir=tmp_path / "cache"
    )
    assert mount is not None and result.returncode == 0, result.stderr
    said = r"S3 cannot be reached \(.*\): mounting s3://\S+ offline \(--allow-offline\)"
    assert re.search(said, result.stderr) and re.search(said, mount.log()), result.stderr
    assert not online(mount)
    cached, uncached = mount.path / "dir/cached.bin", mount.path / "dir/uncached.bin"
    assert sha256sum(cached) == pattern_sha256(*FILES["dir/cached.bin"])
    assert below_root(listings(mount)) == below_root(before)
    started = time.monotonic()
    result = run(["cat", str(uncached)], timeout=60)
    assert result.returncode == 1 and "Input/output error" in result.stderr, result.stderr
    assert time.monotonic() - started < EIO_BOUND

    proxy.plug()
    wait_for(lambda: online(mount), timeout=BACK_ONLINE_BOUND, what="the mount online")
    assert sha256sum(uncached) == pattern_sha256(*FILES["dir/uncached.bin"])
    assert mount_stats(mount)["went_offline"] == 0
