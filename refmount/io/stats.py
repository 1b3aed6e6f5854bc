"""Thread-safe counters, latency samples and gauges shared by the fetch, cache and FUSE layers."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from typing import Callable

SAMPLES = 4096  # latencies kept per series (the most recent)

# every counter a mount keeps: a snapshot has each of them, zero until counted, so monitoring
# scripts see a stable set of names
COUNTERS = (
    "cache_hits", "cache_misses", "cache_inflight_waits", "memory_evictions", "decoded_chunks",
    "disk_hits", "disk_misses", "disk_bytes_read", "disk_writes", "disk_writes_skipped", "disk_write_errors",
    "disk_corrupt", "disk_evictions", "disk_waits", "disk_leases_taken_over",
    "origin_requests", "origin_info_requests", "origin_bytes", "origin_errors", "origin_retries", "origin_refused", "origin_failures_remembered",
    "origin_inflight", "source_requests", "source_bytes", "prefetch_chunks", "prefetch_requests", "prefetch_used", "prefetch_wasted",
)
LATENCIES = ("origin_latency",)


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._samples: dict[str, deque] = {}
        self._gauges: dict[str, Callable[[], int]] = {}
        self._labelled: dict[str, Counter[str]] = {}
        self.started = time.time()

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] += amount

    def add_labelled(self, name: str, label: str, amount: int = 1) -> None:
        """A counter per label (per origin host), shown under ``by_host`` (bounded to 256 labels)."""
        with self._lock:
            counts = self._labelled.setdefault(label, Counter()) if len(self._labelled) < 256 or label in self._labelled \
                else self._labelled.setdefault("other", Counter())
            counts[name] += amount

    def observe(self, name: str, seconds: float) -> None:
        with self._lock:
            series = self._samples.get(name)
            if series is None:
                series = self._samples[name] = deque(maxlen=SAMPLES)
            series.append(seconds)

    def gauge(self, name: str, read: Callable[[], int]) -> None:
        """A value read when a snapshot is taken (cache sizes, requests in flight)."""
        self._gauges[name] = read

    def snapshot(self) -> dict[str, int | float]:
        with self._lock:
            data: dict[str, int | float] = dict.fromkeys(COUNTERS, 0)
            data.update(self._counts)
            by_host = {host: dict(counts) for host, counts in self._labelled.items()}
            samples = {name: sorted(series) for name, series in self._samples.items()}
        for name in sorted(set(LATENCIES) | set(samples)):
            values = samples.get(name) or [0.0]
            for label, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
                data[f"{name}_{label}_ms"] = round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 3)
            data[f"{name}_max_ms"] = round(values[-1] * 1000, 3)
        for name, read in self._gauges.items():
            data[name] = read()
        data["uptime_s"] = int(time.time() - self.started)
        data["by_host"] = by_host
        return data
