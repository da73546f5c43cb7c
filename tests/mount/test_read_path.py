"""Issue 2: the read path through a real mount, read by real programs.

Objects hold a position-dependent pattern, so a shifted or misaligned read fails; the
counting proxy between rangefs and SeaweedFS proves what was (not) fetched.
"""

import os
import random
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support import mount_stats, run, sha256_file, wait_fully_cached
from tests.support.patterns import pattern_bytes, pattern_sha256, upload_pattern
from tests.support.proxy import asked_bytes, covered

C = 1024 * 1024  # the chunk size the rangefs_mount fixture uses by default
SIZES = {
    "empty.bin": 0,
    "one.bin": 1,
    "chunk-minus-1.bin": C - 1,
    "chunk.bin": C,
    "chunk-plus-1.bin": C + 1,
    "several.bin": 3 * C + 12345,
}


@pytest.fixture
def mixed(make_bucket, s3server):
    """A bucket with every interesting size under ``mixed/`` and some nesting."""
    bucket = make_bucket()
    client = s3server.client()
    for seed, (name, size) in enumerate(SIZES.items()):
        upload_pattern(client, bucket, f"mixed/{name}", size, seed)
    upload_pattern(client, bucket, "mixed/a/b/c/deep.bin", 70_000, 99)
    upload_pattern(client, bucket, "mixed/ünï cødé/ファイル name.txt", 5000, 7)
    upload_pattern(client, bucket, "top level.bin", 2 * C + 3, 42)
    return bucket


@pytest.mark.timeout(120)
def test_cp_every_size_is_byte_identical(mixed, rangefs_mount, tmp_path):
    mount = rangefs_mount(mixed)
    for seed, (name, size) in enumerate(SIZES.items()):
        dst = tmp_path / name
        assert run(["cp", str(mount.path / "mixed" / name), str(dst)]).returncode == 0
        assert dst.stat().st_size == size
        assert sha256_file(dst) == pattern_sha256(size, seed), name
    out = run(["sha256sum", str(mount.path / "top level.bin")]).stdout.split()[0]
    assert out == pattern_sha256(2 * C + 3, 42)


