"""systemd's notification protocol (``Type=notify``) with the standard library only."""

from __future__ import annotations

import os
import socket
import time

SEND_SECONDS = 2.0  # at most this long per notification


def sd_notify(*lines: str, timeout: float = SEND_SECONDS) -> bool:
    """Send ``KEY=VALUE`` lines to ``$NOTIFY_SOCKET`` as one datagram; False when not under
    systemd (or the socket is gone, or its queue stays full for ``timeout`` seconds).
    ``@name`` is an abstract socket."""
    addr = os.environ.get("NOTIFY_SOCKET", "")
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    elif not addr.startswith("/"):
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            # bounded: a listener that stops reading fills its queue, and a blocking send
            # would then hold the daemon (a reload, a stop) for ever
            s.settimeout(timeout)
            s.connect(addr)
            s.sendall("\n".join(lines).encode())
    except OSError:  # (socket.timeout included)
        return False
    return True


def reloading() -> bool:
    """``RELOADING=1`` with the ``MONOTONIC_USEC`` systemd needs to match the reload."""
    return sd_notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
