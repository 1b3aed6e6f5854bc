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


def _grid_v2(zarray: dict) -> list[int] | None:
    if zarray.get("dimension_separator", ".") != ".":
        return None
    return grid_of(list(zarray["shape"]), list(zarray["chunks"]))


def _grid_v3(meta: dict) -> list[int] | None:
    encoding = meta.get("chunk_key_encoding") or {}
    chunk_grid = meta.get("chunk_grid") or {}
    if (meta.get("node_type") != "array" or encoding.get("name") != "default" or chunk_grid.get("name") != "regular"
            or (encoding.get("configuration") or {}).get("separator", "/") != "/"):
        return None
    return grid_of(list(meta["shape"]), list(chunk_grid["configuration"]["chunk_shape"]))


class ChunkOrder:
    """``after(path, n)``: the paths of the next ``n`` chunk files after ``path`` in grid order."""

    def __init__(self, tree: Index):
        self.tree = tree
        self._grids: dict[str, list[int] | None] = {}
        self._lock = threading.Lock()

    def _grid(self, directory: str) -> list[int] | None:
        """The chunk grid of the Zarr v2 array in ``directory`` (``.`` separator only)."""
        return self._cached(directory, ".zarray", _grid_v2)

    def _grid_v3(self, directory: str) -> list[int] | None:
        """The chunk grid of the Zarr v3 array whose ``c/i/j`` files are under ``directory/c``."""
        return self._cached(directory, "zarr.json", _grid_v3)

    def _cached(self, directory: str, name: str, parse) -> list[int] | None:
        key = f"{directory}/{name}" if directory else name
        with self._lock:
            if key in self._grids:
                return self._grids[key]
        grid = None
        meta = self.tree.node(key)
        if isinstance(meta, Inline):
            try:
                grid = parse(json.loads(meta.data))
            except (ValueError, KeyError, TypeError, AttributeError):
                grid = None
        with self._lock:
            self._grids[key] = grid
        return grid

    def position(self, path: str) -> tuple[str, int, list[int]] | None:
        """``(array directory, chunk number, grid)`` of a chunk file, or None. For a Zarr v3
        array (``arr/c/i/j``) the directory is ``arr/c``."""
        directory, _, name = path.rpartition("/")
        grid = self._grid(directory)
        if grid and not name.startswith("."):
            n = chunk_number(name, grid)
            return None if n is None else (directory, n, grid)
        parts = path.split("/")
        for i in range(len(parts) - 2, -1, -1):  # the nearest "c" that is an array's chunk prefix
            if parts[i] == "c":
                grid = self._grid_v3("/".join(parts[:i]))
                if grid and len(parts) - i - 1 == len(grid):
                    n = chunk_number(".".join(parts[i + 1 :]), grid)
                    return None if n is None else ("/".join(parts[: i + 1]), n, grid)
        return None

    def after(self, path: str, count: int) -> list[str]:
        pos = self.position(path)
        if pos is None:
            return []
        directory, n, grid = pos
        total = math.prod(grid)
        prefix = f"{directory}/" if directory else ""
        v3 = directory == "c" or directory.endswith("/c")
        names = (chunk_name(m, grid) for m in range(n + 1, min(n + 1 + count, total)))
        return [prefix + (name.replace(".", "/") if v3 else name) for name in names]
