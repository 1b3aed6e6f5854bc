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

    def _grid_v3(self, directory: str) -> list[int] | None:
        """The chunk grid of the Zarr v3 array whose ``c/i/j`` files are under ``directory/c``."""
        key = directory + "\x00v3"
        with self._lock:
            if key in self._grids:
                return self._grids[key]
        grid = None
        meta = self.tree.node(f"{directory}/zarr.json" if directory else "zarr.json")
        if isinstance(meta, Inline):
            try:
                v3 = json.loads(meta.data)
                encoding = v3.get("chunk_key_encoding") or {}
                chunk_grid = v3.get("chunk_grid") or {}
                if (v3.get("node_type") == "array" and encoding.get("name") == "default"
                        and (encoding.get("configuration") or {}).get("separator", "/") == "/" and chunk_grid.get("name") == "regular"):
                    grid = grid_of(list(v3["shape"]), list(chunk_grid["configuration"]["chunk_shape"]))
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
