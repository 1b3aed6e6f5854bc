"""Memory cache: an LRU bounded in bytes, thread-safe, with single-flight fetches."""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future
from typing import Callable, Hashable

from cachetools import LRUCache

from refmount.io.stats import Stats


def memory_limit() -> int:
    """This process's memory limit: its cgroup's (v2 or v1) where set, else physical memory."""
    limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return limit
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            candidates = [f"/sys/fs/cgroup{path}/memory.max"]
        elif "memory" in controllers.split(","):
            candidates = [f"/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"]
        else:
            continue
        for candidate in candidates:
            try:
                with open(candidate) as f:
                    text = f.read().strip()
            except OSError:
                continue
            if text.isdigit():
                limit = min(limit, int(text))
    return limit


class _LRU(LRUCache):
    """An LRU that reports evictions (the prefetch bookkeeping forgets evicted keys)."""

    def __init__(self, maxsize: int, on_evict: Callable[[Hashable], None]):
        super().__init__(maxsize=maxsize, getsizeof=len)
        self._on_evict = on_evict

    def popitem(self):
        key, value = super().popitem()
        self._on_evict(key)
        return key, value


class MemoryCache:
    """``get(key, fetch)`` returns cached bytes or calls ``fetch()`` once per key at a time.

    Concurrent callers for the same key wait for the one fetch in flight (kernel readahead
    issues several reads of one file at once, and prefetch may already be fetching it).
    A fetcher may also ``claim`` keys up front and ``fulfil``/``fail`` them later, as a
    coalesced request does for all the chunks it carries. Failures are not cached.
    Entries that arrive that way count as fetched ahead; the first read that uses one counts
    as ``prefetch_used`` (one evicted unused counts as ``prefetch_wasted``).
    """

    def __init__(self, max_bytes: int, stats: Stats | None = None):
        self.max_bytes = max_bytes
        self.stats = stats or Stats()
        self._lru: LRUCache = _LRU(max(max_bytes, 1), self._evicted)
        self._inflight: dict[Hashable, Future] = {}
        self._ahead: set[Hashable] = set()
        self._lock = threading.Lock()
        self.stats.gauge("memory_cache_bytes", lambda: int(self._lru.currsize))
        self.stats.gauge("memory_cache_entries", lambda: len(self._lru))
        self.stats.gauge("memory_cache_limit", lambda: self.max_bytes)
        self.stats.gauge("fetches_in_flight", lambda: len(self._inflight))

    def _evicted(self, key: Hashable) -> None:
        self.stats.add("memory_evictions")
        if key in self._ahead:
            self._ahead.discard(key)
            self.stats.add("prefetch_wasted")

    def _used(self, key: Hashable) -> None:
        if key in self._ahead:
            self._ahead.discard(key)
            self.stats.add("prefetch_used")

    @property
    def current_bytes(self) -> int:
        with self._lock:
            return int(self._lru.currsize)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._lru or key in self._inflight

    def discard(self, key: Hashable) -> None:
        """Drop ``key`` if cached (a fetch in flight is left alone)."""
        with self._lock:
            if self._lru.pop(key, None) is not None:
                self._used(key)

    def claim(self, key: Hashable) -> bool:
        """Take responsibility for fetching ``key``; False if cached or already in flight."""
        with self._lock:
            if key in self._lru or key in self._inflight:
                return False
            self._inflight[key] = Future()
            return True

    def fulfil(self, key: Hashable, data: bytes, ahead: bool = True) -> None:
        """Store a claimed key's bytes (counted as fetched ahead unless ``ahead`` is False)."""
        with self._lock:
            if len(data) <= self.max_bytes:
                self._lru[key] = data
                if ahead:
                    self._ahead.add(key)
            future = self._inflight.pop(key)
        future.set_result(data)

    def fail(self, key: Hashable, exc: BaseException) -> None:
        with self._lock:
            future = self._inflight.pop(key)
        future.set_exception(exc)

    def get(self, key: Hashable, fetch: Callable[[], bytes]) -> bytes:
        with self._lock:
            data = self._lru.get(key)
            if data is not None:
                self.stats.add("cache_hits")
                self._used(key)
                return data
            future = self._inflight.get(key)
            owner = future is None
            if owner:
                self._inflight[key] = Future()
        if not owner:
            self.stats.add("cache_inflight_waits")
            data = future.result()
            with self._lock:  # a claimed (fetched-ahead) entry that a read waited for is used
                self._used(key)
            return data
        self.stats.add("cache_misses")
        try:
            data = fetch()
        except BaseException as exc:
            self.fail(key, exc)
            raise
        self.fulfil(key, data, ahead=False)
        return data
