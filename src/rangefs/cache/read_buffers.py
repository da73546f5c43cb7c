"""Buffers for reads out of the cache, taken again once nothing refers to them.

A FUSE read of 1 MiB read into a new ``bytearray`` paid a memset of the whole buffer and,
in a worker thread's malloc arena, fresh pages (a page fault per 4 KiB): about 4 % of the
daemon's CPU on a sequential read, cold or warm (perf). A read instead gets a view of a
pooled buffer. A buffer is handed out again only when no view of it is alive: every view
of a ``bytearray`` holds a reference to it, so CPython's reference count says when the last
one (for a FUSE read, pyfuse3's, right after its reply) is gone. Nothing can see a buffer
being overwritten, whoever kept a view and for however long.
"""

import sys
import threading

KEEP = 16  # buffers pooled: the reads one mount serves at once (the kernel sends <= 12 ahead)
SIZE = 1024 * 1024 + 64 * 1024  # the largest FUSE read, widened to whole 64 KiB blocks
_FREE = 3  # references to a pooled buffer nobody uses: the pool, the loop, getrefcount's


class ReadBuffers:
    def __init__(self, keep: int = KEEP, size: int = SIZE) -> None:
        self._pool: list[bytearray] = []
        self._keep = keep
        self._size = size
        self._lock = threading.Lock()

    def take(self, size: int) -> memoryview:
        """A writable view of ``size`` bytes that no other view shares (contents undefined);
        a read larger than a pooled buffer gets a buffer of its own."""
        if size > self._size:
            return memoryview(bytearray(size))
        with self._lock:
            for buf in self._pool:
                if sys.getrefcount(buf) == _FREE:
                    return memoryview(buf)[:size]
            fresh = bytearray(self._size)
            if len(self._pool) < self._keep:
                self._pool.append(fresh)
            return memoryview(fresh)[:size]
