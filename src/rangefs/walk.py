"""Read-ahead across files: is a reader walking a directory, and which files to fetch next.

``rsync -a``, ``cp -r`` and ``tar c`` read one file after another, so without help every
file costs a full round trip. They open the regular files of a directory in its listing
order (rsync sorts by name, cp and tar follow readdir order: for S3 keys both are the
listing order) and read each to its end. Once a reader has done that for
:data:`WALK_AFTER` files in a row, the next :data:`AHEAD_FILES` files of the listing are
worth fetching before they are opened.

:func:`opened` and :func:`finished` are the pure policy for one directory (no I/O,
property-tested). :class:`Walks` keeps that state for the directories being read (a bounded
LRU) and what the walks hold ahead, which counts against the global budget of bytes ahead
(:class:`~rangefs.budget.Budget`); it does no I/O either: the filesystem asks the reader to
fetch (:meth:`~rangefs.reader.ChunkReader.prefetch`).
"""

import bisect
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from rangefs.namespace import DirListing, Entry
from rangefs.stats import Stats

log = logging.getLogger(__name__)

WALK_AFTER = 2  # files opened in listing order, each read to its end, before a walk is trusted
# Files asked for ahead of a walker. Measured (tests/benchmark/tree.py, rsync -a of 1,500
# 4 KiB objects, 20 ms link): 0 → 58 s, 8 → 20.5 s, 32 → 19.1 s, 64 → 19.9 s; the plateau is
# the mount's own cost per file (~13 ms). 32 keeps a 60 ms link busy at ~2 ms a file.
AHEAD_FILES = 32
WALKED_DIRS = 64  # directories whose walk state is kept (least recently opened dropped)
AHEAD_HOLD = 30.0  # seconds files asked for ahead count against the budget unless opened


@dataclass(frozen=True, slots=True)
class Walk:
    """A reader's progress through one directory's regular files (``files``: listing
    order, which is sorted order)."""

    files: tuple[str, ...]
    last: int = -1  # index of the file opened last
    finished: bool = False  # the file opened last was read to its end
    run: int = 0  # files opened in order in a row, each after the previous was read whole
    asked: int = 0  # while walking: files before this index were asked for ahead

    @property
    def walking(self) -> bool:
        return self.run >= WALK_AFTER

    def index(self, name: str) -> int | None:
        i = bisect.bisect_left(self.files, name)
        return i if i < len(self.files) and self.files[i] == name else None


def opened(walk: Walk, name: str, ahead: int = AHEAD_FILES) -> tuple[Walk, range]:
    """The state after ``name`` is opened, and the indices of the files to ask for ahead.

    In order means: the next file after the last one opened, which was read to its end; while
    walking, a forward skip to a file already asked for also continues the walk (rsync skips
    files already up to date). Anything else (a random open, a re-open of an earlier file, a
    file not read whole) stops it. Opening the same file again changes nothing.
    """
    i = walk.index(name)
    if i is None:
        return replace(walk, last=-1, finished=False, run=0, asked=0), range(0)
    if i == walk.last:
        return walk, range(0)
    step = i == walk.last + 1 or (walk.walking and walk.last < i < walk.asked)
    in_order = walk.last >= 0 and walk.finished and step
    if not in_order:
        return replace(walk, last=i, finished=False, run=0, asked=0), range(0)
    run = walk.run + 1
    if run < WALK_AFTER:
        return replace(walk, last=i, finished=False, run=run, asked=0), range(0)
    start = max(walk.asked, i + 1)
    end = min(len(walk.files), i + 1 + ahead)
    return replace(walk, last=i, finished=False, run=run, asked=max(start, end)), range(start, end)


def finished(walk: Walk, name: str) -> Walk:
    """The state after the file ``name`` was read to its end."""
    if walk.last >= 0 and walk.index(name) == walk.last and not walk.finished:
        return replace(walk, finished=True)
    return walk


@dataclass
class _Dir:
    listing: DirListing
    walk: Walk
    ahead: dict[str, tuple[int, float]] = field(default_factory=dict)  # not opened: bytes, when


class Walks:
    """The walks of the directories being read, from the listings the namespace already
    holds (a walk sends no LIST or HEAD of its own), and what they hold ahead (the budget
    asks :meth:`ahead`; a walker that went away holds nothing after :data:`AHEAD_HOLD`).
    Counted in ``stats``: files asked for ahead, and of those the ones then opened (the hit
    rate)."""

    def __init__(
        self,
        stats: Stats,
        chunk_size: int,
        ahead_files: int = AHEAD_FILES,
        dirs: int = WALKED_DIRS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stats = stats
        self.clock = clock
        self.chunk_size = chunk_size
        self.ahead_files = ahead_files
        self.max_dirs = dirs
        self._dirs: OrderedDict[str, _Dir] = OrderedDict()

    def ahead(self) -> int:
        """Bytes asked for ahead of walkers, not opened yet, in the last :data:`AHEAD_HOLD`
        seconds."""
        since = self.clock() - AHEAD_HOLD
        return sum(n for d in self._dirs.values() for n, t in d.ahead.values() if t > since)

    def opened(self, directory: str, name: str, listing: DirListing, *, room: int) -> list[Entry]:
        """The file ``name`` of ``directory`` (listed as ``listing``) was opened; returns
        the entries to fetch ahead: small files whole, others their first chunk, while they
        fit in ``room`` (the bytes the walks may hold ahead in all; 0 under pushback)."""
        state = self._dirs.get(directory)
        if state is None or state.listing is not listing:
            files = [n for n, e in listing.entries.items() if not e.is_dir]
            state = self._dirs[directory] = _Dir(listing, Walk(tuple(sorted(files))))
            while len(self._dirs) > self.max_dirs:
                self._dirs.popitem(last=False)
        self._dirs.move_to_end(directory)
        if state.ahead.pop(name, None) is not None:
            self.stats.walk_files_opened += 1
        was_walking = state.walk.walking
        walk, wanted = opened(state.walk, name, self.ahead_files)
        if walk.walking and not was_walking:
            log.debug("walk detected in /%s at %s", directory, name)
        elif was_walking and not walk.walking:
            log.debug("walk stopped in /%s at %s", directory, name)
            state.ahead.clear()
        room -= self.ahead()
        fetch: list[Entry] = []
        for i in wanted:
            entry = listing.entries[walk.files[i]]
            size = min(entry.size, self.chunk_size)
            if size > room:
                walk = replace(walk, asked=i)
                break
            room -= size
            if size:
                fetch.append(entry)
                state.ahead[entry.name] = (size, self.clock())
                self.stats.walk_files_ahead += 1
        state.walk = walk
        return fetch

    def finished(self, directory: str, name: str) -> None:
        """The file ``name`` of ``directory`` was read to its end."""
        state = self._dirs.get(directory)
        if state is not None:
            state.walk = finished(state.walk, name)
