"""Issue 10, item 1, from outside: objects S3 keeps an additional checksum for are checked
against it through a real mount (SeaweedFS, through the counting proxy), with ``cp`` and
``sha256sum``. Each object here is one its ETag cannot prove on this mount (8 MiB parts read
in 4 MiB chunks), or a large single-part one (``--proofs auto`` asks for its checksum):
right bytes pass and the xattr names the checksum; a byte inverted once on the wire is
refetched; inverted every time, ``cp`` fails."""

import hashlib
import io
import subprocess

import pytest
from boto3.s3.transfer import TransferConfig

from rangefs.fs import xattrs
from tests.support import cp_and_hash, rangefs_cli, run, sha256_file, xattr_value
from tests.support.patterns import pattern_bytes

MiB = 1024 * 1024
KINDS = {
    # kind: (size, upload part size or None, algorithm, chunk size, what the xattr starts with)
    "crc32c-composite": (2 * 8 * MiB + 100 * 1024, 8 * MiB, "CRC32C", "4M",
                         f"crc32c-composite verified (3 parts of {8 * MiB} B)"),
    "crc64nvme-full": (2 * 8 * MiB + 100 * 1024, 8 * MiB, "CRC64NVME", "4M", "crc64nvme verified"),
    "sha256-single": (16 * MiB + 100, None, "SHA256", "1M", "sha256 verified"),
}  # fmt: skip


@pytest.fixture
def checksum_setup(request, make_bucket, s3, rangefs_mount, proxy):
    kind = request.param
    size, part, algorithm, chunk, shown = KINDS[kind]
    data = pattern_bytes(0, size, 103)
    bucket = make_bucket()
    if part is None:
        s3.put_object(Bucket=bucket, Key="f.bin", Body=data, ChecksumAlgorithm=algorithm)
    else:
        config = TransferConfig(multipart_threshold=part, multipart_chunksize=part)
        extra = {"ChecksumAlgorithm": algorithm}
        s3.upload_fileobj(io.BytesIO(data), bucket, "f.bin", Config=config, ExtraArgs=extra)
    mount = rangefs_mount(bucket, "--metadata-ttl", "0", endpoint=proxy.url, chunk_size=chunk)
    chunk_bytes = int(chunk[:-1]) * MiB
    last_start = (size - 1) // chunk_bytes * chunk_bytes
    return mount, data, shown, last_start


def cp(mount, tmp_path, name: str) -> tuple[subprocess.CompletedProcess[str], str | None]:
    return cp_and_hash(mount.path / "f.bin", tmp_path / name)


def verified(mount) -> str:
    return xattr_value(mount.path / "f.bin", xattrs.VERIFIED)


@pytest.mark.parametrize("checksum_setup", list(KINDS), indirect=True)
def test_right_bytes_pass_and_the_checksum_is_named(checksum_setup, proxy, tmp_path):
    mount, data, shown, _ = checksum_setup
    result, digest = cp(mount, tmp_path, "copy")
    assert result.returncode == 0, result.stderr
    assert digest == hashlib.sha256(data).hexdigest()
    assert verified(mount) == shown
    heads = [r for r in proxy.matching("HEAD", "f.bin") if r.headers.get("x-amz-checksum-mode")]
    assert len(heads) == 1  # one HEAD with ChecksumMode for the version, none per read
    parts_lists = [r for r in proxy.matching("GET", "f.bin") if "attributes" in r.query]
    assert len(parts_lists) == ("composite" in shown)  # GetObjectAttributes: the part sizes
    status = rangefs_cli("status", str(mount.path / "f.bin"), env=mount.env)
    assert status.returncode == 0, status.stderr
    assert f"proof   {shown.split()[0]}, verified" in status.stdout


FLIPPED = ["crc32c-composite", "crc64nvme-full"]


@pytest.mark.parametrize("checksum_setup", FLIPPED, indirect=True)
def test_a_one_shot_flip_is_refetched_and_cp_gets_the_right_bytes(checksum_setup, proxy, tmp_path):
    mount, data, shown, last_start = checksum_setup
    proxy.flip(50, key="f.bin", range_start=last_start, times=1)
    result, digest = cp(mount, tmp_path, "one")
    assert result.returncode == 0, result.stderr
    assert digest == hashlib.sha256(data).hexdigest()
    assert [r.fault for r in proxy.matching("GET", "f.bin")].count("flip:50") == 1
    assert "proof failed" in mount.log()
    assert verified(mount) == shown


@pytest.mark.parametrize("checksum_setup", FLIPPED, indirect=True)
def test_a_persistent_flip_fails_cp_and_nothing_bad_is_kept(checksum_setup, proxy, tmp_path):
    mount, data, shown, last_start = checksum_setup
    proxy.flip(50, key="f.bin", range_start=last_start, times=None)
    result, _ = cp(mount, tmp_path, "bad")
    assert result.returncode != 0
    assert "Input/output error" in result.stderr
    assert "proof failed twice" in mount.log()
    assert set(xattrs.read_chunks(mount.path / "f.bin")[1]) == {False}  # nothing kept
    proxy.clear_faults()
    result, digest = cp(mount, tmp_path, "good")
    assert result.returncode == 0, result.stderr
    assert digest == hashlib.sha256(data).hexdigest()
    assert verified(mount) == shown


@pytest.mark.timeout(180)
def test_moto_objects_are_proven_by_their_checksums(moto_server, make_bucket, rangefs_mount):
    """The second server: moto sends checksums without their type. Single-part objects of 16
    chunks (``--proofs auto`` asks) are checked against their SHA256 and CRC64NVME."""
    bucket = make_bucket(server=moto_server)
    client = moto_server.client()
    objects = {"sha.bin": ("SHA256", "sha256"), "crc.bin": ("CRC64NVME", "crc64nvme")}
    datas = {}
    for seed, (name, (algorithm, _)) in enumerate(objects.items(), start=104):
        datas[name] = pattern_bytes(0, 16 * MiB, seed)
        client.put_object(Bucket=bucket, Key=name, Body=datas[name], ChecksumAlgorithm=algorithm)
    mount = rangefs_mount(
        bucket, endpoint=moto_server.endpoint_url, env=moto_server.env(), chunk_size="1M"
    )
    for name, (_, kind) in objects.items():
        assert sha256_file(mount.path / name) == hashlib.sha256(datas[name]).hexdigest(), name
        shown = run(["getfattr", "-n", xattrs.VERIFIED, "--only-values", str(mount.path / name)])
        assert shown.stdout == f"{kind} verified", shown
