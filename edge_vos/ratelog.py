"""Logging that input drives, bounded: a flood of bad requests (on the control socket, on the web view) must
not flood the journal, yet the first ones and the count of the rest stay visible."""

from __future__ import annotations

import logging
import time
from typing import Any


class RateLimitedLog:
    """At most `burst` lines per `period_s` at `level`, then one line saying how many were left out. Not
    thread-safe: each thread that logs keeps its own."""

    def __init__(self, logger: logging.Logger, prefix: str, period_s: float = 10.0, burst: int = 20,
                 level: int = logging.INFO) -> None:
        self.logger, self.prefix, self.period_s, self.burst, self.level = logger, prefix, period_s, burst, level
        self._window = 0.0
        self._count = 0
        self._suppressed = 0
        self.total = 0  # lines asked for since start, logged or not

    def log(self, fmt: str, *args: Any, exc_info: BaseException | None = None) -> None:
        now = time.monotonic()
        if now - self._window > self.period_s:
            if self._suppressed:
                self.logger.log(self.level, "%s: %d more not logged in the last %.0f s", self.prefix,
                                self._suppressed, self.period_s)
            self._window, self._count, self._suppressed = now, 0, 0
        self._count += 1
        self.total += 1
        if self._count <= self.burst:
            self.logger.log(self.level, f"{self.prefix}: {fmt}", *args, exc_info=exc_info)
        else:
            self._suppressed += 1
