"""Read-ahead across files: is a reader walking a directory, and which files to fetch next.

``rsync -a``, ``cp -r`` and ``tar c`` read one file after another, so without help every
file costs a full round trip. They open the regular files of a directory in its listing
order (rsync sorts by name, cp and tar follow readdir order: for S3 keys both are the
listing order) and read each to its end. Once a reader has done that for
:data:`WALK_AFTER` files in a row, the next :data:`AHEAD_FILES` files of the listing are
worth fetching before they are opened.

:func:`opened` and :func:`finished` are the pure policy for one directory (no I/O,
property-tested): it sees a file only by how many files after the last one opened it
comes. :class:`Walks` keeps that state for the directories being read (a bounded LRU), a
short window of the files that follow the last one opened, read from the metadata index by
name (a cursor, so memory does not grow with the directory: a million keys cost the same as
a hundred), and what the walks hold ahead, which counts against the global budget of bytes
ahead (:class:`~rangefs.engine.budget.Budget`). It sends nothing to S3: the filesystem asks the
reader to fetch (:meth:`~rangefs.engine.reader.ChunkReader.prefetch`).
"""

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

from rangefs.cache.metadata_index import Entry, ListingInfo
from rangefs.stats import Stats

log = logging.getLogger(__name__)

WALK_AFTER = 2  # files opened in listing order, each read to its end, before a walk is trusted
# Files asked for ahead of a walker. Measured (tests/benchmark/tree.py, rsync -a of 1,500
# 4 KiB objects, 20 ms link): 0 → 58 s, 8 → 20.5 s, 32 → 19.1 s, 64 → 19.9 s; the plateau is
# the mount's own cost per file (~13 ms). 32 keeps a 60 ms link busy at ~2 ms a file.
AHEAD_FILES = 32
WALKED_DIRS = 64  # directories whose walk state is kept (least recently opened dropped)
AHEAD_HOLD = 30.0  # seconds files asked for ahead count against the budget unless opened

# The regular files of a listing after a name, in name order: (listing id, after, limit).
FilesAfter = Callable[[int, str, int], Awaitable[list[Entry]]]


@dataclass(frozen=True, slots=True)
class Walk:
    """A reader's progress through one directory's regular files (in listing order)."""

    last: str | None = None  # the file opened last
    finished: bool = False  # the file opened last was read to its end
    run: int = 0  # files opened in order in a row, each after the previous was read whole
    asked: int = 0  # while walking: how many files after ``last`` were asked for ahead

    @property
    def walking(self) -> bool:
        return self.run >= WALK_AFTER


def opened(walk: Walk, name: str, step: int | None, ahead: int = AHEAD_FILES) -> tuple[Walk, range]:
    """The state after ``name`` is opened, and which files after it to ask for ahead (0 is
    the file right after it).

    ``step`` says where ``name`` is: the ``step``-th file after the last one opened (1: the
    next one), or None if it is not after it (or farther than anyone looked). In order
    means: the next file after the last one opened, which was read to its end; while
    walking, a forward skip to a file already asked for also continues the walk (rsync skips
    files already up to date). Anything else (a random open, a re-open of an earlier file, a
    file not read whole) stops it. Opening the same file again changes nothing. Files are
    asked for once at most half of ``ahead`` remain asked for: each batch (its pins read,
    its entries looked up) then serves about ``ahead / 2`` opens, not one.
    """
    if name == walk.last:
        return walk, range(0)
    forward = step is not None and (step == 1 or (walk.walking and 1 <= step <= walk.asked))
    if not (walk.last is not None and walk.finished and forward):
        return Walk(last=name), range(0)
    assert step is not None
    run = walk.run + 1
    if run < WALK_AFTER:
        return Walk(name, False, run, 0), range(0)
    already = max(walk.asked - step, 0)
    if already > ahead // 2:  # topped up by half a window at once: fewer, larger batches
        return Walk(name, False, run, already), range(0)
    return Walk(name, False, run, max(already, ahead)), range(already, ahead)


def finished(walk: Walk, name: str) -> Walk:
    """The state after the file ``name`` was read to its end."""
    if walk.last == name and not walk.finished:
        return replace(walk, finished=True)
    return walk


