"""The readiness pipe: what `rangefs mount` learns from the daemon it started."""

import subprocess
import sys
import textwrap

from rangefs.daemon.readiness import Waiter

CHILD = textwrap.dedent(
    """
    import sys, time
    from rangefs.daemon.readiness import Notifier
    notifier = Notifier(int(sys.argv[1]))
    {body}
    """
)


def start(waiter: Waiter, body: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(body=body), str(waiter.fd)], pass_fds=(waiter.fd,)
    )
    waiter.started()
    return proc


def test_ready_after_warnings():
    waiter = Waiter()
    proc = start(waiter, "notifier.warn('prefix is empty'); notifier.send(None); time.sleep(5)")
    outcome = waiter.wait(proc, timeout=20)
    proc.kill()
    assert outcome.ready and outcome.warnings == ["prefix is empty"]


def test_the_daemons_reason_is_passed_on():
    waiter = Waiter()
    proc = start(waiter, "notifier.send('bucket \\'x\\' does not exist')")
    outcome = waiter.wait(proc, timeout=20)
    assert not outcome.ready and outcome.error == "bucket 'x' does not exist"
    assert not outcome.timed_out


def test_a_daemon_that_dies_silently_is_noticed_at_once():
    waiter = Waiter()
    proc = start(waiter, "import os; os._exit(3)")
    outcome = waiter.wait(proc, timeout=20)
    assert not outcome.ready and outcome.error == "" and not outcome.timed_out
    assert proc.wait(timeout=10) == 3


def test_a_daemon_that_never_answers_times_out():
    waiter = Waiter()
    proc = start(waiter, "time.sleep(30)")
    try:
        outcome = waiter.wait(proc, timeout=0.5)
    finally:
        proc.kill()
    assert not outcome.ready and outcome.timed_out
