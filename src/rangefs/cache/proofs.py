"""Which proof S3 gives for an object's bytes, and the arithmetic to check it (pure).

A digest rangefs computes on arrival protects the disk, not the wire (GUIDE lesson 17). What
S3 itself vouches for is an additional checksum, when the object was uploaded with one
(:func:`checksum_proof`), and its ETag:

* a full-object CRC (``crc32``, ``crc32c``, ``crc64nvme``; S3's ``FULL_OBJECT`` type): each
  chunk is its own "part", hashed on its own in any order, and the chunks' CRCs are combined
  (:func:`crc_combine`) into the object's;
* a full-object SHA (``sha1``, ``sha256``; single-part uploads): the whole object is one part,
  hashed in order, like the MD5 ETag;
* a ``COMPOSITE`` checksum (``crc32c-composite``...): ``alg(concat(alg(part_i)))-N``, as the
  multipart ETag, with the part layout from GetObjectAttributes or the part count; the part
  checksums S3 lists (GetObjectAttributes ``ObjectParts``) name the part that failed;
* a single-part upload without SSE-KMS/SSE-C: the ETag is the hex MD5 of the bytes
  (``etag-md5``); the whole object must be hashed in order;
* a multipart upload: ``md5(concat(md5(part_i)))-N`` (``etag-multipart-md5``), checkable
  when the part layout is known. rangefs assumes uniform parts of the chunk size when the
  part count matches (``N == ceil(size / chunk_size)``: the AWS CLI and boto3 default, 8 MiB,
  with ``--chunk-size 8M``); then every chunk is a part and is hashed on its own, in any
  order. A known part size that is a multiple of the chunk size works too (parts hashed
  chunk by chunk, in order within each part). ``N == 1`` needs no layout at all.
* anything else (an ETag that is not a hex MD5, a part count that does not match):
  ``none`` — the bytes are served, reported unverified.

Nothing here does I/O; :mod:`rangefs.engine.verifier` applies it to the read path.
"""

import base64
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from typing import Protocol

from awscrt import checksums as crt
from isal import isal_zlib

from rangefs.remote.store import Checksum, ObjectFacts

WHOLE = "etag-md5"
MULTIPART = "etag-multipart-md5"
NONE = "none"
PENDING = "pending"  # the ETag may be bettered by a checksum S3 has not been asked for yet
COMPOSITE = "-composite"  # suffix of a composite checksum's kind: crc32c-composite
NO_CHECKSUM = "unverified: S3 gave no checksum rangefs can use for this object"
TURNED_OFF = "proofs are turned off on this mount (--proofs off)"
CUSTOMER_KEY = "read with a customer key (SSE-C): its ETag is not an MD5 of the bytes"

_MD5 = re.compile(r"[0-9a-f]{32}")
_MULTIPART = re.compile(r"([0-9a-f]{32})-([1-9][0-9]{0,4})")  # S3 allows at most 10,000 parts


@dataclass(frozen=True, slots=True)
class Proof:
    """What S3 proves about one object version.

    ``part_size`` is the byte length of every part but the last (the whole object for a
    single-part ETag or SHA; the chunk size for a full-object CRC); each part is a run of
    whole chunks. ``expected`` is the ETag or checksum as :func:`combine` renders a computed
    one (an unquoted, lower-case ETag; base64 as S3 sends a checksum, ``-N`` if composite).
    """

    kind: str
    expected: str = ""
    parts: int = 0
    part_size: int = 0
    reason: str = ""
    algorithm: str = "md5"
    size: int = 0  # the object's, so a recorded proof tells how many chunks it covers
    part_expected: tuple[str, ...] = ()  # per-part checksums S3 listed (base64), if any
    said: bool = True  # False: a checksum whose type S3 did not say, taken as full-object

    @property
    def verifiable(self) -> bool:
        return self.kind != NONE

    @property
    def pending(self) -> bool:
        return self.kind == PENDING

    @property
    def full_crc(self) -> bool:
        """A full-object CRC: each chunk is a part of its own, combined at the end."""
        return self.algorithm in CRCS and not self.kind.endswith(COMPOSITE)

    def part_of(self, offset: int) -> int:
        return offset // self.part_size

    @property
    def detail(self) -> str:
        """Why there is no proof, or the part layout a multipart proof assumes; else ''."""
        if self.kind == NONE:
            return (
                f"unverified: {TURNED_OFF}"
                if self.reason == TURNED_OFF
                else f"{NO_CHECKSUM}: {self.reason}"
            )
        if self.kind == MULTIPART or self.kind.endswith(COMPOSITE):
            return f"{self.parts} parts of {self.part_size} B"
        return ""

    def describe(self) -> str:
        return f"{self.kind} ({self.detail})" if self.detail else self.kind