@pytest.mark.timeout(120)
def test_rsync_a_of_a_prefix_is_byte_identical(mixed, rangefs_mount, tmp_path):
    mount = rangefs_mount(f"{mixed}/mixed")
    dst = tmp_path / "copy"
    result = run(["rsync", "-a", f"{mount.path}/", f"{dst}/"], timeout=90)
    assert result.returncode == 0, result.stderr
    copied = sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file())
    assert copied == sorted([*SIZES, "a/b/c/deep.bin", "ünï cødé/ファイル name.txt"])
    for seed, (name, size) in enumerate(SIZES.items()):
        assert sha256_file(dst / name) == pattern_sha256(size, seed)
    assert sha256_file(dst / "a/b/c/deep.bin") == pattern_sha256(70_000, 99)
    assert (dst / "ünï cødé/ファイル name.txt").read_bytes() == pattern_bytes(0, 5000, 7)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("bs", "skip", "count"),
    [(777, 1349, 3000), (4096, 255, 3), (C, 2, 5), (65536 + 3, 15, 40), (1, C - 3, 7)],
)
def test_dd_odd_block_sizes_and_offsets(mixed, rangefs_mount, bs, skip, count):
    mount = rangefs_mount(mixed)
    size = SIZES["several.bin"]
    result = subprocess.run(
        ["dd", f"if={mount.path}/mixed/several.bin", f"bs={bs}", f"skip={skip}", f"count={count}",
         "status=none"],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    start = min(bs * skip, size)
    assert result.stdout == pattern_bytes(start, min(bs * count, size - start), 5)


@pytest.mark.timeout(60)
def test_reads_across_chunk_boundaries(mixed, rangefs_mount):
    mount = rangefs_mount(mixed)
    path = mount.path / "mixed/several.bin"
    size = SIZES["several.bin"]
    with path.open("rb", buffering=0) as f:
        for offset, length in [(C - 10, 20), (2 * C - 1, 2), (C - 5, C + 10), (0, size),
                               (size - 7, 100), (size, 10), (3 * C, 12345)]:  # fmt: skip
            f.seek(offset)
            want = pattern_bytes(offset, max(0, min(length, size - offset)), 5)
            got = b""
            while len(got) < len(want):
                block = f.read(length - len(got))
                if not block:
                    break
                got += block
            assert got == want, (offset, length)


@pytest.mark.timeout(60)
def test_ls_find_stat_and_statfs(mixed, rangefs_mount, s3server):
    mount = rangefs_mount(mixed)
    found = run(["find", str(mount.path)]).stdout.splitlines()
    rel = sorted(os.path.relpath(p, mount.path) for p in found)
    assert "mixed/a/b/c/deep.bin" in rel and "mixed/ünï cødé/ファイル name.txt" in rel
    assert "top level.bin" in rel and "mixed/a/b" in rel
    ls = run(["ls", "-la", str(mount.path / "mixed")])
    assert ls.returncode == 0 and "chunk-plus-1.bin" in ls.stdout
    st = (mount.path / "mixed/several.bin").stat()
    head = s3server.client().head_object(Bucket=mixed, Key="mixed/several.bin")
    assert st.st_size == SIZES["several.bin"]
    assert int(st.st_mtime) == int(head["LastModified"].timestamp())
    assert st.st_nlink == 1 and st.st_blocks == -(-st.st_size // 512) and st.st_blksize > 0
    assert oct(st.st_mode & 0o777) == "0o444"
    dst = (mount.path / "mixed/a").stat()
    assert oct(dst.st_mode & 0o777) == "0o555" and dst.st_nlink >= 2
    df = run(["stat", "-f", str(mount.path)])
    assert df.returncode == 0 and "fuse" in df.stdout.lower()


@pytest.mark.timeout(60)
def test_ls_a_shows_dot_and_dotdot_once(mixed, rangefs_mount):
    """``ls -a`` shows ``.`` and ``..`` once in every directory, the rest of the listing is
    unchanged, and their inode numbers are those of the directory and of its parent."""
    mount = rangefs_mount(mixed)
    dirs = {
        "": ["mixed", "top level.bin"],
        "mixed": sorted([*SIZES, "a", "ünï cødé"]),
        "mixed/a/b": ["c"],
        "mixed/a/b/c": ["deep.bin"],
    }
    for rel, children in dirs.items():
        d = mount.path / rel
        plain = run(["ls", "-1", str(d)])
        assert plain.returncode == 0, plain.stderr
        assert sorted(plain.stdout.splitlines()) == children, rel
        listing = run(["ls", "-a1i", str(d)])
        assert listing.returncode == 0, listing.stderr
        pairs = [line.split(maxsplit=1) for line in listing.stdout.splitlines()]
        names = [name for _, name in pairs]
        assert names.count(".") == 1 and names.count("..") == 1, (rel, names)
        assert sorted(set(names) - {".", ".."}) == children and len(names) == len(children) + 2
        ino = {name: int(number) for number, name in pairs}
        assert ino["."] == d.stat().st_ino == (d / ".").stat().st_ino, rel
        if rel:  # the root's ".." is the directory the mount covers, not in the mount
            assert ino[".."] == d.parent.stat().st_ino == (d / "..").stat().st_ino, rel
        assert sorted(os.listdir(d)) == children


@pytest.mark.timeout(60)
def test_find_and_du_walk_the_tree_once(mixed, rangefs_mount):
    """With ``.`` and ``..`` listed, tree walkers still see every path exactly once."""
    mount = rangefs_mount(f"{mixed}/mixed")
    found = run(["find", ".", "-mindepth", "1"], cwd=mount.path)
    assert found.returncode == 0, found.stderr
    paths = [p.removeprefix("./") for p in found.stdout.splitlines()]
    files = [*SIZES, "a/b/c/deep.bin", "ünï cødé/ファイル name.txt"]
    dirs = ["a", "a/b", "a/b/c", "ünï cødé"]
    assert len(paths) == len(set(paths)) and sorted(paths) == sorted(files + dirs)
    du = run(["du", "-a", "--apparent-size", "-b", "."], cwd=mount.path)
    assert du.returncode == 0, du.stderr
    sizes = {line.split("\t")[1].removeprefix("./"): int(line.split()[0]) for line in
             du.stdout.splitlines()}  # fmt: skip
    assert sizes["."] == sum(SIZES.values()) + 70_000 + 5000


@pytest.mark.timeout(180)
def test_1500_keys_in_one_directory(make_bucket, s3server, rangefs_mount):
    bucket = make_bucket()
    client = s3server.client()
    keys = [f"many/file-{i:05d}.txt" for i in range(1500)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=bucket, Key=k, Body=k.encode()), keys))
    mount = rangefs_mount(bucket)
    names = sorted(os.listdir(mount.path / "many"))
    assert names == sorted(k.split("/")[1] for k in keys)
    assert (mount.path / "many/file-01499.txt").read_bytes() == b"many/file-01499.txt"
    assert run(["ls", "-la", str(mount.path / "many")]).stdout.count("file-") == 1500


