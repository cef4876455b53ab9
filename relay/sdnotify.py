"""sd_notify for systemd's Type=notify: READY=1, STATUS=…, STOPPING=1, WATCHDOG=1.

Sends one datagram to $NOTIFY_SOCKET (path or abstract '@name'); does nothing when relay is
not run by systemd. A leaf: imports nothing from relay.
"""

from __future__ import annotations

import os
import socket


def notify(*fields: str) -> bool:
    """Send 'KEY=VALUE' lines to systemd; False when there is no notify socket."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.setblocking(False)  # a full socket buffer must never stall the event loop
        try:
            sock.connect(address)
            sock.sendall("\n".join(fields).encode())
        except OSError:
            return False
    return True


def watchdog_interval_s() -> float | None:
    """Half the watchdog period systemd expects pings in, or None when it is off."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = os.environ.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2_000_000