def _none(reason: str) -> Proof:
    return Proof(NONE, reason=reason)


def proof_for(etag: str, size: int, chunk_size: int, part_size: int | None = None) -> Proof:
    """The proof an object of ``size`` bytes with ``etag`` carries, read in chunks of
    ``chunk_size``; ``part_size`` if the multipart layout is known (else it is assumed to be
    the chunk size when the part count allows it)."""
    text = etag.strip().strip('"').lower()
    if size <= 0:
        return _none("empty object")
    if _MD5.fullmatch(text):
        return Proof(WHOLE, text, 1, size, size=size)
    m = _MULTIPART.fullmatch(text)
    if m is None:
        return _none(f"ETag {etag!r} is not an MD5")
    parts = int(m.group(2))
    if parts == 1:
        return Proof(MULTIPART, text, 1, size, size=size)
    size_of_part = part_size or chunk_size
    if size_of_part % chunk_size:
        return _none(f"part size {size_of_part} is not a multiple of the chunk size {chunk_size}")
    if -(-size // size_of_part) != parts:
        return _none(
            f"{parts} parts do not match {size} bytes in parts of {size_of_part} B "
            "(mount with --chunk-size equal to the upload's part size)"
        )
    return Proof(MULTIPART, text, parts, size_of_part, size=size)


ENCRYPTED_ETAG = ("aws:kms", "aws:kms:dsse")  # SSE-S3 ("AES256") keeps the MD5 ETag


def confirm(proof: Proof, facts: ObjectFacts, chunk_size: int) -> Proof:
    """``proof`` if what S3 says of the object (a HEAD of its part 1) bears out its
    assumptions, else ``none`` and why, or what the checksum proves instead: an ETag of an
    SSE-KMS or SSE-C object is not an MD5 of the bytes, a multipart layout guessed from the
    part count may be wrong, and a checksum whose type S3 did not say (moto, SeaweedFS) and
    that was taken as full-object is composite if the object has several parts."""
    if not proof.said and (facts.parts or 1) > 1:
        checksum = Checksum(proof.algorithm, proof.expected, "COMPOSITE")
        return checksum_proof(
            checksum, proof.size, chunk_size, parts=facts.parts, part_size=facts.first_part
        )
    if facts.encryption in ENCRYPTED_ETAG or facts.customer_key:
        kind = "SSE-C" if facts.customer_key else facts.encryption
        return _none(f"the object is encrypted with {kind}: its ETag is not an MD5 of the bytes")
    if proof.algorithm != "md5":
        return confirm_layout(proof, facts)
    if proof.kind == WHOLE and (facts.parts or 1) > 1:
        return _none(f"it was uploaded in {facts.parts} parts but its ETag has no part count")
    return confirm_layout(proof, facts)


def confirm_layout(proof: Proof, facts: ObjectFacts) -> Proof:
    """``proof`` unless part 1 of the object is not as long as the layout it assumes."""
    layered = proof.kind == MULTIPART or proof.kind.endswith(COMPOSITE)
    if layered and proof.parts > 1 and facts.first_part not in (None, proof.part_size):
        return _none(
            f"its parts are {facts.first_part} B, not {proof.part_size} B "
            "(mount with --chunk-size equal to the upload's part size)"
        )
    return proof


# -- additional checksums ------------------------------------------------------------------

CrcFunction = Callable[[bytes | memoryview, int], int]
CRCS: dict[str, tuple[CrcFunction, Callable[[int, int, int], int], int]] = {
    # name: (crc of data continuing a previous crc, combine(crc1, crc2, len2), width in bytes)
    "crc32": (isal_zlib.crc32, crt.combine_crc32, 4),  # zlib.crc32's value, 8× faster
    "crc32c": (crt.crc32c, crt.combine_crc32c, 4),
    "crc64nvme": (crt.crc64nvme, crt.combine_crc64nvme, 8),
}
SHAS = ("sha1", "sha256")
CHECKSUMS = (*CRCS, *SHAS)


class PartHash(Protocol):
    """An in-order hash of one part (hashlib's interface)."""

    def update(self, data: bytes | memoryview, /) -> None: ...

    def digest(self) -> bytes: ...


class CrcHash:
    """A part's CRC, fed bytes in order or the CRCs of its chunks (combined, no bytes)."""

    def __init__(self, algorithm: str) -> None:
        self.algorithm = algorithm
        self._crc, _, self._width = CRCS[algorithm]
        self._value = 0
        self.length = 0

    def update(self, data: bytes | memoryview, /) -> None:
        self._value = self._crc(data, self._value)
        self.length += len(data)

    def extend(self, digest: bytes, length: int) -> None:
        """Appends a chunk of ``length`` bytes whose own CRC is ``digest``."""
        crc = int.from_bytes(digest, "big")
        self._value = crc_combine(self.algorithm, self._value, crc, length) if self.length else crc
        self.length += length

    def digest(self) -> bytes:
        return self._value.to_bytes(self._width, "big")


def new_hash(algorithm: str) -> PartHash:
    return CrcHash(algorithm) if algorithm in CRCS else hashlib.new(algorithm)


def part_hash(proof: Proof) -> PartHash:
    """A fresh hash of one part under ``proof``."""
    return new_hash(proof.algorithm)


def crc_combine(algorithm: str, crc1: int, crc2: int, length2: int) -> int:
    """The CRC of ``A + B`` from ``crc(A)``, ``crc(B)`` and ``len(B)``, without the bytes."""
    return CRCS[algorithm][1](crc1, crc2, length2)


def own_digest(algorithm: str, data: bytes | memoryview) -> bytes:
    """The hash of ``data`` alone under ``algorithm`` (a chunk's own CRC, MD5 or SHA)."""
    hasher = new_hash(algorithm)
    hasher.update(data)
    return hasher.digest()


class StretchHash:
    """The hash of one stretch of a chunk, fed by the GET that writes it, in order, while
    its bytes are in the receive buffer: a chunk whose stretches cover it needs no read-back
    to be hashed (:func:`stretches_digest`). Used by one thread at a time."""

    def __init__(self, algorithm: str, start: int) -> None:
        self.algorithm = algorithm
        self.start = start  # offset in the chunk
        self.length = 0
        self._hash = new_hash(algorithm)

    def update(self, data: bytes | memoryview) -> None:
        self._hash.update(data)
        self.length += len(data)

    def digest(self) -> bytes:
        return self._hash.digest()


def stretches_digest(algorithm: str, stretches: Iterable[StretchHash], length: int) -> bytes | None:
    """The own digest of a chunk of ``length`` bytes from the stretches its GETs wrote, if
    they cover it exactly, back to back; None otherwise (blocks left by an earlier fill, or
    several stretches under a hash that cannot be combined: MD5, SHA)."""
    covering = sorted((s for s in stretches if s.length), key=lambda s: s.start)
    if any(s.algorithm != algorithm for s in covering):
        return None
    if algorithm not in CRCS:
        whole = len(covering) == 1 and covering[0].start == 0 and covering[0].length == length
        return covering[0].digest() if whole else None
    crc = CrcHash(algorithm)
    for stretch in covering:
        if stretch.start != crc.length:
            return None
        crc.extend(stretch.digest(), stretch.length)
    return crc.digest() if crc.length == length else None


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def checksum_proof(
    checksum: Checksum,
    size: int,
    chunk_size: int,
    reason: str = "",
    *,
    parts: int | None = None,
    part_size: int | None = None,
) -> Proof:
    """The proof an additional checksum gives an object of ``size`` bytes read in chunks of
    ``chunk_size``; ``none`` if it cannot be checked, with ``reason`` (why the ETag proves
    nothing) before why. ``parts`` and ``part_size`` (a HEAD of part 1) tell a composite
    checksum's layout when neither its value (``-N``) nor a part list does (moto)."""
    prefix = f"{reason}; " if reason else ""
    if size <= 0:
        return _none("empty object")
    if checksum.algorithm not in CHECKSUMS:
        return _none(f"{prefix}unknown checksum {checksum.algorithm}")
    alg = checksum.algorithm
    value, _, count = checksum.value.partition("-")
    layered = checksum.type == "COMPOSITE" or bool(count)
    if not layered:
        said = checksum.type == "FULL_OBJECT"
        if alg in CRCS:
            parts = -(-size // chunk_size)
            return Proof(alg, value, parts, chunk_size, algorithm=alg, size=size, said=said)
        return Proof(alg, value, 1, size, algorithm=alg, size=size, said=said)
    sizes = checksum.part_sizes
    parts = int(count) if count.isdigit() else (len(sizes) or parts or 0)
    kind = alg + COMPOSITE
    uneven = any(s != sizes[0] for s in sizes[:-1]) or sizes[-1:] > sizes[:1]
    if sizes and (len(sizes) != parts or uneven):
        return _none(f"{prefix}{kind}: its {len(sizes)} parts are not of one size")
    part_size = sizes[0] if sizes else (size if parts == 1 else part_size or chunk_size)
    if parts < 1 or -(-size // part_size) != parts:
        return _none(
            f"{prefix}{kind}: {parts} parts do not match {size} bytes in parts of {part_size} B "
            "(mount with --chunk-size equal to the upload's part size)"
        )
    if part_size % chunk_size and parts > 1:
        return _none(f"{prefix}{kind}: part size {part_size} is not a multiple of the chunk size")
    return Proof(
        kind,
        f"{value}-{parts}",
        parts,
        part_size,
        algorithm=alg,
        size=size,
        part_expected=checksum.part_values if len(checksum.part_values) == parts else (),
    )


def for_chunks(proof: Proof, chunk_size: int) -> Proof:
    """``proof`` for chunks of ``chunk_size`` (a full-object CRC's parts are the chunks)."""
    if proof.full_crc and proof.size:
        return replace(proof, parts=-(-proof.size // chunk_size), part_size=chunk_size)
    return proof


def fits(proof: Proof, chunk_size: int) -> bool:
    """Whether each part of ``proof`` is a whole number of chunks of ``chunk_size``."""
    return proof.parts <= 1 or proof.part_size % chunk_size == 0


def wrong_parts(proof: Proof, part_digests: Iterable[bytes]) -> list[int]:
    """The parts whose digest differs from the checksum S3 listed for them."""
    return [
        i
        for i, (digest, want) in enumerate(zip(part_digests, proof.part_expected, strict=False))
        if _b64(digest) != want
    ]


def combine(proof: Proof, part_digests: Iterable[bytes]) -> str:
    """The ETag or checksum that the raw digests of the parts, in order, give under
    ``proof``, rendered as S3 sends it (hex ETag; base64 checksum, ``-N`` when composite)."""
    digests = list(part_digests)
    if proof.kind == WHOLE:
        (only,) = digests
        return only.hex()
    if proof.kind == MULTIPART:
        return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"
    if proof.kind.endswith(COMPOSITE):
        outer = part_hash(proof)
        outer.update(b"".join(digests))
        return f"{_b64(outer.digest())}-{len(digests)}"
    if proof.full_crc:
        crc = int.from_bytes(digests[0], "big")
        for index, digest in enumerate(digests[1:], start=1):
            length = min(proof.part_size, proof.size - index * proof.part_size)
            crc = crc_combine(proof.algorithm, crc, int.from_bytes(digest, "big"), length)
        return _b64(crc.to_bytes(len(digests[0]), "big"))
    (only,) = digests
    return _b64(only)


# -- the checkpoint's record of a proof -----------------------------------------------------


def to_record(proof: Proof) -> str:
    """What the cache keeps of a proof that passed: everything needed to check it again."""
    return json.dumps(asdict(proof), separators=(",", ":"))


def from_record(text: str) -> Proof:
    """A recorded proof; a record of rangefs before checksums holds only the kind."""
    if not text.startswith("{"):
        return Proof(text)
    fields = json.loads(text)
    fields["part_expected"] = tuple(fields.get("part_expected", ()))
    return Proof(**fields)


def etag_of(proof: Proof, data: bytes) -> str:
    """The ETag or checksum ``data`` would have under ``proof``'s layout (tests, tools)."""
    step = proof.part_size or max(1, len(data))
    digests = []
    for i in range(0, len(data), step):
        hasher = part_hash(proof)
        hasher.update(data[i : i + step])
        digests.append(hasher.digest())
    return combine(proof, digests)
