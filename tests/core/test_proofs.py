"""S3's proof (the ETag) on the read path: a byte inverted on the wire is caught before the
last bytes of a whole-file read are returned; a one-shot fault is repaired by one refetch,
a persistent one is an EIO that leaves nothing in the cache."""

import errno
import logging

import pytest

from rangefs.errors import ProofFailed
from rangefs.fs import xattrs
from tests.core.fakes import etag_of
from tests.core.helpers import CHUNK, lookup_path, open_path, read_all, settle

SIZE = 3 * CHUNK + 100  # four chunks; the last one (100 B) is returned by the last read alone
LAST_CHUNK_BYTE = 3 * CHUNK + 50
FIRST_CHUNK_BYTE = 1000


def put(env, kind: str) -> bytes:
    if kind == "single":
        return env.store.put("f", size=SIZE, seed=70)
    return env.store.put("f", size=SIZE, seed=71, part_size=CHUNK)


async def xattr(core, name: str) -> str:
    ino = (await lookup_path(core.fs, "f")).ino
    return (await core.fs.getxattr(ino, name)).decode()


KINDS = [("single", "etag-md5"), ("multipart", "etag-multipart-md5")]


@pytest.mark.parametrize(("kind", "proof"), KINDS)
async def test_a_clean_read_is_proven_and_the_proof_is_checkpointed(env, kind, proof):
    data = put(env, kind)
    async with env.core() as core:
        assert (await xattr(core, xattrs.VERIFIED)).startswith(f"{proof} pending")
        fh = await open_path(core.fs, "f")
        assert await read_all(core.fs, fh, SIZE) == data
        await settle(core)
        assert env.store.get_count("f") == 4
        assert core.stats.proofs_passed == 1 and core.stats.proofs_failed == 0
        assert (await xattr(core, xattrs.VERIFIED)).startswith(f"{proof} verified")
    async with env.core() as core:  # a remount: the proof is part of the checkpoint
        assert (await xattr(core, xattrs.VERIFIED)).startswith(f"{proof} verified")
        fh = await open_path(core.fs, "f")
        assert await read_all(core.fs, fh, SIZE) == data
        assert env.store.get_count("f") == 4
        assert core.stats.proofs_passed == 0  # not hashed again


async def test_multipart_detail_names_the_layout(env):
    put(env, "multipart")
    async with env.core() as core:
        text = await xattr(core, xattrs.VERIFIED)
        assert text == f"etag-multipart-md5 pending (4 parts of {CHUNK} B)"


@pytest.mark.parametrize(("kind", "proof"), KINDS)
async def test_one_bad_response_not_yet_returned_is_refetched_and_the_bytes_are_right(
    env, kind, proof
):
    data = put(env, kind)
    env.store.flip("f", LAST_CHUNK_BYTE, times=1)
    async with env.core() as core:
        fh = await open_path(core.fs, "f")
        assert await read_all(core.fs, fh, SIZE) == data
        await settle(core)
        # Every chunk the proof covers, fetched again once: one extra GET each.
        assert sorted(env.store.chunks_fetched("f", CHUNK)) == [0, 0, 1, 1, 2, 2, 3, 3]
        assert core.stats.proofs_failed == 1 and core.stats.proofs_passed == 1
        assert (await xattr(core, xattrs.VERIFIED)).startswith(f"{proof} verified")
    async with env.core() as core:  # what was kept is the proven bytes
        fh = await open_path(core.fs, "f")
        assert await read_all(core.fs, fh, SIZE) == data
        assert env.store.get_count("f") == 8


