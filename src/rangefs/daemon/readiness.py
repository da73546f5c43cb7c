"""The readiness pipe between ``rangefs mount`` and the daemon it starts: both ends here.

The parent passes the write end to the daemon (``--ready-fd N``) and waits on the read end;
the daemon may write ``warning: TEXT`` lines (things the user should see on stderr although
the mount works), then exactly one final line, ``ready`` once the mount is live or
``error: WHY`` if it could not be made, and closes its end. So ``rangefs mount`` returns 0
only for a working mount, and a failure is one line on the parent's stderr. A daemon that
dies without writing closes the pipe: the parent sees end-of-file and reports the exit status.
"""

import os
import subprocess
import time
from dataclasses import dataclass, field

READY = "ready"
ERROR = "error: "
WARNING = "warning: "
POLL_SECONDS = 0.02


class Notifier:
    """The daemon's end: ``send(None)`` for ready, ``send(reason)`` for a failure; once."""

    def __init__(self, fd: int | None) -> None:
        self._pipe = os.fdopen(fd, "w") if fd is not None else None

    def warn(self, text: str) -> None:
        if self._pipe is not None:
            self._pipe.write(f"{WARNING}{text}\n")
            self._pipe.flush()

    def send(self, error: str | None) -> None:
        if self._pipe is None:
            return
        with self._pipe:
            self._pipe.write(f"{READY}\n" if error is None else f"{ERROR}{error}\n")
        self._pipe = None


@dataclass
class Outcome:
    """What the parent learnt: ``ready``, else ``error`` (the daemon's reason, or empty if
    it said nothing) and whether the wait ran out of time."""

    ready: bool
    error: str = ""
    timed_out: bool = False
    warnings: list[str] = field(default_factory=list)


class Waiter:
    """The parent's end: create it, start the daemon with ``fd`` passed, call ``started``,
    then ``wait``."""

    def __init__(self) -> None:
        self._read, self.fd = os.pipe()

    def started(self) -> None:
        """Closes the parent's copy of the write end, so the daemon's exit means end-of-file."""
        os.close(self.fd)

    def wait(self, proc: subprocess.Popen[bytes], timeout: float) -> Outcome:
        deadline = time.monotonic() + timeout
        buffer = b""
        warnings: list[str] = []
        with os.fdopen(self._read, "rb") as pipe:
            os.set_blocking(pipe.fileno(), False)
            while time.monotonic() < deadline:
                try:
                    chunk = pipe.read()
                except BlockingIOError:
                    chunk = None
                buffer += chunk or b""
                while b"\n" in buffer:
                    raw, buffer = buffer.split(b"\n", 1)
                    line = raw.decode(errors="replace").strip()
                    if line.startswith(WARNING):
                        warnings.append(line.removeprefix(WARNING))
                    elif line == READY:
                        return Outcome(True, warnings=warnings)
                    elif line:
                        return Outcome(False, line.removeprefix(ERROR), warnings=warnings)
                if chunk == b"" or (proc.poll() is not None and not chunk):
                    return Outcome(False, buffer.decode(errors="replace").strip(),
                                   warnings=warnings)  # fmt: skip
                time.sleep(POLL_SECONDS)
        return Outcome(False, timed_out=True, warnings=warnings)
