"""S3's additional checksums on the read path (issue 10, item 1): objects whose ETag proves
nothing, or large ones, are checked against the CRC/SHA checksum S3 keeps, learned by one
HEAD per version (none after a remount: the checkpoint records the proof); a byte inverted
on the wire is caught, refetched once, and a persistent fault is an EIO."""

import errno
import logging

import pytest

from rangefs.errors import ProofFailed
from rangefs.fs import xattrs
from tests.core.helpers import CHUNK, lookup_path, open_path, read_all, settle

SIZE = 6 * CHUNK + 100  # seven chunks
OPAQUE = '"not-an-md5"'  # an ETag that proves nothing: only the checksum can
LAST_CHUNK_BYTE = 6 * CHUNK + 50


async def xattr(core, name: str = xattrs.VERIFIED) -> str:
    ino = (await lookup_path(core.fs, "f")).ino
    return (await core.fs.getxattr(ino, name)).decode()


# (put arguments, the proof kind it gives)
CHECKSUMS = {
    "crc32c-full": ({"checksum": "crc32c"}, "crc32c verified"),
    "crc64nvme-full": ({"checksum": "crc64nvme"}, "crc64nvme verified"),
    "sha256-single": ({"checksum": "sha256"}, "sha256 verified"),
    "crc32-composite": (
        {"checksum": "crc32", "composite": True, "part_size": 2 * CHUNK},
        f"crc32-composite verified (4 parts of {2 * CHUNK} B)",
    ),
    "sha1-composite-unlisted": (
        {"checksum": "sha1", "composite": True, "part_size": CHUNK, "list_parts": False},
        f"sha1-composite verified (7 parts of {CHUNK} B)",
    ),
}


@pytest.mark.parametrize("case", list(CHECKSUMS))
async def test_an_object_only_its_checksum_proves_is_verified_and_checkpointed(env, case):
    args, shown = CHECKSUMS[case]
    data = env.store.put("f", size=SIZE, seed=80, etag=OPAQUE, **args)
    async with env.core() as core:
        fh = await open_path(core.fs, "f")
        assert await read_all(core.fs, fh, SIZE) == data
        await settle(core)
        assert env.store.get_count("f") == 7
        assert core.stats.proofs_passed == 1 and core.stats.proofs_failed == 0
        assert await xattr(core) == shown
        assert env.store.calls["checksums"] == 1  # one HEAD, for the first read
    async with env.core() as core:  # a remount: the recorded proof, no HEAD, no hashing
        assert await xattr(core) == shown
        fh = await open_path(core.fs, "f")
        assert await read_all(core.fs, fh, SIZE) == data
        assert env.store.calls["checksums"] == 1 and core.stats.proofs_passed == 0


@pytest.mark.parametrize("case", ["crc32c-full", "crc32-composite", "sha256-single"])
async def test_one_bad_response_is_refetched_and_a_persistent_one_is_an_eio(env, case, caplog):
    args, shown = CHECKSUMS[case]
    data = env.store.put("f", size=SIZE, seed=81, etag=OPAQUE, **args)
    env.store.flip("f", LAST_CHUNK_BYTE, times=1)
    async with env.core() as core:
        fh = await open_path(core.fs, "f")
        assert await read_all(core.fs, fh, SIZE) == data
        await settle(core)
        assert env.store.get_count("f") == 14  # every chunk fetched once more
        assert core.stats.proofs_failed == 1 and await xattr(core) == shown
    env.store.flip("f", LAST_CHUNK_BYTE)
    caplog.set_level(logging.WARNING)
    async with env.core(cache_dir=env.tmp_path / "other-cache") as core:
        fh = await open_path(core.fs, "f")
        with pytest.raises(ProofFailed) as exc:
            await read_all(core.fs, fh, SIZE)
        assert exc.value.errno == errno.EIO
        await settle(core)
        assert await xattr(core, xattrs.CHUNKS) == f"{CHUNK} ......."  # nothing kept
        kind = shown.split()[0]
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and f"s3://bucket/f bytes=0-{SIZE - 1} {kind} expected" in errors[0]


async def test_a_listed_part_checksum_names_the_part_that_failed(env, caplog):
    env.store.put(
        "f", size=SIZE, seed=82, etag=OPAQUE, checksum="crc32c", composite=True, part_size=2 * CHUNK
    )
    env.store.flip("f", 3 * CHUNK + 5, times=1)
    caplog.set_level(logging.WARNING)
    async with env.core() as core:
        fh = await open_path(core.fs, "f")
        with pytest.raises(ProofFailed):  # bytes already returned were wrong (see test_proofs)
            await read_all(core.fs, fh, SIZE)
        await settle(core)
    (warning,) = [r.getMessage() for r in caplog.records if "proof failed" in r.getMessage()]
    assert f"(parts at bytes {2 * CHUNK}-{4 * CHUNK - 1})" in warning


