"""Whether S3 can be reached: the mount's online/offline state and the probe that ends it.

Offline is a state, not an error (CernVM-FS). A store call that got no answer from S3 after
the store's retries (:class:`~rangefs.errors.Unreachable`: refused, reset, DNS, timeouts)
takes the mount offline; any answer — even 404, 403, 412 or a 5xx — is S3 being there and
keeps it online. While offline every store call fails at once with ``Unreachable`` and sends
nothing, so readers get EIO in milliseconds instead of a retry storm, while the namespace and
the chunk cache serve what they hold. One task probes S3 with backoff and brings the mount
online at the first answer. Going offline and coming back are logged once each.

Pure trio logic over an injected probe: the core tier drives it on a ``MockClock``. It lives
in the trio thread only (the store's worker threads never touch it).
"""

import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import trio

from rangefs.errors import RangefsError, Unreachable
from rangefs.stats import Stats

log = logging.getLogger(__name__)

PROBE_FIRST = 0.5  # seconds to the first probe after going offline
PROBE_MAX = 5.0  # longest wait between probes: S3 back is noticed within about this
Probe = Callable[[], Awaitable[object]]


class Reachability:
    """The online/offline state of one mount (``where`` names S3 in the log lines)."""

    def __init__(self, stats: Stats | None = None, where: str = "S3", online: bool = True) -> None:
        self.stats = stats or Stats()
        self.where = where
        self._offline = trio.Event()  # set while offline; a fresh one each time online
        self._since = 0.0  # trio time of the last change of state
        self.stats.online = int(online)
        if not online:
            self._offline.set()

    @property
    def online(self) -> bool:
        return not self._offline.is_set()

    def check(self, what: str = "request") -> None:
        """Raises :class:`Unreachable` at once while offline: nothing is sent."""
        if not self.online:
            self.stats.offline_refused += 1
            raise Unreachable(f"{what}: {self.where} unreachable (offline)")

    @contextmanager
    def guard(self, what: str = "request") -> Iterator[None]:
        """Around one store call: refused while offline; its outcome updates the state.

        A call that started before the mount last came online and fails as unreachable does
        not take it offline again: S3 has answered since it began (a probe did).
        """
        self.check(what)
        started = trio.current_time()
        try:
            yield
        except Unreachable as exc:
            if started >= self._since:
                self.lost(exc)
            raise
        except RangefsError:
            self.answered()  # 404, 403, 412, a 5xx after retries: S3 is there
            raise
        self.answered()

    def lost(self, exc: BaseException) -> None:
        """A call got no answer after its retries: offline (logged once)."""
        if not self.online:
            return
        self._offline.set()
        self._since = trio.current_time()
        self.stats.online = 0
        self.stats.went_offline += 1
        log.warning(
            "offline: %s cannot be reached (%s); serving cached listings and chunks, "
            "failing the rest with EIO, probing until it answers",
            self.where,
            exc,
        )

    def answered(self) -> None:
        """S3 answered something: online (logged once, when it was offline)."""
        if self.online:
            return
        now = trio.current_time()
        log.warning("online: %s answers again after %.1f s offline", self.where, now - self._since)
        self._offline = trio.Event()
        self._since = now
        self.stats.online = 1

    async def run(self, probe: Probe, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Whenever offline, ``probe`` (one cheap request, no retries) after PROBE_FIRST
        seconds, then twice as long each time up to PROBE_MAX, until S3 answers."""
        self._since = trio.current_time()  # a mount that starts offline is offline from now
        task_status.started()
        while True:
            await self._offline.wait()
            delay = PROBE_FIRST
            while not self.online:
                await trio.sleep(delay)
                delay = min(delay * 2, PROBE_MAX)
                if not self.online:
                    await self._probe(probe)

    async def _probe(self, probe: Probe) -> None:
        try:
            await probe()
        except Unreachable:
            return
        except RangefsError:
            pass  # an answer all the same (403: credentials gone, and reads will say so)
        except Exception:
            log.exception("probe of %s failed unexpectedly", self.where)
            return
        self.answered()
