"""Memory cache: an LRU bounded in bytes, thread-safe, with single-flight fetches."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Callable, Hashable

from cachetools import LRUCache

from .stats import Stats


class MemoryCache:
    """``get(key, fetch)`` returns cached bytes or calls ``fetch()`` once per key at a time.

    Concurrent callers for the same key wait for the one fetch in flight (kernel readahead
    issues several reads of one file at once). Failures are not cached.
    """

    def __init__(self, max_bytes: int, stats: Stats | None = None):
        self.max_bytes = max_bytes
        self.stats = stats or Stats()
        self._lru: LRUCache = LRUCache(maxsize=max(max_bytes, 1), getsizeof=len)
        self._inflight: dict[Hashable, Future] = {}
        self._lock = threading.Lock()

    @property
    def current_bytes(self) -> int:
        with self._lock:
            return int(self._lru.currsize)

    def get(self, key: Hashable, fetch: Callable[[], bytes]) -> bytes:
        with self._lock:
            data = self._lru.get(key)
            if data is not None:
                self.stats.add("cache_hits")
                return data
            future = self._inflight.get(key)
            owner = future is None
            if owner:
                future = self._inflight[key] = Future()
        if not owner:
            self.stats.add("cache_shared_waits")
            return future.result()
        self.stats.add("cache_misses")
        try:
            data = fetch()
        except BaseException as exc:
            with self._lock:
                del self._inflight[key]
            future.set_exception(exc)
            raise
        with self._lock:
            if len(data) <= self.max_bytes:
                self._lru[key] = data
            del self._inflight[key]
        future.set_result(data)
        return data