async def test_an_sse_kms_object_with_a_checksum_is_verified_after_its_etag_is_shown_useless(
    env,
):
    """SSE-KMS: the ETag looks like an MD5 and is not one. The mismatch costs a HEAD of part
    1 (aws:kms) and a HEAD for the checksum, then the bytes are checked against it: no
    refetch, and the proof is a real one, not 'none'."""
    data = env.store.put(
        "f", size=SIZE, seed=83, etag=f'"{"b" * 32}"', encryption="aws:kms", checksum="sha256"
    )
    async with env.core() as core:
        fh = await open_path(core.fs, "f")
        assert await read_all(core.fs, fh, SIZE) == data
        await settle(core)
        assert sorted(env.store.chunks_fetched("f", CHUNK)) == list(range(7)), "no refetch"
        assert (env.store.calls["facts"], env.store.calls["checksums"]) == (1, 1)
        assert await xattr(core) == "sha256 verified"
        assert core.stats.proofs_failed == 0
    async with env.core() as core:  # a remount: the recorded checksum proof, no request
        assert await xattr(core) == "sha256 verified"
        assert await read_all(core.fs, await open_path(core.fs, "f"), SIZE) == data
        assert (env.store.calls["facts"], env.store.calls["checksums"]) == (1, 1)
        assert core.stats.proofs_passed == 0


async def test_large_objects_ask_for_their_checksum_unless_told_to_use_the_etag(env):
    """``--proofs auto``: from 16 chunks on, one HEAD buys an order-free CRC instead of an
    in-order MD5; ``--proofs etag`` keeps the ETag (no HEAD)."""
    size = 16 * CHUNK
    data = env.store.put("f", size=size, seed=84, checksum="crc64nvme")
    async with env.core() as core:
        assert await read_all(core.fs, await open_path(core.fs, "f"), size) == data
        await settle(core)
        assert await xattr(core) == "crc64nvme verified"
        assert env.store.calls["checksums"] == 1
    async with env.core(cache_dir=env.tmp_path / "c2", proofs="etag") as core:
        assert await read_all(core.fs, await open_path(core.fs, "f"), size) == data
        await settle(core)
        assert await xattr(core) == "etag-md5 verified"
        assert env.store.calls["checksums"] == 1


async def test_a_large_object_without_a_checksum_falls_back_to_its_etag(env):
    size = 16 * CHUNK
    data = env.store.put("f", size=size, seed=85)
    async with env.core() as core:
        assert await read_all(core.fs, await open_path(core.fs, "f"), size) == data
        await settle(core)
        assert await xattr(core) == "etag-md5 verified"
        assert env.store.calls["checksums"] == 1


async def test_no_checksum_and_no_etag_proof_says_both(env):
    env.store.put("f", size=SIZE, seed=86, etag=OPAQUE)
    async with env.core() as core:
        text = await xattr(core)
        assert text.startswith("none (unverified") and "is not an MD5" in text
        assert "S3 has no additional checksum for it" in text


async def test_proofs_off_checks_nothing_and_says_so(env):
    data = env.store.put("f", size=SIZE, seed=87, checksum="crc32c")
    env.store.flip("f", LAST_CHUNK_BYTE, times=1)
    async with env.core(proofs="off") as core:
        got = await read_all(core.fs, await open_path(core.fs, "f"), SIZE)
        assert got != data and env.store.get_count("f") == 7  # served as it came
        assert "--proofs off" in await xattr(core)
        assert env.store.calls["checksums"] == 0 and core.stats.proofs_passed == 0


async def test_a_checksum_of_unsaid_type_is_found_composite_by_a_head_of_part_1(env, caplog):
    """moto says neither the type nor the part count of a composite CRC32: taken as a
    full-object CRC, it fails; a HEAD of part 1 shows 4 parts, and the bytes (no refetch) are
    checked as composite."""
    data = env.store.put(
        "f", size=SIZE, seed=88, etag=OPAQUE, checksum="crc32", composite=True,
        part_size=2 * CHUNK, terse=True,
    )  # fmt: skip
    async with env.core() as core:
        assert await read_all(core.fs, await open_path(core.fs, "f"), SIZE) == data
        await settle(core)
        assert env.store.get_count("f") == 7, "no refetch"
        assert (env.store.calls["checksums"], env.store.calls["facts"]) == (1, 1)
        assert await xattr(core) == f"crc32-composite verified (4 parts of {2 * CHUNK} B)"
        assert core.stats.proofs_failed == 0
