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
# In the ETag's place, a versionId (--version-at mounts) is written after this mark; an ETag
# is quoted hex (or W/"..."), so it never starts with it and old keys parse as before.
VERSION_MARK = "versionId="


@dataclass(frozen=True, slots=True)
class ObjectId:
    """One version of one object: (bucket, key, ETag), as mountpoint-s3's ``ObjectId``; or,
    on a ``--version-at`` mount, (bucket, key, versionId) with the ETag left empty: an S3
    versionId names bytes that never change, so nothing needs revalidating."""

    bucket: str
    key: str
    etag: str
    version_id: str = ""

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def token(self) -> str:
        """What names the version in encoded keys: the ETag, or the marked versionId."""
        return VERSION_MARK + self.version_id if self.version_id else self.etag

    @classmethod
    def from_token(cls, bucket: str, key: str, token: str) -> "ObjectId":
        if token.startswith(VERSION_MARK):
            return cls(bucket, key, "", token[len(VERSION_MARK) :])
        return cls(bucket, key, token)

    def tag(self) -> str:
        """The diskcache tag all chunks of this version carry (evicted together)."""
        return SEP.join((self.bucket, self.key, self.token))

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
            (KEY_VERSION, o.bucket, o.key, o.token, str(self.chunk_size), str(self.index))
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
        obj = ObjectId.from_token(head[1], tail[0], tail[1])
        return cls(obj, int(tail[2]), int(tail[3]))
