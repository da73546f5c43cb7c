"""The proof arithmetic: which proof an ETag gives, and that it holds exactly for the bytes
it was made from (hypothesis: any flipped byte fails it)."""

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from rangefs.cache import proofs

CHUNK = 64 * 1024


def md5_etag(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


def multipart_etag(data: bytes, part: int) -> str:
    digests = b"".join(hashlib.md5(data[i : i + part]).digest() for i in range(0, len(data), part))
    return f'"{hashlib.md5(digests).hexdigest()}-{-(-len(data) // part)}"'


def chunk_digests(proof: proofs.Proof, data: bytes) -> list[bytes]:
    """Part digests as the verifier makes them: chunk by chunk, in order within a part."""
    out = []
    for start in range(0, len(data), proof.part_size):
        h = hashlib.md5()
        for c in range(start, min(start + proof.part_size, len(data)), CHUNK):
            h.update(data[c : min(c + CHUNK, start + proof.part_size)])
        out.append(h.digest())
    return out


def test_kinds():
    assert proofs.proof_for(md5_etag(b"x"), 1, CHUNK).kind == proofs.WHOLE
    mp = proofs.proof_for('"0123456789abcdef0123456789abcdef-3"', 3 * CHUNK - 1, CHUNK)
    assert (mp.kind, mp.parts, mp.part_size) == (proofs.MULTIPART, 3, CHUNK)
    one = proofs.proof_for('"0123456789abcdef0123456789abcdef-1"', 10 * CHUNK, CHUNK)
    assert (one.kind, one.parts, one.part_size) == (proofs.MULTIPART, 1, 10 * CHUNK)


def test_no_proof_says_why():
    for etag, size in [
        ('"not-an-md5"', 10),
        ('"0123456789abcdef0123456789abcdef-4"', 3 * CHUNK),  # 4 parts cannot be 64 KiB ones
        ('"0123456789ABCDEF0123456789abcdef-0"', 10),
        (md5_etag(b""), 0),
    ]:
        proof = proofs.proof_for(etag, size, CHUNK)
        assert proof.kind == proofs.NONE and not proof.verifiable
        assert proof.describe().startswith(f"none ({proofs.NO_CHECKSUM}: ")


def test_a_known_part_size_that_is_a_multiple_of_the_chunk_size():
    data = bytes(range(256)) * 1000
    proof = proofs.proof_for(multipart_etag(data, 2 * CHUNK), len(data), CHUNK, 2 * CHUNK)
    assert (proof.kind, proof.part_size) == (proofs.MULTIPART, 2 * CHUNK)
    assert proofs.combine(proof, chunk_digests(proof, data)) == proof.expected
    odd = proofs.proof_for(multipart_etag(data, CHUNK + 1), len(data), CHUNK, CHUNK + 1)
    assert odd.kind == proofs.NONE


objects = st.binary(min_size=1, max_size=5 * CHUNK + 7)


@settings(max_examples=40, deadline=None)
@given(data=objects, multipart=st.booleans(), flip=st.integers(min_value=0), bit=st.integers(0, 7))
def test_a_proof_holds_for_its_bytes_and_fails_for_any_flipped_byte(data, multipart, flip, bit):
    etag = multipart_etag(data, CHUNK) if multipart else md5_etag(data)
    proof = proofs.proof_for(etag, len(data), CHUNK)
    assert proof.kind == (proofs.MULTIPART if multipart else proofs.WHOLE)
    assert proofs.combine(proof, chunk_digests(proof, data)) == proof.expected
    assert proofs.etag_of(proof, data) == proof.expected
    damaged = bytearray(data)
    damaged[flip % len(data)] ^= 1 << bit
    assert proofs.combine(proof, chunk_digests(proof, bytes(damaged))) != proof.expected


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(1, 10**12),
    parts=st.integers(1, 10_000),
    chunk=st.sampled_from([CHUNK, 8 << 20]),
)
def test_multipart_layout_is_claimed_only_when_the_part_count_fits(size, parts, chunk):
    proof = proofs.proof_for(f'"{"a" * 32}-{parts}"', size, chunk)
    if parts == 1:
        assert proof.part_size == size
    elif proof.verifiable:
        assert -(-size // proof.part_size) == parts and proof.part_size == chunk
    else:
        assert -(-size // chunk) != parts


def test_a_head_disproves_what_the_etag_cannot_say():
    from rangefs.remote.store import ObjectFacts

    single = proofs.proof_for('"' + "a" * 32 + '"', 1000, 64)
    multi = proofs.proof_for('"' + "b" * 32 + '-3"', 20 * 64, 8 * 64)
    assert proofs.confirm(single, ObjectFacts(encryption="AES256"), CHUNK) == single  # SSE-S3
    assert proofs.confirm(single, ObjectFacts(parts=1, first_part=1000), CHUNK) == single
    assert proofs.confirm(multi, ObjectFacts(parts=3, first_part=8 * 64), CHUNK) == multi
    assert proofs.confirm(multi, ObjectFacts(), CHUNK) == multi  # S3 said nothing: keep the proof
    for facts, reason in [
        (ObjectFacts(encryption="aws:kms"), "encrypted with aws:kms"),
        (ObjectFacts(customer_key=True), "encrypted with SSE-C"),
        (ObjectFacts(parts=3, first_part=7 * 64), "its parts are 448 B, not 512 B"),
    ]:
        assert reason in proofs.confirm(multi, facts, CHUNK).describe()
    assert "uploaded in 3 parts" in proofs.confirm(single, ObjectFacts(parts=3), CHUNK).describe()
