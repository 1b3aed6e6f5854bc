"""Prefetch across chunk files: a reader walking an array's chunks gets the next ones fetched
ahead, in parallel -- forward in grid order, backwards, or every n-th chunk (a time slice of a
3-D array), learnt per array from the last accesses -- with a window that doubles while the
predictions hold. Walks in the order of the chunk names sorted as strings (``0, 1, 10, 100,
..., 2``: a sorted listing; backwards: the order in which dask loads an array's chunks) are
followed too, in that order: they are recognised only from accesses the grid order does not
explain, so that a walk in grid order never fetches by name. Several readers of one array (dask
workers on different slices, two copies running) are told apart: each array keeps up to
``WALKS`` walks and the last ``PROBES`` accesses that belong to none, from which new walks are
recognised; random access matches none and fetches nothing ahead. Dask tasks that each read a
block of several chunks (``B`` chunks in grid order from a multiple of ``B``) are followed as a
walk of blocks, in either order, once three such blocks were read.
"""

from __future__ import annotations

import math
import threading
import weakref

from cachetools import LRUCache

from refmount.grid import name_rank, name_unrank, names_differ
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


WALKS = 16  # walks told apart per array (readers of one array at once: a node's dask workers)
# a walk's window holds at least ``first_window`` chunks and grows past it only while it holds
# less than this many bytes: 16 chunks of 2 MB keep the fetchers busy, and more only adds what a
# reader that stops never reads (a walk of small chunks grows on, its chunks merged into requests)
WINDOW_BYTES = 32 << 20
PROBES = 16  # recent accesses that belong to no walk, kept to recognise new ones
NEAR = 4  # the most recent of those: a step from an older one starts a walk that fetches nothing yet
# a walk backwards goes on past at most this many of its chunks (one reader's threads out of
# order: dask's); forwards past its whole window (readers that skip what others read)
BACK_REACH = 8
# a walk not continued by any of this many accesses of its array (or twice as many as it has
# walks) is forgotten
STALE = 8
RUNS = 8  # recent spans of chunks read in grid order, kept to recognise blocks of them (dask tasks)


class _Array:
    """What is known of the reads of one array: its walks (``[last, stride, window, tick]``,
    most recent first; ``tick`` counts the array's accesses) and its recent accesses that belong
    to none (``(n, step from the access before it)``, most recent first). ``by_name``: the same
    in the order of the chunk names (numbers are places in it), for arrays where it differs;
    ``named``: the last access that one order explained and the other did not was by name.
    ``runs``: the spans of chunks read lately, each ``[first, last, tick]`` (most recently read
    first); ``blocks``: the same as this for the blocks of ``size`` chunks the array is read in."""

    __slots__ = ("walks", "probes", "last", "tick", "by_name", "named", "runs", "blocks", "size", "strays")

    def __init__(self):
        self.walks: list[list[int]] = []
        self.probes: list[tuple[int, int | None]] = []
        self.last: int | None = None
        self.tick = 0
        self.by_name: _Array | None = None
        self.named = False
        self.runs: list[list[int]] = []
        self.blocks: _Array | None = None
        self.size = 0
        self.strays = 0  # reads in a row that started a block no walk of blocks explains


