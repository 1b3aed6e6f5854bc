"""Many files' references -> one reference set, concatenated along a dimension.

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
import re

import numpy as np

from refmount.errors import RefmountError
from refmount.scan.model import FileScan, Variable

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


def combine(scans: list[FileScan], concat_dim: str | None = None) -> dict:
    """One kerchunk v1 reference set (``{"version": 1, "refs": ...}``) for ``scans`` in order."""
    if len(scans) == 1:
        return _refs(scans[0].groups, scans[0].variables)
    first = scans[0]
    if concat_dim is None:
        unlimited = [v.path.rpartition("/")[2] for v in first.variables.values() if v.unlimited]
        if len(unlimited) != 1:
            raise RefmountError(f"{first.url}: {'no' if not unlimited else 'more than one'} unlimited dimension "
                                f"({', '.join(unlimited) or 'none'}): name the one to concatenate with --concat-dim")
        concat_dim = unlimited[0]
    if not any(concat_dim in v.dims for v in first.variables.values()):
        raise RefmountError(f"{first.url}: no variable has dimension {concat_dim!r}")
    variables: dict[str, Variable] = {}
    for path, var in first.variables.items():
        parts = [scan.variables.get(path) for scan in scans]
        for scan, part in zip(scans, parts):
            if part is None:
                raise RefmountError(f"variable {path} is in {first.url} but not in {scan.url}")
        if concat_dim not in var.dims:
            variables[path] = _identical(path, scans, parts)
        elif path.rpartition("/")[2] == concat_dim and var.zarray["shape"] and len(var.dims) == 1:
            variables[path] = _coordinate(path, scans, parts)
        else:
            variables[path] = _concatenated(path, scans, parts, var.dims.index(concat_dim))
    for scan in scans[1:]:
        extra = set(scan.variables) - set(first.variables)
        if extra:
            raise RefmountError(f"variable {sorted(extra)[0]} is in {scan.url} but not in {first.url}")
    return _refs(first.groups, variables)


def _same_layout(path: str, scans, parts, axis: int | None) -> None:
    ref = parts[0]
    for scan, part in zip(scans[1:], parts[1:]):
        for field in ("dtype", "filters", "compressor", "fill_value", "order"):
            if part.zarray.get(field) != ref.zarray.get(field):
                raise RefmountError(f"variable {path}: {field} differs between {scans[0].url} "
                                    f"({ref.zarray.get(field)!r}) and {scan.url} ({part.zarray.get(field)!r})")
        if part.zarray["chunks"] != ref.zarray["chunks"]:
            raise RefmountError(f"variable {path}: chunk shape differs between {scans[0].url} {ref.zarray['chunks']} "
                                f"and {scan.url} {part.zarray['chunks']}")
        others = [i for i in range(len(ref.zarray["shape"])) if i != axis]
        if [part.zarray["shape"][i] for i in others] != [ref.zarray["shape"][i] for i in others]:
            raise RefmountError(f"variable {path}: shape differs between {scans[0].url} {ref.zarray['shape']} and "
                                f"{scan.url} {part.zarray['shape']} (other than along the concatenated dimension)")
        for attr in _DECODING_ATTRS:
            if part.zattrs.get(attr) != ref.zattrs.get(attr):
                raise RefmountError(f"variable {path}: {attr} differs between {scans[0].url} ({ref.zattrs.get(attr)!r}) "
                                    f"and {scan.url} ({part.zattrs.get(attr)!r})")


def _identical(path, scans, parts) -> Variable:
    _same_layout(path, scans, parts, None)
    ref = parts[0]
    for scan, part in zip(scans[1:], parts[1:]):
        if ref.digest is not None and part.digest != ref.digest:
            raise RefmountError(f"variable {path} has no concatenated dimension but differs between {scans[0].url} "
                                f"and {scan.url}")
    return ref


def _concatenated(path, scans, parts, axis: int) -> Variable:
    _same_layout(path, scans, parts, axis)
    chunk = parts[0].zarray["chunks"][axis]
    refs: dict[str, object] = {}
    length = 0
    for n, (scan, part) in enumerate(zip(scans, parts)):
        size = part.zarray["shape"][axis]
        if length % chunk:
            raise RefmountError(f"variable {path}: {scans[n - 1].url} has {parts[n - 1].zarray['shape'][axis]} "
                                f"steps along {part.dims[axis]}, not a multiple of the chunk length {chunk}; its "
                                "last chunk would not line up with the next file's (rechunk, or combine fewer files)")
        shift = length // chunk
        for key, value in part.refs.items():
            index = key.split(".")
            index[axis] = str(int(index[axis]) + shift)
            refs[".".join(index)] = value
        length += size
    zarray = dict(parts[0].zarray, shape=[length if i == axis else s for i, s in enumerate(parts[0].zarray["shape"])])
    return Variable(path, zarray, parts[0].zattrs, parts[0].dims, refs)


def _coordinate(path, scans, parts) -> Variable:
    """The concatenated dimension's coordinate: every file's values, in the first file's units, inline."""
    ref = parts[0]
    units, calendar = ref.zattrs.get("units"), ref.zattrs.get("calendar")
    values: list = []
    for scan, part in zip(scans, parts):
        if part.values is None:
            raise RefmountError(f"{scan.url}: coordinate {path} is too large to combine")
        if part.zattrs.get("calendar") != calendar:
            raise RefmountError(f"coordinate {path}: calendar differs between {scans[0].url} and {scan.url}")
        values += _reencode(part.values, part.zattrs.get("units"), units, calendar, f"coordinate {path} of {scan.url}")
    dtype = np.dtype(ref.zarray["dtype"])
    array = np.asarray(values, dtype="float64")
    if dtype.kind in "iu" and not np.array_equal(array, np.round(array)):
        dtype = np.dtype(dtype.byteorder + "f8" if dtype.byteorder in "<>" else "f8")  # re-encoding made fractions
    data = array.astype(dtype)
    if len(np.unique(data)) != len(data):
        raise RefmountError(f"coordinate {path}: the files repeat values ({scans[0].url} ... {scans[-1].url}); "
                            "they overlap, or are not in order")
    zarray = dict(ref.zarray, shape=[len(data)], chunks=[len(data)], dtype=dtype.str, filters=None, compressor=None)
    return Variable(path, zarray, ref.zattrs, ref.dims, {"0": data.tobytes()})


def _refs(groups: dict[str, dict], variables: dict[str, Variable]) -> dict:
    refs: dict[str, object] = {}
    for path, attrs in groups.items():
        prefix = f"{path}/" if path else ""
        refs[prefix + ".zgroup"] = json.dumps({"zarr_format": 2})
        if attrs:
            refs[prefix + ".zattrs"] = json.dumps(attrs)
    for path, var in variables.items():
        refs[f"{path}/.zarray"] = json.dumps(var.zarray)
        refs[f"{path}/.zattrs"] = json.dumps(var.zattrs)
        for key, value in var.refs.items():
            refs[f"{path}/{key}"] = "base64:" + base64.b64encode(value).decode() if isinstance(value, bytes) else value
    return {"version": 1, "refs": refs}
