"""Which proof S3 gives for an object's bytes, and the arithmetic to check it (pure).

A digest rangefs computes on arrival protects the disk, not the wire (GUIDE lesson 17). What
S3 itself vouches for is the ETag:

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

Nothing here does I/O; :mod:`rangefs.verifier` applies it to the read path.
"""

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from rangefs.store import ObjectFacts

WHOLE = "etag-md5"
MULTIPART = "etag-multipart-md5"
NONE = "none"
NO_CHECKSUM = "unverified: S3 gave no checksum rangefs can use for this object"
CUSTOMER_KEY = "read with a customer key (SSE-C): its ETag is not an MD5 of the bytes"

_MD5 = re.compile(r"[0-9a-f]{32}")
_MULTIPART = re.compile(r"([0-9a-f]{32})-([1-9][0-9]{0,4})")  # S3 allows at most 10,000 parts


@dataclass(frozen=True, slots=True)
class Proof:
    """What S3 proves about one object version.

    ``part_size`` is the byte length of every part but the last (the whole object for a
    single-part ETag); each part is a run of whole chunks. ``expected`` is the ETag as
    :func:`combine` renders a computed one (unquoted, lower case).
    """

    kind: str
    expected: str = ""
    parts: int = 0
    part_size: int = 0
    reason: str = ""

    @property
    def verifiable(self) -> bool:
        return self.kind != NONE

    def part_of(self, offset: int) -> int:
        return offset // self.part_size

    @property
    def detail(self) -> str:
        """Why there is no proof, or the part layout a multipart proof assumes; else ''."""
        if self.kind == NONE:
            return f"{NO_CHECKSUM}: {self.reason}"
        if self.kind == MULTIPART:
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
        return Proof(WHOLE, text, 1, size)
    m = _MULTIPART.fullmatch(text)
    if m is None:
        return _none(f"ETag {etag!r} is not an MD5")
    parts = int(m.group(2))
    if parts == 1:
        return Proof(MULTIPART, text, 1, size)
    size_of_part = part_size or chunk_size
    if size_of_part % chunk_size:
        return _none(f"part size {size_of_part} is not a multiple of the chunk size {chunk_size}")
    if -(-size // size_of_part) != parts:
        return _none(
            f"{parts} parts do not match {size} bytes in parts of {size_of_part} B "
            "(mount with --chunk-size equal to the upload's part size)"
        )
    return Proof(MULTIPART, text, parts, size_of_part)


ENCRYPTED_ETAG = ("aws:kms", "aws:kms:dsse")  # SSE-S3 ("AES256") keeps the MD5 ETag


def confirm(proof: Proof, facts: ObjectFacts) -> Proof:
    """``proof`` if what S3 says of the object (a HEAD of its part 1) bears out its
    assumptions, else ``none`` and why: an ETag of an SSE-KMS or SSE-C object is not an MD5
    of the bytes, and a multipart layout guessed from the part count may be wrong."""
    if facts.encryption in ENCRYPTED_ETAG or facts.customer_key:
        kind = "SSE-C" if facts.customer_key else facts.encryption
        return _none(f"the object is encrypted with {kind}: its ETag is not an MD5 of the bytes")
    if proof.kind == WHOLE and (facts.parts or 1) > 1:
        return _none(f"it was uploaded in {facts.parts} parts but its ETag has no part count")
    if (
        proof.kind == MULTIPART
        and proof.parts > 1
        and facts.first_part not in (None, proof.part_size)
    ):
        return _none(
            f"its parts are {facts.first_part} B, not {proof.part_size} B "
            "(mount with --chunk-size equal to the upload's part size)"
        )
    return proof


def combine(proof: Proof, part_digests: Iterable[bytes]) -> str:
    """The ETag that the raw MD5 digests of the parts, in order, give under ``proof``."""
    digests = list(part_digests)
    if proof.kind == WHOLE:
        (only,) = digests
        return only.hex()
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def etag_of(proof: Proof, data: bytes) -> str:
    """The ETag ``data`` would have under ``proof``'s layout (for tests and tools)."""
    step = proof.part_size or max(1, len(data))
    parts = [hashlib.md5(data[i : i + step]).digest() for i in range(0, len(data), step)]
    return combine(proof, parts)