@pytest.mark.timeout(60)
def test_object_and_prefix_with_the_same_name(make_bucket, s3server, rangefs_mount):
    """Documented: the directory wins, the object of the same name is hidden."""
    bucket = make_bucket()
    client = s3server.client()
    client.put_object(Bucket=bucket, Key="a", Body=b"file a")
    client.put_object(Bucket=bucket, Key="a/b", Body=b"file b")
    client.put_object(Bucket=bucket, Key="marker-only/", Body=b"")
    mount = rangefs_mount(bucket)
    assert (mount.path / "a").is_dir()
    assert (mount.path / "a/b").read_bytes() == b"file b"
    assert sorted(os.listdir(mount.path)) == ["a", "marker-only"]
    assert (mount.path / "marker-only").is_dir() and os.listdir(mount.path / "marker-only") == []


@pytest.mark.timeout(90)
def test_odd_keys_are_hidden_never_a_crash(moto_server, make_bucket, rangefs_mount):
    bucket = make_bucket(server=moto_server)
    client = moto_server.client()
    odd = ["a//b", "./dot", "../escape", "x/./y", "x/../../z", "long/" + "n" * 256, "/lead"]
    for key in [*odd, "ok.txt", "x/fine.txt", "long/" + "n" * 255]:
        client.put_object(Bucket=bucket, Key=key, Body=key.encode())
    mount = rangefs_mount(bucket, endpoint=moto_server.endpoint_url, env=moto_server.env())
    found = run(["find", str(mount.path)])
    assert found.returncode == 0, found.stderr
    rel = sorted(os.path.relpath(p, mount.path) for p in found.stdout.splitlines())
    assert rel == sorted([".", "a", "long", "long/" + "n" * 255, "ok.txt", "x", "x/fine.txt"])
    assert os.listdir(mount.path / "a") == []
    assert (mount.path / "ok.txt").read_bytes() == b"ok.txt"
    assert mount.alive and "Traceback" not in mount.log()


WRITES = [
    ["touch", "{m}/new"], ["sh", "-c", "echo x > {m}/top.txt"], ["rm", "{m}/top.txt"],
    ["mkdir", "{m}/dir"], ["rmdir", "{m}/sub"], ["mv", "{m}/top.txt", "{m}/moved"],
    ["chmod", "777", "{m}/top.txt"], ["truncate", "-s", "0", "{m}/top.txt"],
    ["ln", "-s", "top.txt", "{m}/link"], ["ln", "{m}/top.txt", "{m}/hard"],
    ["touch", "-d", "2001-01-01", "{m}/top.txt"], ["mknod", "{m}/fifo", "p"],
    ["setfattr", "-n", "user.x", "-v", "1", "{m}/top.txt"],
]  # fmt: skip


@pytest.mark.timeout(90)
def test_every_write_is_refused_with_erofs(make_bucket, s3server, rangefs_mount):
    bucket = make_bucket()
    s3server.client().put_object(Bucket=bucket, Key="top.txt", Body=b"keep me")
    s3server.client().put_object(Bucket=bucket, Key="sub/x", Body=b"x")
    mount = rangefs_mount(bucket)
    for cmd in WRITES:
        argv = [a.format(m=mount.path) for a in cmd]
        result = run(argv)
        assert result.returncode != 0, argv
        assert "Read-only file system" in result.stderr, (argv, result.stderr)
    with pytest.raises(OSError) as info:
        os.open(mount.path / "top.txt", os.O_WRONLY)
    assert info.value.errno == 30  # EROFS
    assert (mount.path / "top.txt").read_bytes() == b"keep me"
    options = next(
        line.split()[3] for line in Path("/proc/mounts").read_text().splitlines()
        if line.split()[1] == str(mount.path)
    )  # fmt: skip
    assert "ro" in options.split(",")


@pytest.mark.timeout(120)
def test_gets_are_chunk_aligned_and_cached_reads_send_none(mixed, proxy, rangefs_mount, tmp_path):
    cache = tmp_path / "cache"
    mount = rangefs_mount(mixed, endpoint=proxy.url, cache_dir=cache)
    size = SIZES["several.bin"]
    key = "mixed/several.bin"
    assert sha256_file(mount.path / key) == pattern_sha256(size, 5)
    gets = [r for r in proxy.records if r.method == "GET" and r.key == key]
    ranges = sorted(r.range for r in gets)
    want = sorted(f"bytes={k * C}-{min((k + 1) * C, size) - 1}" for k in range(4))
    assert ranges == want, "one GET per chunk, chunk-aligned"
    assert all(r.status == 206 and r.if_match for r in gets)
    assert proxy.bytes_sent(key) == size

    proxy.reset()
    assert sha256_file(mount.path / key) == pattern_sha256(size, 5)
    run(["dd", f"if={mount.path / key}", "of=/dev/null", "bs=4096", "skip=300", "count=9"])
    assert proxy.count("GET", key=key) == 0

    mount.unmount()
    again = rangefs_mount(mixed, endpoint=proxy.url, cache_dir=cache)
    proxy.reset()
    assert sha256_file(again.path / key) == pattern_sha256(size, 5)
    assert proxy.count("GET", key=key) == 0, "served from the disk cache after a remount"


