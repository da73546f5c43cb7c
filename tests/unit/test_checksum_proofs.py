"""S3's additional checksums: the CRC combine arithmetic (hypothesis: combining the CRCs of
two pieces is the CRC of both, for every algorithm), which proof a checksum gives, and that
it holds exactly for its bytes, whatever the chunk size that cut them."""

import base64
import hashlib
import itertools
import zlib

import pytest
from awscrt import checksums as crt
from hypothesis import given, settings
from hypothesis import strategies as st

from rangefs.cache import proofs
from rangefs.remote.store import Checksum

KiB = 1024
MiB = 1024 * KiB
RAW = {  # independent of rangefs's table: the library functions themselves
    "crc32": lambda data: zlib.crc32(data).to_bytes(4, "big"),
    "crc32c": lambda data: crt.crc32c(data).to_bytes(4, "big"),
    "crc64nvme": lambda data: crt.crc64nvme(data).to_bytes(8, "big"),
    "sha1": lambda data: hashlib.sha1(data).digest(),
    "sha256": lambda data: hashlib.sha256(data).digest(),
}
ALGORITHMS = st.sampled_from(sorted(RAW))
CRC_ALGORITHMS = st.sampled_from(sorted(proofs.CRCS))


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def full(algorithm: str, data: bytes) -> Checksum:
    return Checksum(algorithm, b64(RAW[algorithm](data)), "FULL_OBJECT")


def composite(algorithm: str, data: bytes, part: int, *, listed: bool = True) -> Checksum:
    pieces = [data[i : i + part] for i in range(0, len(data), part)]
    value = f"{b64(RAW[algorithm](b''.join(RAW[algorithm](p) for p in pieces)))}-{len(pieces)}"
    if not listed:
        return Checksum(algorithm, value, "COMPOSITE")
    sizes = tuple(len(p) for p in pieces)
    return Checksum(
        algorithm, value, "COMPOSITE", sizes, tuple(b64(RAW[algorithm](p)) for p in pieces)
    )


def digests(proof: proofs.Proof, data: bytes, chunk: int) -> list[bytes]:
    """Part digests as the verifier makes them: chunk by chunk, in order within a part."""
    out = []
    for start in range(0, len(data), proof.part_size):
        h = proofs.part_hash(proof)
        for c in range(start, min(start + proof.part_size, len(data)), chunk):
            h.update(memoryview(data)[c : min(c + chunk, start + proof.part_size)])
        out.append(h.digest())
    return out


@settings(max_examples=200, deadline=None)
@given(algorithm=CRC_ALGORITHMS, a=st.binary(max_size=3000), b=st.binary(max_size=3000))
def test_combining_the_crcs_of_two_pieces_gives_the_crc_of_both(algorithm, a, b):
    crc = proofs.CRCS[algorithm][0]
    assert proofs.crc_combine(algorithm, crc(a, 0), crc(b, 0), len(b)) == crc(a + b, 0)


