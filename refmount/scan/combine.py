"""Many files' references -> one reference set, concatenated along a dimension.

Files are added one at a time, in order (``Combiner.add``): each is checked against the first and
only what the result needs is kept, compactly (chunk indices, offsets and sizes in flat arrays; a
file's metadata is dropped once checked), so 100,000 files combine in bounded memory. The result
(``Combined``) is a kerchunk v1 dict, or is written straight to a Parquet reference directory.

The default dimension is the netCDF record (unlimited) dimension. Its coordinate is taken from
every file, decoded with its own CF ``units`` (``days since 2000-01-01``...) so files with different
epochs combine correctly, re-encoded in the first file's units and stored inline. Every other
difference that would make a silently wrong aggregate is an error naming the files and the
variable: a variable missing from a file, differing dtypes, codecs, chunk shapes, fill values,
``scale_factor``/``add_offset``; variables without the dimension whose values differ; a file whose
length along the dimension is not a multiple of the chunk length (its chunks would not line up).
"""

from __future__ import annotations

import base64
import json
import math
import re
from array import array
from dataclasses import dataclass, field

import numpy as np

from refmount.errors import RefmountError
from refmount.scan.model import Chunks, FileScan, Variable

_DECODING_ATTRS = ("scale_factor", "add_offset", "_FillValue", "missing_value", "dtype")
_SINCE = re.compile(r"\s*(\w+)\s+since\s+(.+?)\s*\Z", re.I)
_UNITS = {"days": "D", "day": "D", "d": "D", "hours": "h", "hour": "h", "h": "h", "minutes": "m", "minute": "m",
          "seconds": "s", "second": "s", "s": "s", "milliseconds": "ms", "microseconds": "us"}
_STANDARD = {None, "standard", "gregorian", "proleptic_gregorian"}


def _epoch(units: str):
    """``(numpy unit, epoch as datetime64[us])`` of CF time units, or None when not a time."""
    m = _SINCE.match(units or "")
    if not m or m.group(1).lower() not in _UNITS:
        return None
    text = m.group(2).replace(" ", "T", 1).rstrip("Z").replace("T00:00:00.0", "T00:00:00")
    text = re.sub(r"([+-]00:?00|UTC)\Z", "", text).strip()
    try:
        return _UNITS[m.group(1).lower()], np.datetime64(text, "us")
    except ValueError:
        return None


def _reencode(values: list, units: str, target: str, calendar, where: str) -> list:
    """``values`` in ``units`` expressed in ``target`` units (CF time), exactly or an error."""
    if units == target:
        return values
    source, goal = _epoch(units), _epoch(target)
    if source is None or goal is None:
        raise RefmountError(f"{where}: units {units!r} and {target!r} differ and are not CF time units")
    if calendar not in _STANDARD:
        raise RefmountError(f"{where}: calendar {calendar!r} with differing units ({units!r}, {target!r}) cannot be combined")
    unit, epoch = source
    times = epoch + (np.asarray(values, dtype="float64") * np.timedelta64(1, unit).astype("timedelta64[us]").astype("float64")
                     ).astype("timedelta64[us]")
    goal_unit, goal_epoch = goal
    step = np.timedelta64(1, goal_unit).astype("timedelta64[us]").astype("float64")
    return ((times - goal_epoch).astype("float64") / step).tolist()