@dataclass
class _Dir:
    listing: int  # the id of the listing the window was read from
    walk: Walk = field(default_factory=Walk)
    after: list[Entry] = field(default_factory=list)  # files after walk.last, as far as read
    complete: bool = False  # ``after`` reaches the end of the listing
    ahead: dict[str, tuple[int, float]] = field(default_factory=dict)  # not opened: bytes, when

    def forget_window(self) -> None:
        self.after = []
        self.complete = False


class Walks:
    """The walks of the directories being read, from the listings the metadata index holds
    (a walk sends no LIST or HEAD of its own), and what they hold ahead (the budget asks
    :meth:`ahead`; a walker that went away holds nothing after :data:`AHEAD_HOLD`). Counted
    in ``stats``: files asked for ahead, and of those the ones then opened (the hit rate).

    Per directory it holds at most about ``2 * ahead_files`` entries, whatever the number of
    keys; the index is read once when a reader opens the file after the last one (to tell a
    step from a jump), then about once every ``ahead_files`` files of a walk.
    """

    def __init__(
        self,
        stats: Stats,
        chunk_size: int,
        files_after: FilesAfter,
        ahead_files: int = AHEAD_FILES,
        dirs: int = WALKED_DIRS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stats = stats
        self.clock = clock
        self.chunk_size = chunk_size
        self.files_after = files_after
        self.ahead_files = ahead_files
        self.max_dirs = dirs
        self._dirs: OrderedDict[str, _Dir] = OrderedDict()

    def ahead(self) -> int:
        """Bytes asked for ahead of walkers, not opened yet, in the last :data:`AHEAD_HOLD`
        seconds."""
        since = self.clock() - AHEAD_HOLD
        return sum(n for d in self._dirs.values() for n, t in d.ahead.values() if t > since)

    def _state(self, directory: str, listing: ListingInfo) -> _Dir:
        state = self._dirs.get(directory)
        if state is None:
            state = self._dirs[directory] = _Dir(listing.id)
            while len(self._dirs) > self.max_dirs:
                self._dirs.popitem(last=False)
        elif state.listing != listing.id:  # listed again: same walk, window from the new one
            state.listing = listing.id
            state.forget_window()
        self._dirs.move_to_end(directory)
        return state

    async def _extend(self, state: _Dir, want: int) -> None:
        """Reads files after the window's end until it holds ``want`` (or the listing ends)."""
        if state.complete or len(state.after) >= want or state.walk.last is None:
            return
        after = state.after[-1].name if state.after else state.walk.last
        limit = max(want - len(state.after), self.ahead_files)
        page = await self.files_after(state.listing, after, limit)
        state.after.extend(page)
        state.complete = len(page) < limit

    async def opened(
        self, directory: str, name: str, listing: ListingInfo, *, room: int
    ) -> list[Entry]:
        """The file ``name`` of ``directory`` (listed as ``listing``) was opened; returns
        the entries to fetch ahead: small files whole, others their first chunk, while they
        fit in ``room`` (the bytes the walks may hold ahead in all; 0 under pushback)."""
        state = self._state(directory, listing)
        if state.ahead.pop(name, None) is not None:
            self.stats.walk_files_opened += 1
        walk = state.walk
        if name == walk.last:
            return []
        if walk.finished and walk.last is not None and name > walk.last:
            await self._extend(state, 1)  # is it the next file? (read once per step)
        step = next((i + 1 for i, e in enumerate(state.after) if e.name == name), None)
        walk, wanted = opened(walk, name, step, self.ahead_files)
        if walk.walking and not state.walk.walking:
            log.debug("walk detected in /%s at %s", directory, name)
        elif state.walk.walking and not walk.walking:
            log.debug("walk stopped in /%s at %s", directory, name)
            state.ahead.clear()
        state.walk = walk
        if step is not None and walk.run:
            del state.after[:step]
        else:
            state.forget_window()
        if not wanted:
            return []
        await self._extend(state, wanted.stop)
        room -= self.ahead()
        fetch: list[Entry] = []
        for i in wanted:
            if i >= len(state.after):
                break
            entry = state.after[i]
            size = min(entry.size, self.chunk_size)
            if size > room:
                state.walk = replace(walk, asked=i)
                break
            room -= size
            if size:
                fetch.append(entry)
                state.ahead[entry.name] = (size, self.clock())
                self.stats.walk_files_ahead += 1
        return fetch

    def finished(self, directory: str, name: str) -> None:
        """The file ``name`` of ``directory`` was read to its end."""
        state = self._dirs.get(directory)
        if state is not None:
            state.walk = finished(state.walk, name)
