"""systemd's notify protocol without a dependency: one datagram to ``$NOTIFY_SOCKET``.

``READY=1`` once the mount is live (``Type=notify``), ``WATCHDOG=1`` pings from the trio
loop (so ``WatchdogSec=`` restarts a wedged loop), ``STOPPING=1`` on the way out.
"""

import os
import socket


def notify(*assignments: str) -> bool:
    """Sends ``KEY=VALUE`` lines; False when not run under systemd (no socket)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(assignments).encode())
        return True
    except OSError:
        return False


def watchdog_period() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of ``WatchdogSec``), or None if not asked."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        period = int(usec) / 1e6 / 2
    except ValueError:
        return None
    return period if period > 0 else None