@pytest.mark.parametrize(("kind", "proof"), KINDS)
async def test_bad_bytes_already_returned_fail_the_last_read_then_a_reread_is_right(
    env, kind, proof, caplog
):
    data = put(env, kind)
    env.store.flip("f", FIRST_CHUNK_BYTE, times=1)
    async with env.core() as core:
        fh = await open_path(core.fs, "f")
        with pytest.raises(ProofFailed) as exc:
            await read_all(core.fs, fh, SIZE)
        assert exc.value.errno == errno.EIO
        with pytest.raises(ProofFailed):  # this open file returned wrong bytes: EIO from now on
            await core.fs.read(fh, 0, 10)
        assert "had been returned wrong" in caplog.text
        # The refetch passed: the cache holds proven bytes; the next open drops the page cache.
        ino = (await lookup_path(core.fs, "f")).ino
        again, keep_cache = await core.fs.open(ino)
        assert not keep_cache
        assert await read_all(core.fs, again, SIZE) == data
        assert env.store.get_count("f") == 8
        assert (await xattr(core, xattrs.VERIFIED)).startswith(f"{proof} verified")


@pytest.mark.parametrize(("kind", "proof"), KINDS)
async def test_a_persistent_bad_response_is_an_eio_and_nothing_bad_is_kept(
    env, kind, proof, caplog
):
    data = put(env, kind)
    env.store.flip("f", LAST_CHUNK_BYTE)
    caplog.set_level(logging.WARNING)
    async with env.core() as core:
        fh = await open_path(core.fs, "f")
        with pytest.raises(ProofFailed) as exc:
            await read_all(core.fs, fh, SIZE)
        assert exc.value.errno == errno.EIO
        await settle(core)
        assert sorted(env.store.chunks_fetched("f", CHUNK)) == [0, 0, 1, 1, 2, 2, 3, 3]
        # No chunk of the version is left in the cache, and the proof is not recorded.
        assert await xattr(core, xattrs.CHUNKS) == f"{CHUNK} ...."
        assert (await xattr(core, xattrs.VERIFIED)).startswith(f"{proof} pending")
        # One error line: key, range and both checksums.
        expected = etag_of(data, CHUNK if kind == "multipart" else None).strip('"')
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1, errors
        assert f"s3://bucket/f bytes=0-{SIZE - 1}" in errors[0]
        assert f"expected {expected} got " in errors[0]
        got = errors[0].rsplit("got ", 1)[1]
        assert got != expected and len(got) >= 32
        # The fault clears: a new open reads the right bytes.
        env.store.clear_faults()
        fh = await open_path(core.fs, "f")
        assert await read_all(core.fs, fh, SIZE) == data
        assert (await xattr(core, xattrs.VERIFIED)).startswith(f"{proof} verified")


@pytest.mark.parametrize(
    ("etag", "reason"),
    [('"not-an-md5"', "is not an MD5"), (f'"{"a" * 32}-2"', "2 parts do not match")],
)
async def test_an_unverifiable_object_is_served_and_reported_none(env, etag, reason):
    data = env.store.put("f", size=SIZE, seed=72, etag=etag)
    env.store.flip("f", LAST_CHUNK_BYTE, times=1)  # nothing can catch it: served as is
    async with env.core() as core:
        fh = await open_path(core.fs, "f")
        got = await read_all(core.fs, fh, SIZE)
        assert got[:LAST_CHUNK_BYTE] == data[:LAST_CHUNK_BYTE]
        assert env.store.get_count("f") == 4
        text = await xattr(core, xattrs.VERIFIED)
        assert text.startswith("none (unverified: S3 gave no checksum rangefs can use")
        assert reason in text


async def test_reading_only_the_end_does_not_wait_for_the_proof(env):
    """A player that jumps to the end (a trailer, an index) is not made to fetch the rest."""
    data = put(env, "single")
    async with env.core() as core:
        fh = await open_path(core.fs, "f")
        assert bytes(await core.fs.read(fh, SIZE - 50, 100)) == data[-50:]
        await settle(core)
        assert env.store.chunks_fetched("f", CHUNK) == [3]
        assert (await xattr(core, xattrs.VERIFIED)).startswith("etag-md5 pending")


