"""One HDF5 / NetCDF4 file -> kerchunk references, with h5py.

Chunked datasets are walked once with ``chunk_iter`` (not a call per chunk); contiguous ones are
one range (split along the first axis when large and uncompressed, so reads parallelise); compact
ones and small variables are inline, variable-length strings too (as vlen-utf8) when small.
Filters map to numcodecs ids; a filter numcodecs cannot decode here, a chunk stored with a filter
skipped (``filter_mask``), a large variable of strings or another variable-length type leaves
that variable out with a warning -- never a reference that decodes to garbage.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import itertools

import numpy as np

from refmount.scan.model import (DIGEST_BYTES, SPLIT_BYTES, Chunks, FileScan, Skip, Variable, fill_value,
                                  json_value, split_rows)

# HDF5 filter id -> numcodecs codec description (None: cannot be described)
_DEFLATE, _SHUFFLE, _FLETCHER32, _SZIP, _NBIT, _SCALEOFFSET, _LZF, _BLOSC, _LZ4, _BSHUF, _ZSTD = \
    1, 2, 3, 4, 5, 6, 32000, 32001, 32004, 32008, 32015
_NAMES = {_SZIP: "szip", _NBIT: "nbit", _SCALEOFFSET: "scaleoffset", _LZF: "lzf", _BLOSC: "blosc",
          _LZ4: "lz4", _BSHUF: "bitshuffle"}
_INTERNAL_ATTRS = {"DIMENSION_LIST", "REFERENCE_LIST", "CLASS", "NAME", "_Netcdf4Dimid", "_Netcdf4Coordinates",
                   "_nc3_strict", "_NCProperties", "_FillValue"}


def _attributes(obj) -> dict:
    """An object's own attributes as JSON, without reading netCDF's bookkeeping ones, and
    without those no JSON value stands for: a null dataspace, object or region references."""
    import h5py

    out = {}
    attrs = obj.attrs
    for k in attrs:
        if k in _INTERNAL_ATTRS:
            continue
        value = attrs[k]
        if isinstance(value, (h5py.Empty, h5py.Reference, h5py.RegionReference)) or (
                isinstance(value, np.ndarray) and h5py.check_ref_dtype(value.dtype) is not None):
            continue
        out[k] = json_value(value)
    return out


def _filters(dset) -> list[dict]:
    plist = dset.id.get_create_plist()
    out = []
    for i in range(plist.get_nfilters()):
        code, _flags, values, _name = plist.get_filter(i)
        if code == _DEFLATE:
            out.append({"id": "zlib", "level": int(values[0]) if values else 4})
        elif code == _SHUFFLE:
            out.append({"id": "shuffle", "elementsize": dset.dtype.itemsize})
        elif code == _FLETCHER32:
            out.append({"id": "fletcher32"})
        elif code == _ZSTD:
            out.append({"id": "zstd", "level": int(values[0]) if values else 1})
        elif code == _BLOSC:  # a self-describing blosc frame: numcodecs needs no parameter to decode it
            names = ("blosclz", "lz4", "lz4hc", "snappy", "zlib", "zstd")
            cname = names[values[6]] if len(values) > 6 and values[6] < len(names) else "lz4"
            out.append({"id": "blosc", "cname": cname, "clevel": int(values[4]) if len(values) > 4 else 5,
                        "shuffle": int(values[5]) if len(values) > 5 else 1, "blocksize": 0})
        elif code in (_LZ4, _BSHUF):
            raise Skip(f"filter {_NAMES[code]} (HDF5 filter {code}) frames its data in a way no numcodecs codec decodes")
        else:
            raise Skip(f"filter {_NAMES.get(code, 'id ' + str(code))} (HDF5 filter {code}) cannot be described")
    return out


def _dims(dset, sizes: dict) -> tuple[list[str], list[int], list[str | None]]:
    """The dimension names of each axis (netCDF's dimension scales, else phony ones, named as
    netCDF-C names them), each axis's length (at least its scale's: see ``_extend``) and the
    path of the scale each axis is attached to. ``sizes`` is per file: phony names by length,
    each scale's length by its path, and (``("extent", path)``) the longest extent of any
    variable along each scale."""
    import h5py

    if dset.is_scale and dset.ndim == 1:  # a netCDF coordinate: its own dimension
        _extent(sizes, dset.name, dset.shape[0])
        return [dset.name.rpartition("/")[2]], list(dset.shape), [dset.name]
    names, lengths, scales = [], list(dset.shape), []
    attached = dset.attrs["DIMENSION_LIST"] if "DIMENSION_LIST" in dset.attrs else None
    for axis in range(dset.ndim):
        entry = attached[axis] if attached is not None and axis < len(attached) else None
        ref = entry[0] if entry is not None and len(entry) else None
        if ref:  # the scale's path from its reference, its length looked up once per file
            path = h5py.h5r.get_name(ref, dset.id).decode("utf-8", "surrogateescape")
            names.append(path.rpartition("/")[2])
            length = sizes.get(("scale", path))
            if length is None:
                scale = dset.file[path]
                length = sizes[("scale", path)] = scale.shape[0] if scale.ndim == 1 else 0
            lengths[axis] = max(lengths[axis], length)
            _extent(sizes, path, dset.shape[axis])
            scales.append(path)
        else:
            names.append(_phony(sizes, dset.shape[axis], names))
            scales.append(None)
    return names, lengths, scales


def _phony(sizes: dict, length: int, taken: list[str]) -> str:
    """A name for an axis of ``length`` without a dimension scale, as netCDF-C names it: the
    first phony dimension of that length in the file not already an axis of this variable,
    else a new one (a 4 x 4 array gets two: one name twice would make its axes one)."""
    known = sizes.setdefault(("phony", length), [])
    for name in known:
        if name not in taken:
            return name
    count = sizes["phony count"] = sizes.get("phony count", 0) + 1
    known.append(f"phony_dim_{count - 1}")
    return known[-1]


def _extent(sizes: dict, scale: str, length: int) -> None:
    key = ("extent", scale)
    sizes[key] = max(sizes.get(key, 0), length)


def _extend(scan: FileScan, sizes: dict) -> None:
    """netCDF-4 makes each variable along an unlimited dimension as long as the dimension, which
    is as long as the longest such variable (HDF5 extends a dataset only as far as it was
    written, and a dimension without a coordinate variable not at all): a variable written
    less far, or not at all, is that long too, its unwritten end the fill value -- else xarray
    sees one dimension with two lengths and refuses the file. h5netcdf, xarray's reader of HDF5
    files, pads a fixed axis shorter than its scale alike. A coordinate made longer has
    unwritten values: it is not combined. Written with no fill value (netCDF's no-fill mode),
    the unwritten end of its last chunk holds whatever was in memory, where netCDF reads the
    fill value: such a variable is left out, said."""
    for variable, scales, extent, never_filled in sizes.get("chunked", ()):
        shape = variable.zarray["shape"]
        for axis, scale in enumerate(scales):
            length = sizes.get(("extent", scale), 0) if scale else 0
            if length > shape[axis]:
                shape[axis] = length
        if shape == extent:
            continue
        if never_filled:
            del scan.variables[variable.path]
            scan.warnings.append(f"{scan.url}: variable {variable.path}: written less far than its unlimited "
                                 "dimension with no fill value (netCDF's no-fill mode): its unwritten values are "
                                 "undefined; left out")
        elif variable.values is not None:
            variable.values = variable.digest = None
            variable.short = True


def scan_file(url: str, opened, combining: bool = True) -> FileScan:
    """References for every group and variable of one HDF5 file; ``opened`` is the open
    ``h5py.File`` (of a local path or a file object from the origins). ``combining``: read what
    combining with other files needs (coordinates, digests of variables without a record dimension)."""
    import h5py

    scan = FileScan(url)
    sizes: dict = {}  # phony dimension names by length; scale lengths by path; extents along each scale

    def visit(name, obj):
        path = name
        if isinstance(obj, h5py.Group):
            scan.groups[path] = _attributes(obj)
            return
        if not isinstance(obj, h5py.Dataset):  # a committed datatype (netCDF-4's user-defined types)
            return
        try:
            variable = _variable(url, path, obj, sizes, combining)
        except Skip as exc:
            scan.warnings.append(f"{url}: variable {path}: {exc}; left out")
            return
        if variable is not None:
            scan.variables[path] = variable

    scan.groups[""] = _attributes(opened)
    opened.visititems(visit)
    _extend(scan, sizes)
    return scan


@contextlib.contextmanager
def _no_gc():
    """The cyclic garbage collector paused (it would scan the growing list of chunk tuples again
    and again: a fifth of a 10,000-chunk file's scan); what was set before is restored."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _variable(url: str, path: str, dset, sizes: dict, combining: bool) -> Variable | None:
    import h5py

    if dset.shape is None:  # a null dataspace (h5py.Empty): no values, no shape
        raise Skip("it has a null dataspace (no shape and no values)")
    names = set(dset.attrs)  # names only: reading DIMENSION_LIST and the like resolves references
    name = dset.attrs["NAME"] if "NAME" in names else b""
    if isinstance(name, bytes) and name.startswith(b"This is a netCDF dimension but not a netCDF variable"):
        return None  # a dimension without values: nothing to serve
    dtype = dset.dtype
    string = h5py.check_string_dtype(dtype)
    if string is not None and string.length is None:  # variable-length strings: inline when small
        return _vlen_strings(path, dset, sizes, combining)
    if dtype.hasobject or h5py.check_vlen_dtype(dtype) is not None or (dtype.fields and any(
            h5py.check_vlen_dtype(f[0]) is not None for f in dtype.fields.values())):
        raise Skip(f"variable-length type {dtype} has no fixed-size layout")
    shape = list(dset.shape)
    plist = dset.id.get_create_plist()
    layout = plist.get_layout()
    if layout not in (h5py.h5d.CHUNKED, h5py.h5d.CONTIGUOUS, h5py.h5d.COMPACT):
        kind = "a virtual dataset (its values are mapped from other datasets)" if layout == getattr(
            h5py.h5d, "VIRTUAL", None) else f"storage layout {layout}"
        raise Skip(f"{kind} cannot be referenced")
    if layout == h5py.h5d.CONTIGUOUS and plist.get_external_count():
        # the bytes are in raw files named relative to a prefix the reader chooses (HDF5's
        # efile prefix, else its working directory): no reference can name them reliably
        raise Skip("its values are in external raw files (HDF5 external storage)")
    filters = _filters(dset)
    # the netCDF _FillValue where there is one; else HDF5's own fill value where it was set (the
    # default 0 is not a fill value readers should mask: a time of 0 is a real time), and only
    # for an array with chunks never written (``Combiner.result``): xarray masks a Zarr v2 fill
    # value, so an integer variable would become floating point where netCDF keeps it whole
    fill = dset.attrs["_FillValue"] if "_FillValue" in names else None
    default = dset.fillvalue if fill is None and dtype.kind in "iufc" and dset.fillvalue != 0 else None
    chunks = list(dset.chunks) if dset.chunks else list(shape)
    zattrs = _attributes(dset)
    if fill is not None:
        zattrs["_FillValue"] = json_value(fill)
    dims, lengths, scales = _dims(dset, sizes)
    zattrs["_ARRAY_DIMENSIONS"] = dims
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize if shape else dtype.itemsize
    if layout == h5py.h5d.CHUNKED:
        found: list = []
        with _no_gc():  # tens of thousands of tuples, made and dropped here: no collections meanwhile
            dset.id.chunk_iter(found.append)  # one pass over the B-tree, no Python call per chunk of ours
            n = len(found)
            # StoreInfo tuples (chunk_offset, filter_mask, byte_offset, size), transposed in C
            positions, masks, offsets, stored = zip(*found) if n else ((), (), (), ())
            if any(masks):
                masked = found[next(i for i, m in enumerate(masks) if m)]
                raise Skip(f"chunk {masked.chunk_offset} is stored with filters skipped (filter mask "
                           f"{masked.filter_mask}); the variable's codecs cannot decode it")
            grid = np.fromiter(itertools.chain.from_iterable(positions), dtype=np.int64, count=n * len(shape))
            offsets = np.fromiter(offsets, dtype=np.int64, count=n)
            stored = np.fromiter(stored, dtype=np.int64, count=n)  # each chunk's stored size
            del found, positions, masks
        index = grid.reshape(n, len(shape)) // np.asarray(chunks, dtype=np.int64)
        # chunks left beyond the extent (a dataset shrunk after writing) are no part of it
        inside = (index < -(-np.asarray(shape, dtype=np.int64) // np.asarray(chunks, dtype=np.int64))).all(axis=1)
        refs = Chunks.ranges(index[inside], offsets[inside], stored[inside])
    elif layout == h5py.h5d.CONTIGUOUS:
        offset, size = dset.id.get_offset(), dset.id.get_storage_size()
        refs = Chunks.empty(len(shape))
        if offset is not None and size:
            rows = split_rows(shape, dtype.itemsize) if not filters and nbytes > SPLIT_BYTES else None
            if rows:
                chunks[0] = rows
                step = rows * (nbytes // shape[0])
                count = shape[0] // rows
                index = np.zeros((count, len(shape)), dtype=np.int64)
                index[:, 0] = np.arange(count)
                refs = Chunks.ranges(index, int(offset) + step * np.arange(count, dtype=np.int64),
                                     np.full(count, step, dtype=np.int64))
            else:
                refs = Chunks.one(len(shape), int(offset), int(size))
    else:  # compact: the data lives in the object header (at most 64 KiB)
        refs = Chunks.one(len(shape), data=np.ascontiguousarray(dset[()]).tobytes())
    if layout == h5py.h5d.CHUNKED:  # netCDF: as long as its dimensions; what was never written is fill
        shape = lengths
    zarray = {"zarr_format": 2, "shape": shape, "chunks": chunks, "dtype": _dtype(dtype), "compressor": None,
              "filters": filters or None, "fill_value": fill_value(dtype, fill), "order": "C"}
    variable = Variable(path, zarray, zattrs, dims, refs, default_fill=fill_value(dtype, default))
    if layout == h5py.h5d.CHUNKED:  # as long as its dimensions (``_extend``)
        sizes.setdefault("chunked", []).append(
            (variable, scales, list(dset.shape), plist.get_fill_time() == h5py.h5d.FILL_TIME_NEVER))
    # values are read only where combining needs them: coordinates, and the digest of variables
    # without a record dimension (those must be identical in every file)
    if combining and nbytes <= DIGEST_BYTES and (dset.is_scale or None not in (dset.maxshape or ())):
        values = dset[()]
        variable.digest = hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()
        if dset.ndim == 1:
            variable.values = values.tolist()
    variable.unlimited = dset.ndim == 1 and dset.maxshape[0] is None and dims == [path.rpartition("/")[2]]
    return variable


def _dtype(dtype) -> str | list:
    """A Zarr v2 dtype: a compound type's fields in the order of their offsets, with the
    padding between and after them as unnamed void fields (numpy's ``descr``: netCDF-4 aligns
    compound members, so a ``float32, int16`` pair takes 8 bytes, not 6); a field that is
    itself compound or an array is one opaque void field (zarr-python reads no nested types)."""
    if not dtype.fields:
        return dtype.str
    fields = sorted(((f[1], name, f[0]) for name, f in dtype.fields.items()), key=lambda f: f[0])
    out, at = [], 0
    for offset, name, field in fields:
        if offset < at:
            raise Skip(f"compound type {dtype} has overlapping members")
        if offset > at:
            out.append(["", f"|V{offset - at}"])
        out.append([name, field.str])
        at = offset + field.itemsize
    if dtype.itemsize > at:
        out.append(["", f"|V{dtype.itemsize - at}"])
    return out


VLEN_INLINE_BYTES = 1 << 20  # variable-length strings up to this much (encoded) are inline


def _vlen_strings(path: str, dset, sizes: dict, combining: bool) -> Variable:
    """A variable of variable-length strings: one chunk, inline, encoded as numcodecs' vlen-utf8
    (what zarr and xarray read as strings); larger ones are left out."""
    from numcodecs import VLenUTF8

    if dset.size > VLEN_INLINE_BYTES // 16:  # not worth reading to find out
        raise Skip(f"{dset.size} variable-length strings are too many to keep inline")
    values = np.asarray(dset.asstr()[()], dtype=object)
    data = bytes(VLenUTF8().encode(values.reshape(-1) if values.ndim else values.reshape(1)))
    if len(data) > VLEN_INLINE_BYTES:
        raise Skip(f"variable-length strings of {len(data)} bytes are too large to keep inline")
    shape = list(dset.shape)
    zattrs = _attributes(dset)
    dims, _, _ = _dims(dset, sizes)
    zattrs["_ARRAY_DIMENSIONS"] = dims
    zarray = {"zarr_format": 2, "shape": shape, "chunks": shape or [], "dtype": "|O", "compressor": None,
              "filters": [{"id": "vlen-utf8"}], "fill_value": None, "order": "C"}
    variable = Variable(path, zarray, zattrs, dims, Chunks.one(len(shape), data=data))
    if combining:
        variable.digest = hashlib.sha256(data).hexdigest()
    return variable