@pytest.mark.timeout(120)
def test_random_reads_get_each_chunk_whole_and_each_byte_once(
    make_bucket, s3server, proxy, rangefs_mount
):
    bucket = make_bucket()
    size = 8 * C + 777
    upload_pattern(s3server.client(), bucket, "random.bin", size, 31)
    mount = rangefs_mount(bucket, endpoint=proxy.url)
    path = mount.path / "random.bin"
    rng = random.Random(7)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # as fio: no kernel read-ahead
        for _ in range(150):
            offset = rng.randrange(0, size - 65536) // 4096 * 4096
            assert os.pread(fd, 65536, offset) == pattern_bytes(offset, 65536, 31)
    finally:
        os.close(fd)
    wait_fully_cached(path)  # the chunks around the reads were fetched whole
    gets = [r.range for r in proxy.records if r.method == "GET" and r.key == "random.bin"]
    assert covered(gets) == [(0, size)]
    assert asked_bytes(gets) == size, "each byte fetched once"
    assert len(gets) <= 3 * 9, "a few GETs per chunk, not one per read"


@pytest.mark.timeout(120)
def test_concurrent_readers_of_one_missing_chunk_make_one_get(mixed, proxy, rangefs_mount):
    mount = rangefs_mount(mixed, endpoint=proxy.url)
    key = "mixed/several.bin"
    proxy.faults.latency = 0.5  # all readers arrive while the GET is in flight

    def read_second_chunk(i: int) -> bytes:
        with open(mount.path / key, "rb", buffering=0) as f:
            f.seek(C + 1000 * i)
            return f.read(1000)

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(read_second_chunk, range(10)))
    for i, data in enumerate(results):
        assert data == pattern_bytes(C + 1000 * i, 1000, 5)
    gets = [r.range for r in proxy.records if r.method == "GET" and r.key == key]
    assert gets.count(f"bytes={C}-{2 * C - 1}") == 1


@pytest.mark.timeout(60)
def test_missing_key_is_enoent(make_bucket, s3server, rangefs_mount):
    bucket = make_bucket()
    mount = rangefs_mount(bucket)
    result = run(["cat", str(mount.path / "nope.txt")])
    assert result.returncode == 1 and "No such file or directory" in result.stderr


@pytest.mark.timeout(120)
def test_persistent_server_failure_is_eio_in_bounded_time(mixed, proxy, rangefs_mount):
    mount = rangefs_mount(mixed, "--retries", "3", endpoint=proxy.url)
    proxy.faults.error_rate = 1.0
    result = run(["cat", str(mount.path / "mixed/chunk.bin")], timeout=60)
    assert result.returncode == 1 and "Input/output error" in result.stderr
    gets = proxy.count("GET", key="mixed/chunk.bin")
    assert gets in (3, 6), "3 attempts per read (the kernel may retry a failed read-ahead once)"
    log = mount.log()
    assert re.search(r"failed GET s3://\S+/mixed/chunk.bin bytes=0-1048575: .*503", log), log
    proxy.faults.error_rate = 0.0
    assert sha256_file(mount.path / "mixed/chunk.bin") == pattern_sha256(C, 3)
    assert mount.alive


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("args", "lookups"), [((), 1), (("--negative-metadata-ttl", "0"), 5)])
def test_probes_for_a_missing_name_stop_at_the_kernel(seeded_bucket, rangefs_mount, args, lookups):
    """A shell or a player probing for a name that does not exist: the first probe asks the
    daemon, the kernel answers the next ones itself (a negative entry), unless told not to."""
    bucket = seeded_bucket({"here.bin": (1000, 5)})
    mount = rangefs_mount(bucket, *args)
    before = mount_stats(mount)["lookups"]
    for _ in range(5):
        result = run(["stat", str(mount.path / "missing.srt")])
        assert result.returncode == 1 and "No such file or directory" in result.stderr
    assert mount_stats(mount)["lookups"] - before == lookups
    assert run(["stat", str(mount.path / "here.bin")]).returncode == 0
