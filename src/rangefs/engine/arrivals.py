"""Which 64 KiB blocks of one chunk are present, on their way or missing, and who waits.

A reader waits only for the blocks its read needs (rclone's ``kickWaiters``): each GET
reports the blocks it has written, and every waiter whose blocks are now all present wakes.
A GET that fails hands its blocks back as missing and wakes the waiters of those blocks with
its error. Lives on the trio thread only: fetch threads report through the trio token.
"""

from dataclasses import dataclass, field

import trio

MISSING, WANTED, PRESENT = 0, 1, 2


@dataclass
class _Waiter:
    first: int
    end: int
    event: trio.Event = field(default_factory=trio.Event)
    error: BaseException | None = None


class ArrivalMap:
    def __init__(self, blocks: int, present: bytes | bytearray | None = None) -> None:
        self.state = bytearray(blocks)
        if present is not None:
            for block, here in enumerate(present):
                if here:
                    self.state[block] = PRESENT
        self._waiters: list[_Waiter] = []

    @property
    def blocks(self) -> int:
        return len(self.state)

    @property
    def complete(self) -> bool:
        return self.state.count(PRESENT) == len(self.state)

    @property
    def idle(self) -> bool:
        """Nothing on its way and nobody waiting."""
        return WANTED not in self.state and not self._waiters

    def has(self, first: int, end: int) -> bool:
        return self.state.count(PRESENT, first, end) == end - first

    def missing_runs(self, first: int, end: int) -> list[tuple[int, int]]:
        """Runs ``[a, b)`` of blocks in ``[first, end)`` neither present nor on their way."""
        runs: list[tuple[int, int]] = []
        block = first
        while block < end:
            if self.state[block] != MISSING:
                block += 1
                continue
            start = block
            while block < end and self.state[block] == MISSING:
                block += 1
            runs.append((start, block))
        return runs

    def want(self, first: int, end: int) -> None:
        """Blocks ``[first, end)`` are now on their way (a GET was queued for them)."""
        for block in range(first, end):
            if self.state[block] == MISSING:
                self.state[block] = WANTED

    def landed(self, first: int, end: int) -> None:
        self.state[first:end] = bytes([PRESENT]) * (end - first)
        still = []
        for waiter in self._waiters:
            if self.has(waiter.first, waiter.end):
                waiter.event.set()
            else:
                still.append(waiter)
        self._waiters = still

    def failed(self, first: int, end: int, error: BaseException) -> None:
        """A GET for blocks ``[first, end)`` gave up: those not landed are missing again and
        whoever waits for one of them gets ``error``."""
        for block in range(first, end):
            if self.state[block] == WANTED:
                self.state[block] = MISSING
        still = []
        for waiter in self._waiters:
            lo, hi = max(first, waiter.first), min(end, waiter.end)
            if lo < hi and not self.has(lo, hi):
                waiter.error = error
                waiter.event.set()
            else:
                still.append(waiter)
        self._waiters = still

    async def wait(self, first: int, end: int) -> None:
        """Returns when blocks ``[first, end)`` are all present; raises the error of a GET
        that was to bring one of them and failed."""
        if self.has(first, end):
            return
        waiter = _Waiter(first, end)
        self._waiters.append(waiter)
        try:
            await waiter.event.wait()
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        if waiter.error is not None:
            raise waiter.error
