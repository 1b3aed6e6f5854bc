"""The natural order of an array's chunk files, from its ``.zarray`` (row-major grid)."""

from __future__ import annotations

import json
import math
import threading

from .index import Index, Inline


def grid_of(shape: list[int], chunks: list[int]) -> list[int]:
    """Chunks per dimension; a scalar array has one chunk, a zero-length chunk none."""
    return [math.ceil(s / c) if c else 0 for s, c in zip(shape, chunks)] if shape else [1]


def chunk_number(name: str, grid: list[int]) -> int | None:
    """Row-major number of chunk file ``name`` (``"i.j.k"``), or None outside the grid or
    not in canonical form (``"01.0"``)."""
    parts = name.split(".")
    if len(parts) != len(grid):
        return None
    n = 0
    for part, size in zip(parts, grid):
        if not part.isdigit() or (len(part) > 1 and part[0] == "0"):
            return None
        i = int(part)
        if i >= size:
            return None
        n = n * size + i
    return n


def chunk_name(n: int, grid: list[int]) -> str:
    parts = []
    for size in reversed(grid):
        parts.append(str(n % size))
        n //= size
    return ".".join(reversed(parts))


class ChunkOrder:
    """``after(path, n)``: the paths of the next ``n`` chunk files after ``path`` in grid order."""

    def __init__(self, tree: Index):
        self.tree = tree
        self._grids: dict[str, list[int] | None] = {}
        self._lock = threading.Lock()

    def _grid(self, directory: str) -> list[int] | None:
        with self._lock:
            if directory in self._grids:
                return self._grids[directory]
        grid = None
        meta = self.tree.node(f"{directory}/.zarray" if directory else ".zarray")
        if isinstance(meta, Inline):
            try:
                zarray = json.loads(meta.data)
                if zarray.get("dimension_separator", ".") == ".":
                    grid = grid_of(list(zarray["shape"]), list(zarray["chunks"]))
            except (ValueError, KeyError, TypeError, AttributeError):
                grid = None
        with self._lock:
            self._grids[directory] = grid
        return grid

    def position(self, path: str) -> tuple[str, int, list[int]] | None:
        """``(array directory, chunk number, grid)`` of a chunk file, or None."""
        directory, _, name = path.rpartition("/")
        grid = self._grid(directory)
        if not grid or name.startswith("."):
            return None
        n = chunk_number(name, grid)
        return None if n is None else (directory, n, grid)

    def after(self, path: str, count: int) -> list[str]:
        pos = self.position(path)
        if pos is None:
            return []
        directory, n, grid = pos
        total = math.prod(grid)
        prefix = f"{directory}/" if directory else ""
        return [prefix + chunk_name(m, grid) for m in range(n + 1, min(n + 1 + count, total))]
