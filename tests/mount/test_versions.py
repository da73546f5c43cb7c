"""--version-at through a real mount on SeaweedFS (which supports bucket versioning,
ListObjectVersions with a delimiter, and ranged GETs by VersionId): the bucket as it was."""

import os
import time

import pytest

from rangefs.config import format_timestamp
from rangefs.fs import xattrs
from tests.mount.test_mount_errors import assert_clean_failure
from tests.support import run, sha256_file
from tests.support.patterns import pattern_sha256, upload_pattern

SIZE = 2 * 1024 * 1024 + 12345  # three 1 MiB chunks, the last short


def versioned_history(s3, bucket):
    """``a`` written three times, ``b`` written with a1 and deleted before a3; returns the
    versionIds of a and two times: T1 (a1 and b) and T2 (a3, b deleted).

    LastModified has a one-second resolution: the PUTs that must be told apart are more
    than a second apart, and the times are taken from the listing, not from this clock."""
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    upload_pattern(s3, bucket, "a", SIZE, seed=1)
    s3.put_object(Bucket=bucket, Key="b", Body=b"b as it was\n")
    time.sleep(1.2)
    upload_pattern(s3, bucket, "a", SIZE, seed=2)
    time.sleep(1.2)
    s3.delete_object(Bucket=bucket, Key="b")
    upload_pattern(s3, bucket, "a", SIZE, seed=3)
    page = s3.list_object_versions(Bucket=bucket)
    versions = sorted((v for v in page["Versions"] if v["Key"] == "a"),
                      key=lambda v: v["LastModified"])  # fmt: skip
    assert len(versions) == 3 and len(page["DeleteMarkers"]) == 1
    b = next(v for v in page["Versions"] if v["Key"] == "b")
    t1 = max(versions[0]["LastModified"], b["LastModified"]).timestamp() + 0.5
    t2 = versions[2]["LastModified"].timestamp() + 0.5
    assert t1 < versions[1]["LastModified"].timestamp()
    return [v["VersionId"] for v in versions], format_timestamp(t1), format_timestamp(t2)


@pytest.mark.timeout(180)
def test_a_mount_as_of_t_reads_the_old_version(make_bucket, s3, proxied_mount, proxy):
    bucket = make_bucket()
    ids, t1, t2 = versioned_history(s3, bucket)

    mount = proxied_mount(bucket, "--version-at", t1)
    assert sorted(os.listdir(mount.path)) == ["a", "b"]
    assert (mount.path / "b").read_bytes() == b"b as it was\n"
    assert sha256_file(mount.path / "a") == pattern_sha256(SIZE, seed=1)
    assert xattrs.read_version(mount.path / "a") == ids[0]
    shown = run(["getfattr", "--only-values", "-n", xattrs.VERSION, str(mount.path / "a")])
    assert shown.returncode == 0 and shown.stdout == ids[0]
    gets = proxy.matching("GET", key="a", bucket=bucket)
    assert len(gets) == 3 and all(f"versionId={ids[0]}" in g.query for g in gets)
    assert all(g.status == 206 and g.range is not None for g in gets)
    mount.unmount()

    proxy.reset()  # a remount over the same cache: the version's chunks are kept by versionId
    mount = proxied_mount(bucket, "--version-at", t1)
    assert sha256_file(mount.path / "a") == pattern_sha256(SIZE, seed=1)
    assert proxy.count("GET", key="a", bucket=bucket) == 0
    mount.unmount()

    mount = proxied_mount(bucket, "-o", f"version_at={t2}")
    assert sorted(os.listdir(mount.path)) == ["a"]  # b's delete marker is older than T2
    assert not (mount.path / "b").exists()
    assert sha256_file(mount.path / "a") == pattern_sha256(SIZE, seed=3)
    assert xattrs.read_version(mount.path / "a") == ids[2]


@pytest.mark.timeout(60)
def test_a_bucket_without_versioning_fails_at_mount(make_bucket, s3, rangefs_mount):
    bucket = make_bucket()
    s3.put_object(Bucket=bucket, Key="a", Body=b"x")
    result, mount = rangefs_mount.try_mount(bucket, "--version-at", "1h")
    assert mount is None
    assert_clean_failure(result, None, f"bucket {bucket!r}", "has no versioning")


@pytest.mark.timeout(60)
def test_denied_version_listing_fails_at_mount(make_bucket, s3, s3server, rangefs_mount):
    bucket = make_bucket()
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    result, mount = rangefs_mount.try_mount(bucket, "--version-at", "1h", env=s3server.denied_env())
    assert mount is None
    assert_clean_failure(result, None, "access denied")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("value", ["yesterday", "2026-11-27T16:45:54", "5 minutes"])
def test_a_bad_time_is_a_usage_error(value, make_bucket, rangefs_mount):
    result, mount = rangefs_mount.try_mount(make_bucket(), "--version-at", value)
    assert mount is None
    assert_clean_failure(result, None, "--version-at", code=2)
