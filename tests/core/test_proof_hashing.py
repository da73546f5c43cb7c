"""Chunks are hashed for S3's proof as their GETs write them, not read back from the store
(issue 10's cost target): what still needs a read-back is a chunk whose bytes did not all
come from this mount's GETs, or a part the proof hashes in order over several chunks."""

import pytest

from rangefs.errors import RangefsError
from tests.core.helpers import CHUNK, open_path, read_all, settle, until
from tests.core.test_checksums import CHECKSUMS, OPAQUE, SIZE

CHUNKS = 7


async def read_whole(core, data: bytes) -> None:
    fh = await open_path(core.fs, "f")
    assert await read_all(core.fs, fh, SIZE) == data
    await settle(core)


async def test_an_etag_proof_of_one_chunk_per_part_reads_nothing_back(env):
    data = env.store.put("f", size=SIZE, seed=90, part_size=CHUNK)
    async with env.core() as core:
        await read_whole(core, data)
        assert core.stats.proofs_passed == 1
        assert core.stats.proof_read_backs == 0


@pytest.mark.parametrize("case", ["crc32c-full", "crc64nvme-full", "crc32-composite"])
async def test_a_checksum_proof_reads_back_only_chunks_fetched_before_it_was_known(env, case):
    """The checksum is learned by a HEAD sent beside the first GET; from its answer on,
    every chunk is hashed as it arrives."""
    args, _ = CHECKSUMS[case]
    data = env.store.put("f", size=SIZE, seed=91, etag=OPAQUE, **args)
    async with env.core() as core:
        fh = await open_path(core.fs, "f")
        first = await core.fs.read(fh, 0, CHUNK)
        version = core.fs._handles[fh].version
        await until(lambda: not core.reader.verifier.proof(version).pending)
        rest = b"".join([await core.fs.read(fh, o, CHUNK) for o in range(CHUNK, SIZE, CHUNK)])
        assert first + rest == data
        await settle(core)
        assert env.store.calls["checksums"] == 1
        assert core.stats.proofs_passed == 1
        assert core.stats.proof_read_backs == 1  # chunk 0, whose GET went before the HEAD


async def test_an_md5_over_several_chunks_is_still_hashed_from_the_store(env):
    data = env.store.put("f", size=SIZE, seed=92)  # single-part MD5 ETag: one part, 7 chunks
    async with env.core() as core:
        await read_whole(core, data)
        assert core.stats.proofs_passed == 1
        assert core.stats.proof_read_backs >= CHUNKS


BIG = 4 * CHUNK  # chunks of four blocks, so a chunk can be left half filled
BIG_SIZE = 3 * BIG + 100


async def read_big(core, data: bytes) -> None:
    fh = await open_path(core.fs, "f")
    assert await read_all(core.fs, fh, BIG_SIZE) == data
    await settle(core)


async def fail_first_chunk_half_way(env, core, *, proof_first: bool = False) -> None:
    """Chunk 0's GET breaks after half its bytes, on every retry: the read fails, the
    landed blocks stay. ``proof_first``: the checksum HEAD is answered before that GET."""
    env.store.cut_body("f", times=100)
    fh = await open_path(core.fs, "f")
    if proof_first:
        await core.reader.verifier.known(core.fs._handles[fh].version)
    with pytest.raises(RangefsError):
        await core.fs.read(fh, 0, BIG)
    await settle(core)
    env.store.clear_faults()


async def test_a_crc_combines_the_stretches_of_a_chunk_filled_by_two_gets(env):
    args, _ = CHECKSUMS["crc64nvme-full"]
    data = env.store.put("f", size=BIG_SIZE, seed=93, etag=OPAQUE, **args)
    async with env.core(chunk_size=BIG) as core:
        await fail_first_chunk_half_way(env, core, proof_first=True)
        await read_big(core, data)
        assert core.stats.proofs_passed == 1 and core.stats.proofs_failed == 0
        assert core.stats.proof_read_backs == 0


async def test_an_md5_part_filled_by_two_gets_is_read_back_and_proven(env):
    """Two MD5 stretches cannot be combined: the chunk is hashed from the store."""
    data = env.store.put("f", size=BIG_SIZE, seed=94, part_size=BIG)
    async with env.core(chunk_size=BIG) as core:
        await fail_first_chunk_half_way(env, core)
        await read_big(core, data)
        assert core.stats.proofs_passed == 1 and core.stats.proofs_failed == 0
        assert core.stats.proof_read_backs >= 1


@pytest.mark.parametrize("kind", ["md5-parts", "crc64nvme-full"])
async def test_blocks_left_by_an_earlier_mount_are_read_back_and_proven(env, kind):
    if kind == "md5-parts":
        data = env.store.put("f", size=BIG_SIZE, seed=95, part_size=BIG)
    else:
        data = env.store.put("f", size=BIG_SIZE, seed=95, etag=OPAQUE, checksum="crc64nvme")
    async with env.core(chunk_size=BIG) as core:
        await fail_first_chunk_half_way(env, core)
    async with env.core(chunk_size=BIG) as core:
        await read_big(core, data)
        assert core.stats.proofs_passed == 1
        assert core.stats.proof_read_backs >= 1
