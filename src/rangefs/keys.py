"""Typed names for what the cache stores: an object version, one chunk of it, its records.

The encoded forms are the diskcache keys and tags (``c2``/``etag1`` formats of rangefs 0.1,
unchanged, so existing caches stay valid). They are built and parsed here and nowhere else:
no other module joins or splits on ``\\0``.
"""

from dataclasses import dataclass

KEY_VERSION = "c2"  # chunk keys: bump when the value format or key meaning changes
ETAG_RECORD = "etag1"  # the per-object record of the last ETag seen
PROOF_RECORD = "proof1"  # the per-version record: S3's proof (the ETag) checked these bytes
SEP = "\0"  # cannot occur in a bucket name, an ETag or a number; keys are split around it


@dataclass(frozen=True, slots=True)
class ObjectId:
    """One version of one object: (bucket, key, ETag), as mountpoint-s3's ``ObjectId``."""

    bucket: str
    key: str
    etag: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def tag(self) -> str:
        """The diskcache tag all chunks of this version carry (evicted together)."""
        return SEP.join((self.bucket, self.key, self.etag))

    def etag_record(self) -> str:
        """The key under which the last ETag seen for this object is recorded."""
        return SEP.join((ETAG_RECORD, self.bucket, self.key))

    def proof_record(self) -> str:
        """The key under which "this version's cached bytes passed S3's proof" is recorded
        (tagged like the chunks, so it goes when the version's chunks are evicted)."""
        return SEP.join((PROOF_RECORD, self.bucket, self.key, self.etag))


@dataclass(frozen=True, slots=True)
class ChunkKey:
    """Chunk ``index`` of ``obj`` cut at ``chunk_size``: everything a chunk's bytes depend on."""

    obj: ObjectId
    chunk_size: int
    index: int

    def encode(self) -> str:
        o = self.obj
        return SEP.join(
            (KEY_VERSION, o.bucket, o.key, o.etag, str(self.chunk_size), str(self.index))
        )

    @classmethod
    def parse(cls, text: object) -> "ChunkKey | None":
        """The key ``text`` encodes, or None if it is not a chunk key of this format.

        The object key may itself contain the separator, so the fixed fields are taken from
        both ends.
        """
        if not isinstance(text, str):
            return None
        head = text.split(SEP, 2)
        if len(head) != 3 or head[0] != KEY_VERSION:
            return None
        tail = head[2].rsplit(SEP, 3)
        if len(tail) != 4 or not (tail[2].isdigit() and tail[3].isdigit()):
            return None
        return cls(ObjectId(head[1], tail[0], tail[1]), int(tail[2]), int(tail[3]))
