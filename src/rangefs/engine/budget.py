"""What all readers of a mount share: GETs in flight and bytes asked for ahead.

* GETs in flight are capped (``max_gets``; each costs one receive buffer of RAM, not a
  chunk) and the cap follows the server: halved on pushback (503 SlowDown, 429), grown by one
  after a cap's worth of GETs succeed (AIMD), so a throttling server sees fewer requests, not
  a retry storm.
* Read-ahead GETs never take the last ``reserve`` slots: a read waiting for its bytes is not
  queued behind read-ahead.
* GETs that fill the chunks around a random reader's reads (:mod:`rangefs.engine.window`) take one
  of a few ``around_slots`` first (an eighth of the GETs, at least two): a handful in flight
  fill chunks about as fast as many, and each random read's own GET then shares the server
  (and the daemon's CPU) with a handful of others, not with dozens.
* Bytes asked for ahead of readers (on disk, not in RAM) are capped across readers
  (``max_ahead``); a reader's window shrinks when the cap is reached.
"""

import logging
import weakref
from typing import Protocol

import trio

log = logging.getLogger(__name__)

MIN_GETS = 2
AROUND_SHARE = 8  # GETs in flight for random readers' chunks: this fraction of the cap
PUSHBACK_QUIET = 1.0  # seconds: pushbacks closer than this are one event (one halving)


class HoldsAhead(Protocol):
    def ahead(self) -> int: ...


class Budget:
    def __init__(self, max_gets: int, max_ahead: int, reserve: int = 2) -> None:
        self.max_gets = max(MIN_GETS, max_gets)
        self.reserve = max(1, min(reserve, self.max_gets - 1))
        self.get_slots = trio.CapacityLimiter(self.max_gets)
        self.readahead_slots = trio.CapacityLimiter(self.max_gets - self.reserve)
        self.around_slots = trio.CapacityLimiter(max(MIN_GETS, self.max_gets // AROUND_SHARE))
        self.max_ahead = max_ahead
        # id -> weak reference, dropped when the holder goes: a plain dict, since every read
        # asks for the room (a WeakSet's iteration guard cost more than the rest of a hit).
        self._holders: dict[int, weakref.ref[HoldsAhead]] = {}
        self._successes = 0
        self._last_pushback = -PUSHBACK_QUIET

    @property
    def gets_allowed(self) -> int:
        return int(self.get_slots.total_tokens)

    def _set(self, total: int) -> None:
        total = max(MIN_GETS, min(self.max_gets, total))
        self.get_slots.total_tokens = total
        self.readahead_slots.total_tokens = max(1, total - self.reserve)

    def pushback(self) -> None:
        """The server asked to slow down (503 SlowDown, 429): halve the GETs in flight."""
        now = trio.current_time()
        if now - self._last_pushback < PUSHBACK_QUIET:
            return
        self._last_pushback = now
        before = self.gets_allowed
        self._set(before // 2)
        self._successes = 0
        log.info("server pushback: GETs in flight %d -> %d", before, self.gets_allowed)

    @property
    def pushed_back(self) -> bool:
        """The server pushed back and the GETs in flight have not grown back to the cap."""
        return self.gets_allowed < self.max_gets

    def succeeded(self) -> None:
        self._successes += 1
        if self._successes >= self.gets_allowed and self.gets_allowed < self.max_gets:
            self._successes = 0
            self._set(self.gets_allowed + 1)

    def register(self, holder: HoldsAhead) -> None:
        """Counts ``holder``'s bytes ahead from now on, until it is garbage (idempotent)."""
        key = id(holder)
        if key not in self._holders:
            holders = self._holders
            self._holders[key] = weakref.ref(holder, lambda _: holders.pop(key, None))

    def room(self, excluding: HoldsAhead | None = None) -> int:
        """Bytes of read-ahead still free (``excluding``'s own share counts as free)."""
        used = 0
        for ref in list(self._holders.values()):
            holder = ref()
            if holder is not None and holder is not excluding:
                used += holder.ahead()
        return max(0, self.max_ahead - used)
