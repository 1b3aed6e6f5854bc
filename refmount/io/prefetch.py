"""Prefetch across chunk files: a reader walking an array's chunks gets the next ones fetched
ahead, in parallel -- forward in grid order, backwards, or every n-th chunk (a time slice of a
3-D array), learnt per array from the last accesses -- with a window that doubles while the
predictions hold and collapses when access turns random.
"""

from __future__ import annotations

import threading
import weakref

from cachetools import LRUCache

from refmount.index import Decoded, Index, Range, Whole
from refmount.io.order import ChunkOrder
from refmount.io.reader import Reader


def _axis_steps(grid: list[int]) -> set[int]:
    """The chunk-number steps of one chunk along each axis of a grid (row-major) that has more
    than one chunk along it."""
    steps, step = set(), 1
    for length in reversed(grid):
        if length > 1:
            steps.add(step)
        step *= length
    return steps


class Prefetcher:
    """``first_window``: chunks fetched ahead once a walk is seen (default: as many as the
    reader fetches at once -- a window of 4 left the pool half idle while a walk started, 10 %
    of a 96-chunk walk over HTTP); it doubles while the walk goes on, up to ``max_window``."""

    def __init__(self, reader: Reader, first_window: int | None = None, max_window: int = 64):
        self.reader = reader
        self.first_window = first_window or min(reader.parallel, max_window)
        self.max_window = max_window
        self._orders: weakref.WeakKeyDictionary[Index, ChunkOrder] = weakref.WeakKeyDictionary()  # per live tree
        self._streams: LRUCache = LRUCache(maxsize=4096)  # array directory -> (last n, stride, window)
        self._lock = threading.Lock()

    def _order(self, tree: Index) -> ChunkOrder:
        with self._lock:
            order = self._orders.get(tree)
            if order is None:
                order = self._orders[tree] = ChunkOrder(tree)
            return order

    def on_first_read(self, tree: Index, path: str, ref=None) -> None:
        """Called when a chunk file (its reference ``ref``, if known) is first read through a handle."""
        if isinstance(ref, (Range, Whole)) and self.reader.origins.is_local(ref.url):
            return  # local originals need no fetching ahead: the page cache and read-ahead serve them
        order = self._order(tree)
        pos = order.position(path)
        if pos is None:
            return
        directory, n, grid = pos
        with self._lock:
            last, stride, window = self._streams.get(directory, (None, 0, 0))
            step = None if last is None else n - last
            if step is None or step == 0:
                pass
            elif step == stride or (stride == 1 and 0 < step <= window + 2):
                # the walk goes on as predicted (forward readers may skip what others read)
                window = min(max(window * 2, self.first_window), self.max_window)
            elif stride > 0 and window and -window * stride <= step < 0:
                n = last  # behind, within the window: another reader of the same walk
            else:  # a new direction or stride: one chunk along a grid axis, forward or back (a
                # walk along that axis: the next field, a time series at one place), starts at
                # once; any other stride once it is seen twice (random access stays quiet)
                stride, window = step, (self.first_window if abs(step) in _axis_steps(grid) else 0)
            self._streams[directory] = (n, stride, window)
        if not window:
            return
        segments, decoded = [], []
        for next_path in order.after(path, window, stride):
            ref = tree.node(next_path)
            if isinstance(ref, Decoded):
                decoded.append(ref)
                ref = ref.source
            if isinstance(ref, Range) and ref.length <= self.reader.whole_limit:
                segments.append(self.reader.segment(ref, ref.length, 0))
        if segments:
            self.reader.fetch_ahead(segments)
        if decoded:
            self.reader.decode_ahead(decoded)
