"""The read-ahead policy of one reader (pure: no I/O, property-tested).

mountpoint-s3 is the model: after an open or a seek the first request is small (the reader
asks for it, :mod:`rangefs.engine.reader`), so a media player's first bytes come after one round
trip; from the second read in sequence, the window
of bytes kept on their way ahead of it doubles each time a read finds its bytes not there yet,
up to ``Limits.largest``; a seek resets it; pressure (the global budget of bytes ahead is
spent, or the server pushes back) halves it. Small forward jumps (within the window) and the
kernel's slightly reordered requests do not count as seeks.

A reader that keeps seeking (:data:`RANDOM_SEEKS` seeks in a row, none followed by a read
in sequence: fio, a database, a zip index) is a random reader: each of its reads also asks
for the rest of the chunk(s) it touched, so its later reads in those chunks are served from
the cache instead of paying a round trip each (s3fs and rclone win random reads this way).
A media player's seek is followed by reads in sequence, so it never gets there: its seek
still costs one small request.

:func:`advance` takes the reader's state and one read and returns the new state and the byte
ranges to ask for ahead of it. Ranges are asked for when at least half the window is free
(or the rest of the object is less), so GETs are large (a whole chunk once the window spans
chunks) rather than one per read.
"""

from dataclasses import dataclass

FIRST_REQUEST = 1024 * 1024 + 128 * 1024  # mountpoint-s3's first request: one round trip
RANDOM_SEEKS = 3  # seeks in a row (no read in sequence after any) that make a random reader


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
    seeks: int = 0  # seeks in a row, none followed by a read in sequence

    def ahead(self) -> int:
        """Bytes asked for ahead of the reader (what it holds of the global budget)."""
        return max(0, self.asked - self.next_offset)

    @property
    def random(self) -> bool:
        """The reader keeps seeking: its reads ask for the rest of the chunks they touch."""
        return self.seeks >= RANDOM_SEEKS


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
        # and reads one frame should not pull in bytes it will not read. A random reader
        # asks for the chunks around its read instead.
        seeks = window.seeks + 1 if window.reads <= 1 else 1
        seeked = Window(end, 0, end, 1, seeks)
        if not seeked.random or offset >= end:
            return seeked, []
        return seeked, _around(offset, end, object_size, limits, room)
    size = window.size or limits.first
    if waited and window.size:
        size = min(size * 2, limits.largest)
    asked = max(window.asked, end)
    goal = end + size
    if size >= limits.chunk:
        goal = -(-goal // limits.chunk) * limits.chunk
    goal = min(object_size, goal)
    reads, seeks = window.reads + 1, window.seeks
    if goal <= asked or (goal - asked < size // 2 and goal < object_size):
        return Window(end, size, asked, reads, seeks), []
    want = goal - asked
    allowed = room - (asked - end)  # what this reader may add to what it holds ahead
    if want > allowed:
        size = max(limits.first, size // 2)
        want = max(0, allowed)
    if want <= 0:
        return Window(end, size, asked, reads, seeks), []
    return Window(end, size, asked + want, reads, seeks), [(asked, asked + want)]


def _around(
    offset: int, end: int, object_size: int, limits: Limits, room: int
) -> list[tuple[int, int]]:
    """A random reader's read ``[offset, end)``: the chunks it touches (nothing if the
    budget has no room for them)."""
    first = offset // limits.chunk * limits.chunk
    last = min(object_size, -(-end // limits.chunk) * limits.chunk)
    return [(first, last)] if last - first <= room else []
