"""What a scan of one original file yields, whatever its format (``hdf5.py``, ``netcdf3.py``):
groups with their attributes and variables with their Zarr v2 metadata and chunk references."""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field

import numpy as np

INLINE_BYTES = 500  # variables (and chunks) this small are kept in the references themselves
SPLIT_BYTES = 64 << 20  # contiguous uncompressed variables larger than this: several chunks
DIGEST_BYTES = 64 << 20  # variables up to this size get a digest of their values (combine checks)


class Skip(Exception):
    """A variable that cannot be described by references (said in a warning)."""


@dataclass
class Chunks:
    """A variable's chunk references in one file, as arrays: row ``i`` is the chunk at grid index
    ``index[i]``, bytes ``[offset[i], offset[i] + size[i])`` of the file -- or ``inline[i]``."""

    index: np.ndarray  # (n, ndim) int64
    offset: np.ndarray  # (n,) int64
    size: np.ndarray  # (n,) int64
    inline: dict[int, bytes] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.offset)

    @classmethod
    def ranges(cls, index, offset, size) -> "Chunks":
        """``index``: (n, ndim) grid indices; ``offset``, ``size``: n each."""
        return cls(np.asarray(index, dtype=np.int64), np.asarray(offset, dtype=np.int64),
                   np.asarray(size, dtype=np.int64))

    @classmethod
    def one(cls, ndim: int, offset: int = 0, size: int = 0, data: bytes | None = None) -> "Chunks":
        """The single chunk at the grid's origin: a range, or ``data`` inline."""
        chunks = cls(np.zeros((1, ndim), dtype=np.int64), np.array([offset], dtype=np.int64),
                     np.array([size if data is None else len(data)], dtype=np.int64))
        if data is not None:
            chunks.inline[0] = data
        return chunks

    @classmethod
    def empty(cls, ndim: int) -> "Chunks":
        return cls(np.zeros((0, ndim), dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))


@dataclass
class Variable:
    path: str
    zarray: dict
    zattrs: dict
    dims: list[str]
    refs: Chunks
    digest: str | None = None  # of the values, for small variables
    values: list | None = None  # 1-D coordinate values (for combining along a dimension)
    unlimited: bool = False  # a netCDF record (unlimited) dimension's coordinate
    short: bool = False  # a coordinate with unwritten values (shorter than its dimension)
    # the .zarray fill value should a chunk be missing where the file declares none (HDF5's own)
    default_fill: object = None


@dataclass
class FileScan:
    url: str
    groups: dict[str, dict] = field(default_factory=dict)  # path -> attributes
    variables: dict[str, Variable] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def chunks(self) -> int:
        return sum(len(v.refs) for v in self.variables.values())


ZARR_NAMES = frozenset((".zarray", ".zgroup", ".zattrs", ".zmetadata", "zarr.json"))


def drop_unrepresentable(scan: "FileScan") -> "FileScan":
    """Leave out, with a warning, the groups and variables a Zarr tree cannot hold: a name that
    is one of Zarr's own metadata files (an HDF5 dataset called ``.zarray`` would be read as an
    array's metadata; one called ``.zgroup`` at the root collides with the root's), and all
    below such a group (said once, for the group)."""
    def first_bad(path: str) -> int | None:
        return next((i for i, part in enumerate(path.split("/")) if part in ZARR_NAMES), None)

    for kind, table in (("group", scan.groups), ("variable", scan.variables)):
        for path in [p for p in table if p and first_bad(p) is not None]:
            del table[path]
            if first_bad(path) == path.count("/"):  # its own name, not a group above it
                below = ", with all in it" if kind == "group" else ""
                scan.warnings.append(f"{scan.url}: {kind} {path}: its name is a Zarr metadata file's; left out{below}")
    return scan


def json_value(value):
    """An HDF5 attribute as JSON; a one-element array (how netCDF-C stores every number) as
    its element, as netCDF and xarray read it. NaN and infinities stay numbers (written
    ``NaN``, ``Infinity``, as zarr-python and kerchunk write attributes): a ``valid_max`` of
    infinity read back as the text "Infinity" would be another attribute."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        if value.size == 1:
            return json_value(value.reshape(()).item())
        return [json_value(v) for v in value.tolist()] if value.ndim else json_value(value.item())
    if isinstance(value, (np.generic,)):
        return json_value(value.item())
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def fill_value(dtype: np.dtype, value):
    """A ``.zarray`` fill value: NaN and infinities as the texts Zarr v2 names them."""
    if value is None:
        return None
    if dtype.kind in "SV":
        return base64.b64encode(np.asarray(value, dtype=dtype).tobytes()).decode()
    value = np.asarray(value, dtype=dtype).item() if dtype.kind not in "O" else value
    if isinstance(value, complex):  # Zarr v2: [real, imaginary]
        return [fill_value(np.dtype("f8"), value.real), fill_value(np.dtype("f8"), value.imag)]
    value = json_value(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def split_rows(shape: list[int], itemsize: int) -> int | None:
    """Rows per chunk for a large contiguous variable: a divisor of the first axis (every chunk
    the same size, as Zarr v2 needs) whose chunks stay under ``SPLIT_BYTES``; None if none helps."""
    if not shape or shape[0] < 2:
        return None
    row = int(np.prod(shape[1:], dtype=np.int64)) * itemsize
    best = None
    for rows in range(1, shape[0]):
        if shape[0] % rows == 0 and rows * row <= SPLIT_BYTES:
            best = rows
    return best
