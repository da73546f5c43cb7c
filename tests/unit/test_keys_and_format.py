"""Typed cache keys round-trip through their encoding; the value format catches damage."""

from hypothesis import given, settings
from hypothesis import strategies as st

from rangefs.cache import cache_format
from rangefs.keys import VERSION_MARK, ChunkKey, ObjectId
from rangefs.remote.store import ObjectVersion

texts = st.text(min_size=0, max_size=40)


@given(
    bucket=st.from_regex(r"[a-z0-9][a-z0-9.-]{1,20}[a-z0-9]", fullmatch=True),
    key=texts,
    etag=st.text(alphabet=st.characters(blacklist_characters="\0"), max_size=40).filter(
        lambda etag: not etag.startswith(VERSION_MARK)  # an ETag is quoted: never starts so
    ),
    chunk_size=st.integers(1, 2**40),
    index=st.integers(0, 2**40),
)
def test_chunk_keys_round_trip_even_with_separators_in_the_object_key(
    bucket, key, etag, chunk_size, index
):
    chunk = ChunkKey(ObjectId(bucket, key, etag), chunk_size, index)
    assert ChunkKey.parse(chunk.encode()) == chunk


def test_keys_of_rangefs_0_1_still_parse():
    """Caches written by 0.1 stay valid: same encoding."""
    assert ChunkKey.parse(
        "\0".join(("c2", "bkt", "dir/a.bin", '"e1"', "8388608", "3"))
    ) == ChunkKey(ObjectId("bkt", "dir/a.bin", '"e1"'), 8388608, 3)
    assert ObjectId("bkt", "dir/a.bin", '"e1"').tag() == 'bkt\0dir/a.bin\0"e1"'


@given(
    key=texts,
    version_id=st.text(alphabet=st.characters(blacklist_characters="\0"), min_size=1, max_size=40),
    index=st.integers(0, 2**40),
)
def test_versioned_chunk_keys_round_trip(key, version_id, index):
    chunk = ObjectVersion("bkt", key, '"e1"', 10, version_id).chunk(8388608, index)
    assert chunk.obj == ObjectId("bkt", key, "", version_id)
    assert ChunkKey.parse(chunk.encode()) == chunk


def test_a_versioned_key_never_meets_the_etag_key_of_the_same_object():
    plain = ObjectVersion("bkt", "a", '"e1"', 10)
    versioned = ObjectVersion("bkt", "a", '"e1"', 10, "v1")
    assert plain.chunk(8, 0).encode() == "\0".join(("c2", "bkt", "a", '"e1"', "8", "0"))
    assert versioned.chunk(8, 0).encode() == "\0".join(("c2", "bkt", "a", "versionId=v1", "8", "0"))
    assert plain.id.tag() != versioned.id.tag()


def test_foreign_keys_are_not_chunk_keys():
    for text in ("etag1\0b\0k", "\0".join("c1bke12"), "\0".join("c2bkex2"), 42, b"c2"):
        assert ChunkKey.parse(text) is None


def encode(data: bytes) -> bytes:
    reader = cache_format.EncodedReader(data)
    out = b""
    while piece := reader.read(7777):
        out += piece
    return out


@settings(deadline=None, max_examples=50)
@given(data=st.binary(min_size=0, max_size=3 * cache_format.BLOCK + 5))
def test_a_value_decodes_to_its_data(data):
    assert cache_format.decode(encode(data), len(data)) == data


@settings(deadline=None, max_examples=50)
@given(
    data=st.binary(min_size=1, max_size=2 * cache_format.BLOCK + 5),
    where=st.floats(0, 1, exclude_max=True),
)
def test_any_flipped_or_missing_byte_is_a_miss(data, where):
    value = bytearray(encode(data))
    at = int(where * len(value))
    flipped = bytes(value[:at]) + bytes([value[at] ^ 0x40]) + bytes(value[at + 1 :])
    assert cache_format.decode(flipped, len(data)) is None
    assert cache_format.decode(bytes(value[:-1]), len(data)) is None
    assert cache_format.decode(bytes(value), len(data) + 1) is None