@settings(max_examples=60, deadline=None)
@given(
    algorithm=ALGORITHMS,
    data=st.binary(min_size=1, max_size=5000),
    chunk=st.integers(1, 700),
    flip=st.integers(min_value=0),
    bit=st.integers(0, 7),
)
def test_a_full_object_checksum_holds_for_its_bytes_and_fails_for_a_flipped_one(
    algorithm, data, chunk, flip, bit
):
    proof = proofs.checksum_proof(full(algorithm, data), len(data), chunk)
    assert proof.verifiable and proof.kind == algorithm
    if algorithm in proofs.CRCS:  # every chunk a part of its own, combined at the end
        assert (proof.parts, proof.part_size) == (-(-len(data) // chunk), chunk)
    else:  # hashed in order, like the MD5 ETag
        assert (proof.parts, proof.part_size) == (1, len(data))
    assert proofs.combine(proof, digests(proof, data, chunk)) == proof.expected
    bad = bytearray(data)
    bad[flip % len(data)] ^= 1 << bit
    assert proofs.combine(proof, digests(proof, bytes(bad), chunk)) != proof.expected


@settings(max_examples=60, deadline=None)
@given(
    algorithm=ALGORITHMS,
    parts=st.integers(1, 6),
    per_part=st.integers(1, 4),
    chunk=st.integers(1, 64),
    tail=st.integers(1, 64 * 4),
    listed=st.booleans(),
    flip=st.integers(min_value=0),
)
def test_a_composite_checksum_holds_for_its_bytes_and_names_the_wrong_part(
    algorithm, parts, per_part, chunk, tail, listed, flip
):
    part = per_part * chunk
    size = (parts - 1) * part + min(tail, part)
    data = bytes((i * 7 + 3) % 251 for i in range(size))
    proof = proofs.checksum_proof(
        composite(algorithm, data, part, listed=listed), size, part if not listed else chunk
    )
    layout = f"{parts} parts of {part if parts > 1 else size} B"
    assert proof.kind == f"{algorithm}-composite" and proof.detail == layout
    assert proofs.combine(proof, digests(proof, data, chunk)) == proof.expected
    bad = bytearray(data)
    bad[flip % size] ^= 0x40
    wrong = digests(proof, bytes(bad), chunk)
    assert proofs.combine(proof, wrong) != proof.expected
    assert proofs.wrong_parts(proof, wrong) == ([(flip % size) // part] if listed else [])


def test_values_seaweedfs_sent_for_an_upload_in_8_mib_parts():
    """Real server values (SeaweedFS 4.48, boto3 ChecksumAlgorithm=..., 8 MiB parts)."""
    data = bytes(range(256)) * (17 * MiB // 256 + 3)
    sent = {
        "crc32c": Checksum("crc32c", "0j5wmQ==-3", "COMPOSITE", (8 * MiB, 8 * MiB, 1049344)),
        "crc64nvme": Checksum("crc64nvme", "AZH/SnU+7G4=", "FULL_OBJECT"),
        "sha256": Checksum("sha256", "VSCG5ysGlnb0JvFSRqZ4UpD6filXKI0N9aWO89ee1BE=-3", "COMPOSITE"),
    }
    for checksum in sent.values():
        chunk = 8 * MiB if checksum.type == "COMPOSITE" and not checksum.part_sizes else 4 * MiB
        proof = proofs.checksum_proof(checksum, len(data), chunk)
        assert proof.verifiable, proof.describe()
        assert proofs.combine(proof, digests(proof, data, chunk)) == proof.expected
    # without a part list, the part layout is assumed to be the chunk size: 4 MiB is wrong
    assert not proofs.checksum_proof(sent["sha256"], len(data), 4 * MiB).verifiable


def test_a_composite_value_without_its_part_count_is_completed():
    """moto sends composite values without the ``-N``; the type and the part list tell."""
    data = bytes(range(200)) * 10
    checksum = composite("crc32", data, 500)
    bare = Checksum("crc32", checksum.value.split("-")[0], "COMPOSITE", checksum.part_sizes)
    proof = proofs.checksum_proof(bare, len(data), 100)
    assert proof.expected == checksum.value
    alone = Checksum("crc32", checksum.value.split("-")[0], "COMPOSITE")  # no part list either
    assert not proofs.checksum_proof(alone, len(data), 100).verifiable
    hinted = proofs.checksum_proof(
        alone, len(data), 100, parts=4, part_size=500
    )  # a HEAD of part 1
    assert hinted.expected == checksum.value
    assert proofs.combine(hinted, digests(hinted, data, 100)) == hinted.expected


@pytest.mark.parametrize(
    ("checksum", "size", "chunk", "why"),
    [
        (Checksum("crc32c", "AAAAAA==-3", "COMPOSITE"), 13 * KiB, 4 * KiB, "3 parts do not match"),
        (
            Checksum("crc32c", "AAAAAA==-2", "COMPOSITE", (3000, 4000)),
            7000,
            1000,
            "not of one size",
        ),
        (Checksum("crc32c", "AAAAAA==-2", "COMPOSITE", (3000, 1000)), 4000, 2000, "not a multiple"),
        (Checksum("md7", "AAAA", "FULL_OBJECT"), 10, 4, "unknown checksum md7"),
    ],
)
def test_a_checksum_that_cannot_be_checked_says_why(checksum, size, chunk, why):
    proof = proofs.checksum_proof(checksum, size, chunk, "ETag 'x' is not an MD5")
    assert not proof.verifiable
    assert why in proof.detail and "ETag 'x' is not an MD5" in proof.detail


def test_the_record_keeps_the_proof_and_the_size_and_old_records_still_read():
    data = b"0123456789" * 100
    proof = proofs.checksum_proof(composite("crc32c", data, 300), len(data), 100)
    assert proofs.from_record(proofs.to_record(proof)) == proof
    assert proofs.from_record(proofs.to_record(proof)).size == len(data)
    assert proofs.from_record("etag-md5") == proofs.Proof("etag-md5")


def test_a_full_object_crc_is_laid_out_for_any_chunk_size():
    data = bytes(range(256)) * 40
    proof = proofs.checksum_proof(full("crc64nvme", data), len(data), 1000)
    again = proofs.for_chunks(proof, 4096)
    assert (again.parts, again.part_size) == (3, 4096)
    assert proofs.combine(again, digests(again, data, 4096)) == proof.expected


def test_a_checksum_of_unsaid_type_is_taken_whole_until_part_1_shows_parts():
    from rangefs.remote.store import ObjectFacts

    data = bytes(range(256)) * 40
    value = composite("crc32c", data, 4096).value.split("-")[0]
    taken = proofs.checksum_proof(Checksum("crc32c", value), len(data), 1024)
    assert (taken.kind, taken.said) == ("crc32c", False)
    assert proofs.confirm(taken, ObjectFacts(parts=1, first_part=len(data)), 1024) == taken
    found = proofs.confirm(taken, ObjectFacts(parts=3, first_part=4096), 1024)
    assert found.describe() == "crc32c-composite (3 parts of 4096 B)"
    assert proofs.combine(found, digests(found, data, 1024)) == found.expected
    said = proofs.checksum_proof(full("crc32c", data), len(data), 1024)
    assert proofs.confirm(said, ObjectFacts(parts=3, first_part=4096), 1024) == said


def stretches_of(algorithm: str, data: bytes, cuts: list[int]) -> list[proofs.StretchHash]:
    bounds = [0, *sorted(set(cuts)), len(data)]
    out = []
    for a, b in itertools.pairwise(bounds):
        stretch = proofs.StretchHash(algorithm, a)
        for i in range(a, b, 1000):  # fed in pieces, as a GET's receive buffer does
            stretch.update(memoryview(data)[i : min(b, i + 1000)])
        out.append(stretch)
    return out


@given(
    st.sampled_from(sorted(proofs.CRCS)),
    st.binary(min_size=1, max_size=5000),
    st.lists(st.integers(1, 4999), max_size=5),
    st.randoms(use_true_random=False),
)
def test_a_crc_of_stretches_in_any_order_is_the_crc_of_the_chunk(algorithm, data, cuts, rnd):
    stretches = stretches_of(algorithm, data, [c for c in cuts if c < len(data)])
    rnd.shuffle(stretches)
    assert proofs.stretches_digest(algorithm, stretches, len(data)) == proofs.own_digest(
        algorithm, data
    )


@given(st.sampled_from(sorted(proofs.CRCS)), st.binary(min_size=10, max_size=3000))
def test_a_chunk_its_stretches_do_not_cover_exactly_has_no_digest(algorithm, data):
    half = len(data) // 2
    whole = stretches_of(algorithm, data, [half])
    assert proofs.stretches_digest(algorithm, whole[1:], len(data)) is None  # a gap
    again = stretches_of(algorithm, data, [half])[0]
    assert proofs.stretches_digest(algorithm, [*whole, again], len(data)) is None  # an overlap
    assert proofs.stretches_digest("md5", whole, len(data)) is None  # another algorithm


@pytest.mark.parametrize("algorithm", ["md5", "sha1", "sha256"])
def test_an_ordered_hash_has_a_digest_only_from_one_stretch_of_the_whole_chunk(algorithm):
    data = bytes(range(256)) * 40
    one = stretches_of(algorithm, data, [])
    assert (
        proofs.stretches_digest(algorithm, one, len(data)) == hashlib.new(algorithm, data).digest()
    )
    two = stretches_of(algorithm, data, [77])
    assert proofs.stretches_digest(algorithm, two, len(data)) is None


@given(st.sampled_from(sorted(proofs.CRCS)), st.lists(st.binary(max_size=700), max_size=6))
def test_a_part_crc_extended_by_chunk_crcs_equals_one_fed_the_bytes(algorithm, pieces):
    fed, extended = proofs.CrcHash(algorithm), proofs.CrcHash(algorithm)
    for piece in pieces:
        fed.update(piece)
        extended.extend(proofs.own_digest(algorithm, piece), len(piece))
    assert extended.digest() == fed.digest()
