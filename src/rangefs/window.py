"""The read-ahead policy of one reader (pure: no I/O, property-tested).

mountpoint-s3 is the model: after an open or a seek the first request is small (the reader
asks for it, :mod:`rangefs.reader`), so a media player's first bytes come after one round
trip; from the second read in sequence, the window
of bytes kept on their way ahead of it doubles each time a read finds its bytes not there yet,
up to ``Limits.largest``; a seek resets it; pressure (the global budget of bytes ahead is
spent, or the server pushes back) halves it. Small forward jumps (within the window) and the
kernel's slightly reordered requests do not count as seeks.

:func:`advance` takes the reader's state and one read and returns the new state and the byte
ranges to ask for ahead of it. Ranges are asked for when at least half the window is free
(or the rest of the object is less), so GETs are large (a whole chunk once the window spans
chunks) rather than one per read.
"""

from dataclasses import dataclass

FIRST_REQUEST = 1024 * 1024 + 128 * 1024  # mountpoint-s3's first request: one round trip


@dataclass(frozen=True, slots=True)
class Limits:
    first: int  # the window after an open or a seek
    largest: int  # the largest window (on disk, not in RAM)
    slack: int  # a read this far behind where the last ended is still sequential
    chunk: int  # a window of a chunk or more asks for whole chunks


@dataclass(frozen=True, slots=True)
class Window:
    """Where the next sequential read would start, the window, and how far ahead bytes
    have been asked for (``asked``: bytes before it are present, on their way or queued)."""

    next_offset: int = 0
    size: int = 0
    asked: int = 0
    reads: int = 0  # reads in sequence since the open or the last seek

    def ahead(self) -> int:
        """Bytes asked for ahead of the reader (what it holds of the global budget)."""
        return max(0, self.asked - self.next_offset)


def advance(
    window: Window,
    offset: int,
    length: int,
    object_size: int,
    limits: Limits,
    *,
    waited: bool,
    room: int,
) -> tuple[Window, list[tuple[int, int]]]:
    """The reader's new window after a read of ``[offset, offset+length)``, and the ranges
    ``[a, b)`` to ask for ahead.

    ``waited``: the reader's previous read had to wait for bytes (the window was too small);
    ``room``: bytes of the global read-ahead budget this reader may hold ahead (its own
    share included).
    """
    end = min(offset + length, object_size)
    jump = offset - window.next_offset
    sequential = -limits.slack <= jump <= max(limits.slack, window.size)
    if not sequential or not window.reads:
        # A first read (after an open or a seek) asks for nothing ahead: a player that seeks
        # and reads one frame should not pull in bytes it will not read.
        return Window(end, 0, end, 1), []
    size = window.size or limits.first
    if waited and window.size:
        size = min(size * 2, limits.largest)
    asked = max(window.asked, end)
    goal = end + size
    if size >= limits.chunk:
        goal = -(-goal // limits.chunk) * limits.chunk
    goal = min(object_size, goal)
    reads = window.reads + 1
    if goal <= asked or (goal - asked < size // 2 and goal < object_size):
        return Window(end, size, asked, reads), []
    want = goal - asked
    allowed = room - (asked - end)  # what this reader may add to what it holds ahead
    if want > allowed:
        size = max(limits.first, size // 2)
        want = max(0, allowed)
    if want <= 0:
        return Window(end, size, asked, reads), []
    return Window(end, size, asked + want, reads), [(asked, asked + want)]
