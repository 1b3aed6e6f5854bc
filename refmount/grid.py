"""Chunk-grid maths: chunks per dimension, chunk names and their row-major numbers."""

from __future__ import annotations

import math


def _ceil_div(size, chunk):
    """Chunks of ``chunk`` along ``size``: exact for integers of any size (not through a float)."""
    return -(-size // chunk) if type(size) is int and type(chunk) is int else math.ceil(size / chunk)


def grid_of(shape: list[int], chunks: list[int]) -> list[int]:
    """Chunks per dimension; a scalar array has one chunk, a zero-length chunk none."""
    return [_ceil_div(s, c) if c else 0 for s, c in zip(shape, chunks)] if shape else [1]


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


def _with_prefix(prefix: int, top: int) -> int:
    """How many of the numbers ``1..top`` are written starting with the digits of ``prefix`` (>= 1)."""
    count, low, high = 0, prefix, prefix
    while low <= top:
        count += min(high, top) - low + 1
        low, high = low * 10, high * 10 + 9
    return count


def _name_rank_1d(i: int, size: int) -> int:
    """The place of ``str(i)`` among the names ``0 .. size-1`` sorted as strings."""
    if i == 0:
        return 0
    top, digits, prefix, rank = size - 1, str(i), 0, 1  # ("0" is first)
    for k, digit in enumerate(digits):
        for smaller in range(1 if k == 0 else 0, int(digit)):
            rank += _with_prefix(prefix * 10 + smaller, top)  # every name under a smaller sibling
        prefix = prefix * 10 + int(digit)
        if k < len(digits) - 1:
            rank += 1  # a prefix of the name sorts before it
    return rank


def _name_unrank_1d(rank: int, size: int) -> int:
    """The number whose name is ``rank``-th among ``0 .. size-1`` sorted as strings."""
    if not 0 <= rank < size:  # (past the last name the walk below would not end)
        raise ValueError(f"no name {rank} among {size}")
    if rank == 0:
        return 0
    top, rank, current = size - 1, rank - 1, 1
    while rank:
        under = _with_prefix(current, top)
        if rank >= under:  # past this name and every name it prefixes
            rank -= under
            current += 1
        else:  # this name, then the ones it prefixes
            rank -= 1
            current *= 10
    return current


def names_differ(grid: list[int]) -> bool:
    """Whether sorting an array's chunk names as strings gives another order than the grid's
    (only when an axis has more than ten chunks: ``10`` sorts before ``2``)."""
    return any(size > 10 for size in grid)


def _per_axis(n: int, grid: list[int], convert) -> int:
    """``n``'s index along each axis (row-major) through ``convert(index, size)``, recombined."""
    out, scale = 0, 1
    for size in reversed(grid):
        out += convert(n % size, size) * scale
        n //= size
        scale *= size
    return out


def name_rank(n: int, grid: list[int]) -> int:
    """Where chunk ``n`` (row-major) comes when the array's chunk names are sorted as strings
    (``0.0, 0.1, 0.10, 0.11, ..., 0.2``): the order of a sorted listing, and the order in which
    dask schedules the chunks of a load it has no other reason to order (backwards). Names
    compare part by part, as the separator sorts before every digit."""
    return _per_axis(n, grid, _name_rank_1d)


def name_unrank(rank: int, grid: list[int]) -> int:
    """The chunk number (row-major) of the ``rank``-th chunk name in string order."""
    if not 0 <= rank < math.prod(grid):
        raise ValueError(f"no chunk name {rank} in a grid of {grid}")
    return _per_axis(rank, grid, _name_unrank_1d)


def grid_v2(zarray: dict, separator: str = ".") -> list[int] | None:
    """Chunks per dimension of a Zarr v2 array whose chunk names use ``separator`` (``"/"``:
    nested directories, ``a/0/1``); None for one that uses the other."""
    if (zarray.get("dimension_separator") or ".") != separator:
        return None
    return grid_of(list(zarray["shape"]), list(zarray["chunks"]))


def grid_v2_nested(zarray: dict) -> list[int] | None:
    return grid_v2(zarray, "/")


def runs_v3(meta: dict) -> list[list[tuple[int, int]]] | None:
    """The chunk edge lengths of a Zarr v3 array along each dimension, as ``(length, count)``
    runs (the last chunk of a dimension may reach past the array's end), for the ``regular``
    and the ``rectilinear`` chunk grid (``chunk_shapes``: per dimension an edge length, or a
    list of lengths and ``[length, count]`` runs); None for anything else. Runs, not every
    edge: a regular grid of 2**40 chunks is one run, not a list of them."""
    shape = list(meta["shape"])
    chunk_grid = meta.get("chunk_grid") or {}
    if not isinstance(chunk_grid, dict):
        return None
    config = chunk_grid.get("configuration") or {}
    if chunk_grid.get("name") == "regular":
        specs = list(config["chunk_shape"])
    elif chunk_grid.get("name") == "rectilinear" and config.get("kind", "inline") == "inline":
        specs = list(config["chunk_shapes"])
    else:
        return None
    if len(specs) != len(shape):
        return None
    runs = []
    for size, spec in zip(shape, specs):
        if type(spec) is int:
            runs.append([(spec, _ceil_div(size, spec) if spec else 0)])
            continue
        dim: list[tuple[int, int]] = []
        for item in spec:
            if type(item) is int:
                dim.append((item, 1))
            elif isinstance(item, list) and len(item) == 2 and all(type(v) is int and v >= 0 for v in item):
                dim.append((item[0], item[1]))
            else:
                return None
        runs.append(dim)
    return runs


def grid_v3(meta: dict) -> list[int] | None:
    """Chunks per dimension of a Zarr v3 array whose chunk keys are ``c/i/j`` (any grid whose
    chunks are indexed: regular and rectilinear)."""
    encoding = meta.get("chunk_key_encoding") or {}
    if (meta.get("node_type") != "array" or encoding.get("name") != "default"
            or (encoding.get("configuration") or {}).get("separator", "/") != "/"):
        return None
    runs = runs_v3(meta)
    return None if runs is None else ([sum(n for _, n in r) for r in runs] if runs else [1])
