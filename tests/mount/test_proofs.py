"""Issue 10: one byte inverted on the wire (lengths and headers untouched) never gives a
``cp`` that exits 0 with wrong bytes. The read of the last bytes waits for S3's proof (the
ETag: MD5 of a single-part object, part MD5s of a multipart one with 8 MiB parts read in
8 MiB chunks); a one-shot flip is repaired by one refetch, a persistent one is an EIO and
leaves nothing in the cache."""

import hashlib
import io
import subprocess

import pytest

from rangefs.fs import xattrs
from tests.support import cp_and_hash, rangefs_cli, xattr_value
from tests.support.patterns import pattern_bytes
from tests.support.proxy import asked_bytes

MiB = 1024 * 1024
KINDS = {
    # kind: (size, chunk size, proof)
    "single": (3 * MiB + 100 * 1024, "1M", "etag-md5"),
    "multipart": (2 * 8 * MiB + 100 * 1024, "8M", "etag-multipart-md5"),
}


def upload(s3, bucket: str, kind: str, data: bytes) -> str:
    if kind == "single":
        s3.put_object(Bucket=bucket, Key="f.bin", Body=data)
    else:
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB)
        s3.upload_fileobj(io.BytesIO(data), bucket, "f.bin", Config=config)
    etag = s3.head_object(Bucket=bucket, Key="f.bin")["ETag"]
    assert etag.endswith('-3"') == (kind == "multipart"), etag
    return etag


@pytest.fixture
def flip_setup(request, make_bucket, s3, rangefs_mount, proxy):
    kind = request.param
    size, chunk, proof = KINDS[kind]
    data = pattern_bytes(0, size, 101)
    bucket = make_bucket()
    upload(s3, bucket, kind, data)
    mount = rangefs_mount(bucket, "--metadata-ttl", "0", endpoint=proxy.url, chunk_size=chunk)
    chunk_bytes = int(chunk[:-1]) * MiB
    last_start = (size - 1) // chunk_bytes * chunk_bytes
    return mount, data, proof, chunk_bytes, last_start


def cp(mount, tmp_path, name: str) -> tuple[subprocess.CompletedProcess[str], str | None]:
    return cp_and_hash(mount.path / "f.bin", tmp_path / name)


def verified(mount) -> str:
    return xattr_value(mount.path / "f.bin", xattrs.VERIFIED)


@pytest.mark.parametrize("flip_setup", list(KINDS), indirect=True)
def test_a_one_shot_flip_is_refetched_and_cp_gets_the_right_bytes(flip_setup, proxy, tmp_path):
    mount, data, proof, _chunk, last_start = flip_setup
    assert verified(mount).startswith(f"{proof} pending")
    proxy.flip(50, key="f.bin", range_start=last_start, times=1)
    result, digest = cp(mount, tmp_path, "one")
    assert result.returncode == 0, result.stderr
    assert digest == hashlib.sha256(data).hexdigest()
    assert [r.fault for r in proxy.matching("GET", "f.bin")].count("flip:50") == 1
    ranges = [r.range for r in proxy.matching("GET", "f.bin", ranged_only=True)]
    assert asked_bytes(ranges) == 2 * len(data)  # every byte fetched, then refetched once
    assert verified(mount).startswith(f"{proof} verified")
    assert "proof failed" in mount.log()
    status = rangefs_cli("status", str(mount.path / "f.bin"), env=mount.env)
    assert status.returncode == 0, status.stderr
    assert f"proof   {proof}, verified" in status.stdout


@pytest.mark.parametrize("flip_setup", list(KINDS), indirect=True)
def test_a_persistent_flip_fails_cp_and_nothing_bad_is_kept(flip_setup, proxy, tmp_path):
    mount, data, proof, _, last_start = flip_setup
    proxy.flip(50, key="f.bin", range_start=last_start, times=None)
    result, _ = cp(mount, tmp_path, "bad")
    assert result.returncode != 0
    assert "Input/output error" in result.stderr
    log = mount.log()
    assert "proof failed twice" in log and "s3://" in log and "expected" in log
    assert set(xattrs.read_chunks(mount.path / "f.bin")[1]) == {False}  # nothing kept
    assert verified(mount).startswith(f"{proof} pending")
    proxy.clear_faults()
    result, digest = cp(mount, tmp_path, "good")
    assert result.returncode == 0, result.stderr
    assert digest == hashlib.sha256(data).hexdigest()
    assert verified(mount).startswith(f"{proof} verified")
