"""ReadBuffers: a buffer is handed out again only once no view of it is alive."""

from rangefs.cache.read_buffers import ReadBuffers


def test_a_buffer_comes_back_only_after_its_last_view_is_gone():
    buffers = ReadBuffers(keep=4, size=1024)
    first = buffers.take(1000)
    first[:5] = b"hello"
    piece = first[2:4]  # a slice keeps the buffer as busy as the view it came from
    del first
    second = buffers.take(1000)
    assert second.obj is not piece.obj
    assert bytes(piece) == b"ll"
    owner = id(piece.obj)
    del piece
    third = buffers.take(10)
    assert id(third.obj) == owner
    assert len(third) == 10


def test_the_pool_keeps_at_most_keep_buffers_and_large_reads_get_their_own():
    buffers = ReadBuffers(keep=2, size=1024)
    held = [buffers.take(1024) for _ in range(3)]
    assert len({id(v.obj) for v in held}) == 3
    pooled = {id(v.obj) for v in held[:2]}
    del held
    again = [buffers.take(1024) for _ in range(2)]
    assert {id(v.obj) for v in again} == pooled  # the third buffer was not kept
    big = buffers.take(4096)
    assert len(big) == 4096 and id(big.obj) not in pooled
    del big
    assert id(buffers.take(1024).obj) not in pooled  # the two pooled ones are still in use