async def test_a_refetched_chunk_of_a_proven_version_unproves_it_until_the_next_whole_read(env):
    data = put(env, "single")
    async with env.core() as core:
        fh = await open_path(core.fs, "f")
        assert await read_all(core.fs, fh, SIZE) == data
        await settle(core)
    # The disk loses a chunk (evicted); the next mount fetches it again from S3.
    for path in sorted(env.cache_dir.rglob("*.val"))[:1]:
        path.unlink()
    async with env.core() as core:
        fh = await open_path(core.fs, "f")
        assert await read_all(core.fs, fh, SIZE) == data
        await settle(core)
        assert env.store.get_count("f") == 5
        assert core.stats.proofs_passed == 1  # hashed again, from memory and disk
        assert (await xattr(core, xattrs.VERIFIED)).startswith("etag-md5 verified")


# -- an ETag that looked like a proof but is none: one HEAD, no refetch, no false EIO -------


async def test_an_sse_kms_object_is_served_after_one_head_and_reported_none(env):
    """An SSE-KMS object's ETag is hex but not the MD5 of its bytes: the mismatch is met by
    one HEAD (which says aws:kms), not by a refetch and a false EIO."""
    data = env.store.put("f", size=SIZE, seed=73, etag=f'"{"b" * 32}"', encryption="aws:kms")
    async with env.core() as core:
        fh = await open_path(core.fs, "f")
        assert await read_all(core.fs, fh, SIZE) == data
        await settle(core)
        assert sorted(env.store.chunks_fetched("f", CHUNK)) == [0, 1, 2, 3], "no refetch"
        assert env.store.calls["facts"] == 1
        text = await xattr(core, xattrs.VERIFIED)
        assert text.startswith("none (unverified") and "encrypted with aws:kms" in text
        assert core.stats.proofs_failed == 0
        fh = await open_path(core.fs, "f")  # later reads: no second HEAD, no hashing
        assert await read_all(core.fs, fh, SIZE) == data
        assert env.store.calls["facts"] == 1


async def test_a_part_layout_guessed_wrong_is_found_out_by_a_head(env):
    """2.5 chunks uploaded in parts of 7/8 of a chunk: 3 parts, as 3 chunks would give, so
    the layout is guessed wrong; part 1's length (a HEAD) says so, and the bytes are served."""
    part = 7 * CHUNK // 8
    size = 5 * CHUNK // 2
    data = env.store.put("f", size=size, seed=74, part_size=part)
    async with env.core() as core:
        assert (await xattr(core, xattrs.VERIFIED)).startswith("etag-multipart-md5 pending")
        fh = await open_path(core.fs, "f")
        assert await read_all(core.fs, fh, size) == data
        await settle(core)
        assert sorted(env.store.chunks_fetched("f", CHUNK)) == [0, 1, 2], "no refetch"
        text = await xattr(core, xattrs.VERIFIED)
        assert f"its parts are {part} B, not {CHUNK} B" in text


async def test_a_head_that_confirms_the_proof_still_gives_eio_on_persistent_damage(env):
    put(env, "single")
    env.store.flip("f", FIRST_CHUNK_BYTE, times=100)
    async with env.core() as core:
        fh = await open_path(core.fs, "f")
        with pytest.raises(ProofFailed):
            await read_all(core.fs, fh, SIZE)
        assert env.store.calls["facts"] == 1


async def test_an_sse_c_mount_claims_no_proof(env):
    from rangefs.config import CustomerKey

    data = env.store.put("f", size=SIZE, seed=75, etag=f'"{"c" * 32}"')
    key = CustomerKey(env.tmp_path / "key", b"k" * 32)
    async with env.core(sse_c_key=key) as core:
        fh = await open_path(core.fs, "f")
        assert await read_all(core.fs, fh, SIZE) == data
        assert env.store.calls["facts"] == 0
        text = await xattr(core, xattrs.VERIFIED)
        assert "read with a customer key (SSE-C)" in text
