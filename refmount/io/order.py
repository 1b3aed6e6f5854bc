"""The natural order of an array's chunk files (row-major grid), for fetching ahead."""

from __future__ import annotations

import itertools
import math
import threading
import weakref

from refmount.grid import chunk_name, chunk_number, grid_v2, grid_v2_nested, grid_v3, name_rank, name_unrank
from refmount.index import Index, Inline, load_json


class ChunkOrder:
    """``after(path, n)``: the paths of the next ``n`` chunk files after ``path`` in grid order."""

    def __init__(self, tree: Index):
        self._tree = weakref.ref(tree)  # the prefetcher keeps one order per live tree: never keep it alive
        self._grids: dict[str, list[int] | None] = {}
        self._lock = threading.Lock()

    def _grid(self, directory: str) -> list[int] | None:
        """The chunk grid of the Zarr v2 array in ``directory`` (``.`` separator)."""
        return self._cached(directory, ".zarray", grid_v2)

    def _grid_nested(self, directory: str) -> list[int] | None:
        """The chunk grid of the Zarr v2 array in ``directory`` whose chunk files are nested
        (``dimension_separator: "/"``, ``i/j``: OME-Zarr's)."""
        return self._cached(directory, ".zarray", grid_v2_nested, "/")

    def _grid_v3(self, directory: str) -> list[int] | None:
        """The chunk grid of the Zarr v3 array whose ``c/i/j`` files are under ``directory/c``."""
        return self._cached(directory, "zarr.json", grid_v3)

    def _cached(self, directory: str, name: str, parse, tag: str = "") -> list[int] | None:
        meta_key = f"{directory}/{name}" if directory else name
        key = meta_key + tag
        with self._lock:
            if key in self._grids:
                return self._grids[key]
        grid = None
        tree = self._tree()
        meta = None if tree is None else tree.node(meta_key)
        if isinstance(meta, Inline):
            try:
                grid = parse(load_json(meta.data))
            except (ValueError, KeyError, TypeError, AttributeError):
                grid = None
        with self._lock:
            self._grids[key] = grid
        return grid

    @property
    def tree(self) -> Index | None:
        return self._tree()

    def position(self, path: str) -> tuple[str, int, list[int]] | None:
        """``(array directory, chunk number, grid)`` of a chunk file, or None. For a Zarr v3
        array (``arr/c/i/j``) the directory is ``arr/c``."""
        found = self._position(path)
        return None if found is None else found[:3]

    def _position(self, path: str) -> tuple[str, int, list[int], bool] | None:
        """``position`` and whether the array's chunk names are nested directories (Zarr v3's
        ``c/i/j``, or a Zarr v2 array's ``i/j``: decided by its metadata, not by a name)."""
        directory, _, name = path.rpartition("/")
        grid = self._grid(directory)
        if grid and not name.startswith("."):
            n = chunk_number(name, grid)
            return None if n is None else (directory, n, grid, False)
        parts = path.split("/")
        for i in range(len(parts) - 2, -1, -1):  # the nearest "c" that is an array's chunk prefix
            if parts[i] == "c":
                grid = self._grid_v3("/".join(parts[:i]))
                if grid and len(parts) - i - 1 == len(grid):
                    n = chunk_number(".".join(parts[i + 1 :]), grid)
                    return None if n is None else ("/".join(parts[: i + 1]), n, grid, True)
        if not parts[-1].isdigit():
            return None
        for i in range(len(parts) - 2, -2, -1):  # a Zarr v2 array with nested chunk names (i/j), or the root
            if not parts[i + 1].isdigit():
                break
            grid = self._grid_nested("/".join(parts[: i + 1]))
            if grid:
                if len(parts) - i - 1 != len(grid):
                    return None
                n = chunk_number(".".join(parts[i + 1 :]), grid)
                return None if n is None else ("/".join(parts[: i + 1]), n, grid, True)
        return None

    def after(self, path: str, count: int, stride: int = 1, by_name: bool = False) -> list[str]:
        """The paths of the next ``count`` chunk files after ``path`` going ``stride`` chunks
        at a time in grid order (negative: backwards), within the grid; ``by_name``: in the
        order of the chunk names sorted as strings (``grid.name_rank``)."""
        pos = self._position(path)
        if pos is None or not stride:
            return []
        _, n, grid, _ = pos
        total = math.prod(grid)
        start = name_rank(n, grid) if by_name else n
        numbers = itertools.takewhile(lambda m: 0 <= m < total, (start + stride * k for k in range(1, count + 1)))
        if by_name:
            numbers = (name_unrank(m, grid) for m in numbers)
        return self._paths(pos, numbers)

    def numbered(self, path: str, numbers: list[int]) -> list[str]:
        """The paths of the chunk files numbered ``numbers`` (row-major) in the array of ``path``."""
        pos = self._position(path)
        return [] if pos is None else self._paths(pos, numbers)

    @staticmethod
    def _paths(pos: tuple[str, int, list[int], bool], numbers) -> list[str]:
        directory, _, grid, nested = pos
        total = math.prod(grid)
        prefix = f"{directory}/" if directory else ""
        names = (chunk_name(m, grid) for m in numbers if 0 <= m < total)
        return [prefix + (name.replace(".", "/") if nested else name) for name in names]