class _Refs:
    """One array's chunk references, compactly: grid index, file number, offset, size per chunk
    (inline bytes aside)."""

    def __init__(self, ndim: int):
        self.ndim = ndim
        self.index, self.file, self.offset, self.size = array("q"), array("l"), array("q"), array("q")
        self.inline: dict[int, bytes] = {}  # position among the chunks -> bytes

    def __len__(self) -> int:
        return len(self.file)

    def add(self, file_no: int, chunks: Chunks, axis: int | None = None, shift: int = 0) -> None:
        """One file's chunks, moved ``shift`` chunks along ``axis``."""
        index = chunks.index
        if axis is not None and shift:
            index = index.copy()
            index[:, axis] += shift
        base = len(self.file)
        self.index.frombytes(np.ascontiguousarray(index, dtype=np.int64).tobytes())
        self.file.frombytes(np.full(len(chunks), file_no, dtype=np.dtype("l")).tobytes())
        self.offset.frombytes(chunks.offset.astype(np.int64).tobytes())
        self.size.frombytes(chunks.size.astype(np.int64).tobytes())
        for row, data in chunks.inline.items():
            self.inline[base + row] = data

    def flat(self, grid: list[int]) -> np.ndarray:
        """Each chunk's row-major position in the chunk grid."""
        if not self.ndim:
            return np.zeros(len(self), dtype=np.int64)
        index = np.frombuffer(self.index, dtype=np.int64).reshape(-1, self.ndim)
        return np.ravel_multi_index(tuple(index.T), grid).astype(np.int64) if len(index) else np.zeros(0, np.int64)


@dataclass
class Combined:
    """A combined reference set: metadata (key -> JSON-able object) and each array's chunks."""

    files: list[str]
    metadata: dict[str, object] = field(default_factory=dict)
    arrays: dict[str, tuple[dict, _Refs]] = field(default_factory=dict)  # path -> (.zarray, chunks)

    @property
    def chunks(self) -> int:
        return sum(len(refs) for _, refs in self.arrays.values())

    @property
    def referenced_bytes(self) -> int:
        return sum(sum(refs.size) - sum(len(v) for v in refs.inline.values()) for _, refs in self.arrays.values())

    def keys(self, path: str, prefix: str = "") -> tuple[list[str], list]:
        """The keys (after ``prefix``) and values of one array's chunks, in grid order."""
        zarray, refs = self.arrays[path]
        order = np.argsort(refs.flat(grid_of(zarray)), kind="stable")
        if refs.ndim:
            index = np.frombuffer(refs.index, dtype=np.int64).reshape(-1, refs.ndim)[order]
            top = int(index.max()) + 1 if len(index) else 0
            if top <= 4 * len(index) + 1024 and (not len(index) or index.min() >= 0):
                # each number's text made once (the grid is not sparse)
                name = [str(i) for i in range(top)].__getitem__
            else:
                name = str
            columns = [list(map(name, index[:, axis].tolist())) for axis in range(refs.ndim)]
            keys = [prefix + key for key in map(".".join, zip(*columns))] if prefix else list(map(".".join, zip(*columns)))
        else:
            keys = [prefix + "0"] * len(order)
        files = np.frombuffer(refs.file, dtype=np.dtype("l"))[order].tolist()
        offsets = np.frombuffer(refs.offset, dtype=np.int64)[order].tolist()
        sizes = np.frombuffer(refs.size, dtype=np.int64)[order].tolist()
        urls = self.files
        values: list = [[urls[f], o, n] for f, o, n in zip(files, offsets, sizes)]
        if refs.inline:
            position = np.empty_like(order)
            position[order] = np.arange(len(order))
            for row, data in refs.inline.items():
                values[position[row]] = data
        return keys, values

    def to_refs(self) -> dict:
        """The kerchunk v1 dict (``{"version": 1, "refs": ...}``)."""
        out: dict[str, object] = {key: json.dumps(value) for key, value in self.metadata.items()}
        for path, (_, refs) in self.arrays.items():
            keys, values = self.keys(path, f"{path}/")
            if refs.inline:
                values = ["base64:" + base64.b64encode(v).decode() if isinstance(v, bytes) else v for v in values]
            out.update(zip(keys, values))
        return {"version": 1, "refs": out}


