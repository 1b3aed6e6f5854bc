"""Thread-safe counters shared by the fetch, cache and FUSE layers."""

from __future__ import annotations

import threading
import time
from collections import Counter


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self.started = time.time()

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] += amount

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            data = dict(self._counts)
        data["uptime_s"] = int(time.time() - self.started)
        return data
