"""Chunk-grid maths: chunks per dimension, chunk names and their row-major numbers."""

from __future__ import annotations

import math


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


def grid_v2(zarray: dict) -> list[int] | None:
    if zarray.get("dimension_separator", ".") != ".":
        return None
    return grid_of(list(zarray["shape"]), list(zarray["chunks"]))


def grid_v3(meta: dict) -> list[int] | None:
    encoding = meta.get("chunk_key_encoding") or {}
    chunk_grid = meta.get("chunk_grid") or {}
    if (meta.get("node_type") != "array" or encoding.get("name") != "default" or chunk_grid.get("name") != "regular"
            or (encoding.get("configuration") or {}).get("separator", "/") != "/"):
        return None
    return grid_of(list(meta["shape"]), list(chunk_grid["configuration"]["chunk_shape"]))