def grid_of(zarray: dict) -> list[int]:
    return [-(-s // c) if c else 0 for s, c in zip(zarray["shape"], zarray["chunks"])] or [1]


class Combiner:
    """Adds files' scans in order; ``result()`` is the combined set. ``count`` files in all."""

    def __init__(self, count: int, concat_dim: str | None = None):
        self.count, self.concat_dim = count, concat_dim
        self.first: FileScan | None = None
        self.files: list[str] = []
        self.kinds: dict[str, str] = {}  # path -> "static" | "coordinate" | "concat"
        self.layout: dict[str, Variable] = {}  # the first file's variables, without their chunks
        self.lengths: dict[str, int] = {}  # concatenated variables: length so far along the dimension
        self.last_length: dict[str, int] = {}
        self.values: dict[str, list] = {}
        self.refs: dict[str, _Refs] = {}

    def add(self, scan: FileScan) -> None:
        n = len(self.files)
        self.files.append(scan.url)
        if self.first is None:
            self._start(scan)
        first = self.first
        for path in first.variables:
            if path not in scan.variables:
                raise RefmountError(f"variable {path} is in {first.url} but not in {scan.url}")
        extra = set(scan.variables) - set(first.variables)
        if extra:
            raise RefmountError(f"variable {sorted(extra)[0]} is in {scan.url} but not in {first.url}")
        for path, kind in self.kinds.items():
            part, ref = scan.variables[path], self.layout[path]
            if kind == "static":
                if n:
                    _same_layout(path, first.url, ref, scan.url, part, None)
                    if ref.digest is not None and part.digest != ref.digest:
                        raise RefmountError(f"variable {path} has no concatenated dimension but differs between "
                                            f"{first.url} and {scan.url}")
                else:
                    self.refs[path].add(n, part.refs)
            elif kind == "coordinate":
                self._coordinate(path, scan, part)
            else:
                self._concatenate(path, n, scan, part)

    def _start(self, scan: FileScan) -> None:
        self.first = scan
        if self.count > 1:
            if self.concat_dim is None:
                unlimited = [v.path.rpartition("/")[2] for v in scan.variables.values() if v.unlimited]
                if len(unlimited) != 1:
                    raise RefmountError(f"{scan.url}: {'no' if not unlimited else 'more than one'} unlimited dimension "
                                        f"({', '.join(unlimited) or 'none'}): name the one to concatenate with --concat-dim")
                self.concat_dim = unlimited[0]
            if not any(self.concat_dim in v.dims for v in scan.variables.values()):
                raise RefmountError(f"{scan.url}: no variable has dimension {self.concat_dim!r}")
        for path, var in scan.variables.items():
            if self.count == 1 or self.concat_dim not in var.dims:
                kind = "static"
            elif path.rpartition("/")[2] == self.concat_dim and var.zarray["shape"] and len(var.dims) == 1:
                kind = "coordinate"
                self.values[path] = []
            else:
                kind = "concat"
                self.lengths[path] = 0
            self.kinds[path] = kind
            self.layout[path] = Variable(path, var.zarray, var.zattrs, var.dims, Chunks.empty(0), var.digest,
                                         default_fill=var.default_fill)
            self.refs[path] = _Refs(len(var.zarray["shape"]))

    def _concatenate(self, path: str, n: int, scan: FileScan, part: Variable) -> None:
        ref = self.layout[path]
        axis = ref.dims.index(self.concat_dim)
        _same_layout(path, self.first.url, ref, scan.url, part, axis)
        chunk, length = ref.zarray["chunks"][axis], self.lengths[path]
        if length % chunk:
            raise RefmountError(f"variable {path}: {self.files[n - 1]} has {self.last_length[path]} steps along "
                                f"{self.concat_dim}, not a multiple of the chunk length {chunk}; its last chunk would "
                                "not line up with the next file's (rechunk, or combine fewer files)")
        self.refs[path].add(n, part.refs, axis, length // chunk)
        self.last_length[path] = part.zarray["shape"][axis]
        self.lengths[path] = length + self.last_length[path]

    def _coordinate(self, path: str, scan: FileScan, part: Variable) -> None:
        ref = self.layout[path]
        if part.values is None:
            why = "has unwritten values (it is shorter than its dimension)" if part.short else "is too large"
            raise RefmountError(f"{scan.url}: coordinate {path} {why}: it cannot be combined")
        calendar = ref.zattrs.get("calendar")
        if part.zattrs.get("calendar") != calendar:
            raise RefmountError(f"coordinate {path}: calendar differs between {self.first.url} and {scan.url}")
        values = _reencode(part.values, part.zattrs.get("units"), ref.zattrs.get("units"), calendar,
                           f"coordinate {path} of {scan.url}")
        self.values[path].append(np.asarray(values, dtype="float64"))

    def result(self) -> Combined:
        if self.first is None:
            raise RefmountError("no files to combine")
        out = Combined(self.files)
        for path, attrs in self.first.groups.items():
            prefix = f"{path}/" if path else ""
            out.metadata[prefix + ".zgroup"] = {"zarr_format": 2}
            if attrs:
                out.metadata[prefix + ".zattrs"] = attrs
        for path, kind in self.kinds.items():
            var, refs = self.layout[path], self.refs[path]
            zarray = var.zarray
            if kind == "coordinate":
                zarray, data = self._coordinate_values(path)
                refs.add(0, Chunks.one(1, data=data))
            elif kind == "concat":
                axis = var.dims.index(self.concat_dim)
                zarray = dict(zarray, shape=[self.lengths[path] if i == axis else s for i, s in enumerate(zarray["shape"])])
            if zarray.get("fill_value") is None and var.default_fill is not None and len(refs) < math.prod(grid_of(zarray)):
                zarray = dict(zarray, fill_value=var.default_fill)  # chunks never written read as HDF5 reads them
            out.metadata[f"{path}/.zarray"] = zarray
            out.metadata[f"{path}/.zattrs"] = var.zattrs
            out.arrays[path] = (zarray, refs)
        return out

    def _coordinate_values(self, path: str) -> tuple[dict, bytes]:
        """The concatenated dimension's coordinate: every file's values, in the first file's units, inline."""
        ref = self.layout[path]
        dtype = np.dtype(ref.zarray["dtype"])
        array = np.concatenate(self.values[path])
        if dtype.kind in "iu" and not np.array_equal(array, np.round(array)):
            dtype = np.dtype(dtype.byteorder + "f8" if dtype.byteorder in "<>" else "f8")  # re-encoding made fractions
        data = array.astype(dtype)
        if len(np.unique(data)) != len(data):
            raise RefmountError(f"coordinate {path}: the files repeat values ({self.files[0]} ... {self.files[-1]}); "
                                "they overlap, or are not in order")
        zarray = dict(ref.zarray, shape=[len(data)], chunks=[len(data)], dtype=dtype.str, filters=None, compressor=None)
        return zarray, data.tobytes()


def _same_layout(path: str, first_url: str, ref: Variable, url: str, part: Variable, axis: int | None) -> None:
    for name in ("dtype", "filters", "compressor", "fill_value", "order"):
        if part.zarray.get(name) != ref.zarray.get(name):
            raise RefmountError(f"variable {path}: {name} differs between {first_url} "
                                f"({ref.zarray.get(name)!r}) and {url} ({part.zarray.get(name)!r})")
    if part.default_fill != ref.default_fill:
        raise RefmountError(f"variable {path}: fill_value differs between {first_url} "
                            f"({ref.default_fill!r}) and {url} ({part.default_fill!r})")
    if part.zarray["chunks"] != ref.zarray["chunks"]:
        raise RefmountError(f"variable {path}: chunk shape differs between {first_url} {ref.zarray['chunks']} "
                            f"and {url} {part.zarray['chunks']}")
    others = [i for i in range(len(ref.zarray["shape"])) if i != axis]
    if [part.zarray["shape"][i] for i in others] != [ref.zarray["shape"][i] for i in others]:
        raise RefmountError(f"variable {path}: shape differs between {first_url} {ref.zarray['shape']} and "
                            f"{url} {part.zarray['shape']} (other than along the concatenated dimension)")
    for attr in _DECODING_ATTRS:
        if part.zattrs.get(attr) != ref.zattrs.get(attr):
            raise RefmountError(f"variable {path}: {attr} differs between {first_url} ({ref.zattrs.get(attr)!r}) "
                                f"and {url} ({part.zattrs.get(attr)!r})")


def combine(scans: list[FileScan], concat_dim: str | None = None) -> dict:
    """One kerchunk v1 reference set (``{"version": 1, "refs": ...}``) for ``scans`` in order."""
    combiner = Combiner(len(scans), concat_dim)
    for one in scans:
        combiner.add(one)
    return combiner.result().to_refs()
