"""Issue 4 behaviours that are not speeds: seeks fetch few chunks, the page cache serves
re-reads, memory stays within its budget whatever the number of readers."""

import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support import run
from tests.support.patterns import pattern_sha256, upload_pattern

MiB = 1024 * 1024


@pytest.fixture(scope="session")
def mp4_file(tmp_path_factory):
    """About 20 MiB of H.264 with its index (moov) at the END, one keyframe a second."""
    if not shutil.which("ffmpeg"):
        pytest.fail("ffmpeg is not installed (scripts/install.sh installs it)")
    path = tmp_path_factory.mktemp("media") / "video.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=640x360:rate=30",
         "-f", "lavfi", "-i", "sine", "-t", "40", "-c:v", "libx264", "-preset", "ultrafast",
         "-b:v", "4M", "-g", "30", "-c:a", "aac", str(path)],
        check=True, timeout=120,
    )  # fmt: skip
    with path.open("rb") as f:
        head = f.read(64)
    assert b"mdat" in head or b"moov" not in head, "moov must not be at the start"
    return path


def chunks_fetched(proxy, key):
    return {r.range for r in proxy.records if r.method == "GET" and r.key == key and r.range}


@pytest.mark.timeout(180)
def test_ffprobe_and_ffmpeg_seek_fetch_only_a_few_chunks(
    mp4_file, make_bucket, s3server, proxy, rangefs_mount
):
    bucket = make_bucket()
    s3server.client().upload_file(str(mp4_file), bucket, "video.mp4")
    size = mp4_file.stat().st_size
    total_chunks = -(-size // MiB)
    mount = rangefs_mount(bucket, endpoint=proxy.url)
    video = mount.path / "video.mp4"

    probe = run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json",
                 str(video)], timeout=60)  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    assert 39 < float(json.loads(probe.stdout)["format"]["duration"]) < 41
    probed = chunks_fetched(proxy, "video.mp4")
    assert len(probed) <= 4, f"ffprobe fetched {len(probed)} of {total_chunks} chunks"

    seek = run(["ffmpeg", "-v", "error", "-ss", "20", "-i", str(video), "-frames:v", "1",
                "-f", "null", "-"], timeout=60)  # fmt: skip
    assert seek.returncode == 0, seek.stderr
    sought = chunks_fetched(proxy, "video.mp4") - probed
    assert len(sought) <= 4, f"ffmpeg -ss fetched {len(sought)} more of {total_chunks} chunks"
    assert proxy.bytes_sent("video.mp4") <= 8 * MiB


@pytest.mark.timeout(120)
def test_a_second_read_in_the_same_mount_is_served_by_the_page_cache(
    make_bucket, s3server, rangefs_mount
):
    """A re-open of an unchanged file keeps the kernel's page cache (``keep_cache``).

    The kernel may still reclaim those pages under memory pressure, or another process on a
    shared machine may drop caches between two reads: the re-read is tried three times, and
    one that never reaches the daemon is the proof. Without ``keep_cache`` every re-open
    drops the pages, so all three would reach it.
    """
    bucket = make_bucket()
    upload_pattern(s3server.client(), bucket, "f.bin", 16 * MiB, 3)
    mount = rangefs_mount(bucket)
    path = mount.path / "f.bin"

    def daemon_reads():
        return json.loads(os.getxattr(mount.path, "user.rangefs.stats"))["reads"]

    def checksum() -> str:
        return run(["sha256sum", str(path)]).stdout.split()[0]

    assert checksum() == pattern_sha256(16 * MiB, 3)
    assert daemon_reads() > 0
    reached = []
    for _ in range(3):
        before = daemon_reads()
        assert checksum() == pattern_sha256(16 * MiB, 3)
        reached.append(daemon_reads() - before)
        if reached[-1] == 0:
            break
    assert reached[-1] == 0, f"every re-read reached the daemon: {reached} reads"


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.timeout(180)
def test_memory_stays_bounded_with_eight_concurrent_readers(
    make_bucket, s3server, rangefs_mount, tmp_path
):
    """8 readers of 32 MiB files: unbounded buffering would hold ~256 MiB of chunks."""
    bucket = make_bucket()
    client = s3server.client()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: upload_pattern(client, bucket, f"r{i}.bin", 32 * MiB, i),
                      range(8)))  # fmt: skip
    mount = rangefs_mount(bucket, "--memory-limit", "48M", chunk_size="4M")

    def copy(i):
        dst = tmp_path / f"r{i}.bin"
        assert run(["cp", str(mount.path / f"r{i}.bin"), str(dst)], timeout=120).returncode == 0
        return run(["sha256sum", str(dst)]).stdout.split()[0] == pattern_sha256(32 * MiB, i)

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(copy, range(8)))
    peak = peak_rss_kib(mount.pid) // 1024
    assert peak <= 200, f"daemon peak RSS {peak} MiB with a 48 MiB chunk budget"
