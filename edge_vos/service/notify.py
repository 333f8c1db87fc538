"""systemd's notify protocol (sd_notify), implemented directly.

The protocol is documented as stable (sd_notify(3), "Notes"): one datagram of newline-separated
`KEY=VALUE` lines to the AF_UNIX socket named by `$NOTIFY_SOCKET` (a path, or an abstract name when it
starts with "@"). A dozen lines here beat a dependency: sdnotify is unmaintained since 2017 and
systemd-python needs libsystemd headers to build. Without `$NOTIFY_SOCKET` (not under systemd, or
Type=simple) every call is a cheap no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends READY/STATUS/STOPPING/WATCHDOG to systemd; thread-safe (one datagram socket, one lock)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _address(env.get("NOTIFY_SOCKET", ""))
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        if self._address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # Never wait for systemd: a full receive queue (net.unix.max_dgram_qlen, 10 by default) drops
            # this message instead of blocking the thread that reports progress.
            self._sock.setblocking(False)
        self.watchdog_interval_s = _watchdog_interval(env)
        self._last_ping = 0.0

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, **fields: object) -> bool:
        """Sends one message, e.g. notify(READY=1, STATUS="streaming"); False when not sent."""
        if self._sock is None or self._address is None:
            return False
        message = "\n".join(f"{k}={str(v).replace(chr(10), ' ')}" for k, v in fields.items()).encode()
        with self._lock:
            try:
                self._sock.sendto(message, self._address)
                return True
            except OSError as exc:  # systemd gone or its queue full: never let this stop the service
                log.debug("sd_notify failed: %s", exc)
                return False

    def ready(self, status: str = "") -> bool:
        return self.notify(READY=1, **({"STATUS": status} if status else {}))

    def status(self, text: str) -> bool:
        return self.notify(STATUS=text)

    def stopping(self, status: str = "stopping") -> bool:
        return self.notify(STOPPING=1, STATUS=status)

    def watchdog(self, force: bool = False) -> bool:
        """WATCHDOG=1 at most every half watchdog interval (systemd's recommendation); call it freely."""
        if self.watchdog_interval_s is None:
            return False
        now = time.monotonic()
        if not force and now - self._last_ping < self.watchdog_interval_s / 2:
            return False
        self._last_ping = now
        return self.notify(WATCHDOG=1)

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def _address(value: str) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()  # abstract namespace
    if value.startswith("/"):
        return value
    log.warning("ignoring NOTIFY_SOCKET=%r (neither a path nor an abstract name)", value)
    return None


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds of $WATCHDOG_USEC, when it is meant for this process ($WATCHDOG_PID absent or ours)."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 1e6