class Prefetcher:
    """``first_window``: chunks fetched ahead once a walk is seen (default: as many as the
    reader fetches at once -- a window of 4 left the pool half idle while a walk started, 10 %
    of a 96-chunk walk over HTTP); it doubles while the walk goes on, up to ``max_window``
    chunks, and past ``first_window`` only while under ``window_bytes`` (``WINDOW_BYTES``)."""

    def __init__(self, reader: Reader, first_window: int | None = None, max_window: int = 64,
                 window_bytes: int = WINDOW_BYTES):
        self.reader = reader
        self.first_window = first_window or min(reader.parallel, max_window)
        self.max_window = max_window
        self.window_bytes = window_bytes
        self._orders: weakref.WeakKeyDictionary[Index, ChunkOrder] = weakref.WeakKeyDictionary()  # per live tree
        self._streams: LRUCache = LRUCache(maxsize=4096)  # array directory -> _Array
        self._lock = threading.Lock()

    def _follow(self, state: _Array, n: int, grid: list[int], limit: int | None = None,
                may_start: bool = True, fetched: bool = True) -> tuple[int, int, bool]:
        """Account chunk ``n`` of an array; ``(stride, window, explained)``: what to fetch ahead
        from it (window 0: nothing; at most ``limit``, else ``max_window``), and whether the
        access belongs to a walk (``may_start``: it may start a new one; ``fetched``: the chunk
        was fetched ahead, so a read just behind a walk is that walk's). Called under the lock."""
        limit = self.max_window if limit is None else limit
        previous, state.last = state.last, n
        state.tick += 1
        # readers that stopped (with more walks each goes on less often: many readers take turns)
        stale = max(STALE, 2 * len(state.walks))
        state.walks = [w for w in state.walks if state.tick - w[3] <= stale]
        for i, walk in enumerate(state.walks):
            last, stride, window, _ = walk
            step = n - last
            if step == 0:
                return 0, 0, True
            reach = window if stride > 0 else min(window, BACK_REACH)
            if step == stride or (abs(stride) == 1 and window and 0 < step * stride <= reach + 2):
                # the walk goes on as predicted; a walk chunk by chunk perhaps past a few of its
                # chunks: several threads of one reader (dask's) or several readers take turns
                # along it (not a longer stride: it would take over a walk by one that it crosses).
                # A walk that fetched nothing yet starts small: random reads continue some.
                window = min(max(window * 2, self.first_window), limit) if window else min(2, self.first_window)
                walk[:] = [n, stride, window, state.tick]
                state.walks.insert(0, state.walks.pop(i))
                return stride, walk[2], True
        for last, stride, window, _ in state.walks if fetched else ():
            if 0 < (last - n) * (1 if stride > 0 else -1) <= window * abs(stride):
                # behind, within the window: fetched ahead already (a chunk that was not may be
                # the start of a walk the other way: several threads began it out of order)
                return 0, 0, True
        axis = _axis_steps(grid)
        for i, (last, candidate) in enumerate(state.probes if may_start else ()):
            step = n - last
            # one chunk along a grid axis, forward or back (the next field, a time series at one
            # place), is a walk at once; another stride once it is seen twice in a row. Only the
            # commonest -- the next or previous chunk, or a stride seen twice, in a row -- start
            # with the full window; a step along another axis or across a few other reads
            # (another reader's) starts with 2 and doubles; a step from an older read (one of
            # many readers taking turns) starts with nothing, then 2 once the walk goes on: random
            # reads meet such steps by chance, the more of them the more reads they look back on.
            if step and ((i == 0 and step == candidate) or abs(step) in axis):
                del state.probes[i]
                full = i == 0 and (step == candidate or abs(step) == 1)
                window = self.first_window if full else min(2, self.first_window) if i < NEAR else 0
                state.walks.insert(0, [n, step, window, state.tick])
                del state.walks[WALKS:]
                return step, window, True
        state.probes.insert(0, (n, None if previous is None else n - previous))
        del state.probes[PROBES:]
        return 0, 0, False

    def _predict(self, state: _Array, n: int, grid: list[int], limit: int,
                 fetched: bool) -> tuple[int, int, bool, bool]:
        """``_follow`` in grid order and, where the names sort otherwise, in the order of the
        names: ``(stride, window, by name, explained by either order)``. Called under the lock."""
        stride, window, explained = self._follow(state, n, grid, limit, fetched=fetched)
        named = by_name = False
        if names_differ(grid):
            if state.by_name is None:
                state.by_name = _Array()
            name_stride, name_window, by_name = self._follow(
                state.by_name, name_rank(n, grid), [math.prod(grid)], limit, not explained, fetched)
            if by_name != explained:
                state.named = by_name
            # the walk the last access only one order explained is followed (a dask load goes
            # backwards in both orders but at each shorter name: by name); the other only when
            # the first predicts nothing here
            if name_window and (state.named or not window):
                stride, window, named = name_stride, name_window, True
        return stride, window, named, explained or by_name

    def _blocks(self, state: _Array, n: int, grid: list[int], limit: int, fetched: bool) -> list[int]:
        """Chunks to fetch when ``n`` starts reading a block: dask tasks that each read several
        chunks (``chunks={'time': 8}``, ``'auto'``) read blocks of ``B`` chunks in grid order,
        each from a multiple of ``B``, the tasks in the order of their names -- neither chunk
        order predicts a block's first chunks. ``runs`` keeps the spans of chunks read lately;
        once the two spans before the latest were ``B`` long and the three aligned, a read that
        extends no span starts a block: the rest of the block is fetched, and the blocks a walk
        of blocks (``_predict`` on block numbers) predicts -- ``limit`` chunks at most. Random
        reads seldom make such spans, and three reads in a row that start a block no walk of
        blocks explains end it. Called under the lock."""
        runs = state.runs
        for i, run in enumerate(runs):  # the span ``n`` extends (a few places out of order: threads)
            if run[0] - 1 <= n <= run[1] + 4:
                run[:] = [min(run[0], n), max(run[1], n), state.tick]
                runs.insert(0, runs.pop(i))
                return []
        runs.insert(0, [n, n, state.tick])
        del runs[RUNS:]
        total = math.prod(grid)
        spans = [run for run in runs[1:] if run[1] > run[0]]
        if len(spans) >= 3:
            (first, last, tick), (older, older_last, _), (oldest, oldest_last, _) = spans[:3]
            size = older_last - older + 1
            if (not first % size and not older % size and last - first < size
                    and not oldest % size and oldest_last - oldest + 1 == size
                    and state.tick - tick <= 2 * size + STALE):  # (a run long over: not this reader's)
                if state.size != size:
                    state.blocks, state.size, state.strays = _Array(), size, 0
                    for start in (oldest, older, first):  # blocks read already: a walk of them may be under way
                        self._predict(state.blocks, start // size, [-(-total // size)], limit, True)
        # the size is kept while reads start blocks that a walk of blocks explains: the spans of
        # a block whose chunks are read at once, in any order (zarr's), may look like no block
        size = state.size
        if not size:
            return []
        blocks = [-(-total // size)]
        block = n // size
        stride, window, named, explained = self._predict(state.blocks, block, blocks, max(1, limit // size), fetched)
        state.strays = 0 if explained else state.strays + 1
        if state.strays > 2:  # reads that start no block of a walk: the blocks are over
            state.blocks, state.size = None, 0
            del runs[1:]  # (recognised again from new spans only)
            return []
        start = name_rank(block, blocks) if named else block
        ahead: list[int] = []
        for k in range(1, window + 1):
            b = start + k * stride
            if not 0 <= b < blocks[0] or len(ahead) >= limit:
                break
            b = name_unrank(b, blocks) if named else b
            ahead.extend(range(b * size, min(b * size + size, total, b * size + limit)))
        # the rest of this block (a walk along it fetches its far end once it goes on; its
        # chunks may be read at once, in any order: zarr's), and the first chunks of the next blocks
        here, room = block * size, max(limit - len(ahead), limit // 2)
        rest = [*range(n + 1, min(here + size, total, n + 1 + room)), *range(here, min(n, here + room))][:room]
        return [*rest, *ahead][:limit]

    def _limit(self, ref) -> int:
        """The largest window for a walk of chunks like ``ref`` (see ``window_bytes``)."""
        source = ref.source if isinstance(ref, Decoded) else ref
        if not isinstance(source, Range) or source.length <= 0:
            return self.max_window
        return min(self.max_window, max(self.first_window, self.window_bytes // source.length))

    def _fetched(self, ref) -> bool:
        """Whether the chunk of ``ref`` is in memory or on its way, decoded or not (True when
        not known)."""
        cache = self.reader.cache
        if isinstance(ref, Decoded):
            if (ref.codec, ref.source) in cache:
                return True
            ref = ref.source
        if isinstance(ref, Range) and ref.length <= self.reader.whole_limit:
            return self.reader.segment(ref, ref.length, 0) in cache
        return True

    def _order(self, tree: Index) -> ChunkOrder:
        with self._lock:
            order = self._orders.get(tree)
            if order is None:
                order = self._orders[tree] = ChunkOrder(tree)
            return order

    def on_first_read(self, tree: Index, path: str, ref=None) -> None:
        """Called when a chunk file (its reference ``ref``, if known) is first read through a handle."""
        if ref is None:
            ref = tree.node(path)
        if isinstance(ref, (Range, Whole)) and self.reader.origins.is_local(ref.url):
            return  # local originals need no fetching ahead: the page cache and read-ahead serve them
        order = self._order(tree)
        pos = order.position(path)
        if pos is None:
            return
        directory, n, grid = pos
        limit, fetched = self._limit(ref), self._fetched(ref)
        with self._lock:
            state = self._streams.get(directory)
            if state is None:
                state = self._streams[directory] = _Array()
            stride, window, named, _ = self._predict(state, n, grid, limit, fetched)
            numbers = self._blocks(state, n, grid, limit, fetched)
        paths = order.after(path, window, stride, by_name=named) if window else []
        if numbers:
            paths += order.numbered(path, numbers)
        segments, decoded = [], []
        for next_path in paths:
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
