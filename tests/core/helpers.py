"""Helpers the core tests share: waiting without sleeping for timing, and path-level calls."""

from __future__ import annotations

from collections.abc import Callable

import trio
import trio.testing

from rangefs.config import KiB
from rangefs.daemon.core import Core
from rangefs.fs.filesystem import Attributes, Filesystem
from rangefs.fs.inodes import ROOT_INODE
from tests.core.fakes import Gate

CHUNK = 64 * KiB  # the smallest chunk Config allows: many chunks, little data


async def settle(core: Core) -> None:
    """Waits until nothing is being fetched or read ahead and every chunk whose last block
    landed has been moved into the disk cache (or refused) and handed to the verifier."""
    while True:
        await trio.testing.wait_all_tasks_blocked()
        if core.reader.pending_fetches == 0:
            return
        await trio.sleep(0.001)  # a worker thread is still busy: poll, not a timing guess


UNTIL_SECONDS = 5.0


async def until(condition: Callable[[], bool]) -> None:
    """Waits until ``condition()`` holds once every task is blocked (worker threads may still
    be busy, so it polls); fails after :data:`UNTIL_SECONDS`."""
    with trio.fail_after(UNTIL_SECONDS):
        while True:
            await trio.testing.wait_all_tasks_blocked()
            if condition():
                return
            await trio.sleep(0.001)


async def gate_reached(gate: Gate) -> None:
    """Waits (without blocking trio) until a held GET has reached the store."""
    reached = await trio.to_thread.run_sync(gate.arrived.wait, 10.0)
    assert reached, "the held request never reached the store"


async def lookup_path(fs: Filesystem, path: str) -> Attributes:
    """Looks a slash-separated path up from the root, one component at a time (as the kernel)."""
    ino = ROOT_INODE
    attr = await fs.getattr(ino)
    for name in path.split("/"):
        attr = await fs.lookup(ino, name)
        ino = attr.ino
    return attr


async def open_path(fs: Filesystem, path: str) -> int:
    attr = await lookup_path(fs, path)
    fh, _ = await fs.open(attr.ino)
    return fh


async def read_all(fs: Filesystem, fh: int, size: int, request: int = 128 * KiB) -> bytes:
    """Reads a file from start to end in ``request``-sized reads, as ``cat`` does."""
    out = bytearray()
    offset = 0
    while True:
        data = await fs.read(fh, offset, request)
        if not data:
            return bytes(out)
        out += data
        offset += len(data)
        assert offset <= size
