"""One retry policy for every store call: a failed part is retried alone, then fails.

A store (the boto3 one, or a test's in-memory one) raises :class:`~rangefs.errors.Transient`
for what is worth another try (network trouble, 5xx, throttling, a short or damaged body) and
a domain error for what is not (404, 403, 412). :class:`Retrier` retries the former with
exponential backoff and jitter (tenacity) within an attempt and a time budget, counts each
retry by cause, and turns the last failure into :class:`~rangefs.errors.RemoteError` (EIO), or
:class:`~rangefs.errors.Unreachable` when the last attempt got no answer at all
(:class:`~rangefs.errors.NoAnswer`), which takes the mount offline. Once the mount is offline
(``Stats.online``, kept by :mod:`rangefs.remote.reachability`), a request stops retrying after its
current attempt: another request has just found S3 unreachable, and more attempts would only
delay this one's EIO.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base

from rangefs.errors import NoAnswer, RemoteError, Transient, Unreachable
from rangefs.stats import Stats

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard one request is retried before its read fails with EIO."""

    attempts: int
    max_seconds: float
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    jitter: float = 1.0  # seconds of random extra wait, so retries of many GETs spread out
    quiet: bool = False  # a failure is expected and said elsewhere: no log line, not counted


MOUNT_CHECK = RetryPolicy(attempts=3, max_seconds=20.0, initial_backoff=0.5)
PROBE = RetryPolicy(attempts=1, max_seconds=0.0, quiet=True)  # is S3 back? (offline mount)


class _Offline(stop_base):
    """Stops retrying once the mount is offline."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    def __call__(self, retry_state: RetryCallState) -> bool:
        return not self.stats.online


class Retrier:
    """Runs one attempt function under a :class:`RetryPolicy`; thread-safe."""

    def __init__(self, policy: RetryPolicy, stats: Stats | None = None) -> None:
        self.policy = policy
        self.stats = stats or Stats()

    def call(self, what: str, attempt: Callable[[], T]) -> T:
        policy = self.policy

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            self.stats.retries[getattr(exc, "cause", "other")] += 1
            log.warning("retry %d/%d %s: %s", state.attempt_number, policy.attempts, what, exc)

        retrying = Retrying(
            retry=retry_if_exception_type(Transient),
            stop=stop_after_attempt(policy.attempts)
            | stop_after_delay(policy.max_seconds)
            | _Offline(self.stats),
            wait=wait_exponential_jitter(
                multiplier=policy.initial_backoff, max=policy.max_backoff, jitter=policy.jitter
            ),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except Transient as exc:
            if not policy.quiet:
                self.stats.errors[exc.cause] += 1
                log.error("failed %s: %s (gave up after retries)", what, exc)
            final = Unreachable if isinstance(exc, NoAnswer) else RemoteError
            raise final(f"{what}: {exc}") from exc
