"""One netCDF3 file (classic, 64-bit offset or CDF-5) -> kerchunk references, no netCDF library.

The header is parsed directly (the format is a short, fixed grammar). Non-record variables are one
contiguous, uncompressed, big-endian range each (split along the first axis when large); record
variables are interleaved record by record, so each record of each is one chunk ``[1, ...]`` at
``begin + i * record_size``. Fill values are the ``_FillValue`` attribute's.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np

from refmount.scan.model import (DIGEST_BYTES, SPLIT_BYTES, Chunks, FileScan, Skip, Variable, fill_value,
                                  json_value, split_rows)

MAGICS = (b"CDF\x01", b"CDF\x02", b"CDF\x05")
_TYPES = {1: "i1", 2: "S1", 3: ">i2", 4: ">i4", 5: ">f4", 6: ">f8",
          7: "u1", 8: ">u2", 9: ">u4", 10: ">i8", 11: ">u8"}  # 7..11: CDF-5 only
_DIMENSION, _VARIABLE, _ATTRIBUTE = 10, 11, 12


class _Header:
    """Reads the header grammar from a file object, in blocks."""

    def __init__(self, f, version: int, where: str, size: int):
        self.f, self.where, self.size = f, where, size
        self.buffer, self.pos, self.consumed = b"", 0, 4  # after the magic
        self.long = version == 5  # CDF-5: every count and size is 64-bit
        self.offset64 = version in (2, 5)

    def take(self, n: int) -> bytes:
        if self.consumed + n > self.size:  # a garbled count: never read a whole file to find out
            raise Skip("the header ends early (truncated file, or a count past its end)")
        self.consumed += n
        while len(self.buffer) - self.pos < n:
            more = self.f.read(max(1 << 16, n))
            if not more:
                raise Skip("the header ends early (truncated file)")
            self.buffer = self.buffer[self.pos:] + more
            self.pos = 0
        out = self.buffer[self.pos:self.pos + n]
        self.pos += n
        return out

    def int32(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def count(self) -> int:
        value = struct.unpack(">q" if self.long else ">i", self.take(8 if self.long else 4))[0]
        if value < 0:
            raise Skip(f"negative count {value} in the header")
        return value

    def offset(self) -> int:
        return struct.unpack(">q" if self.offset64 else ">i", self.take(8 if self.offset64 else 4))[0]

    def name(self) -> str:
        n = self.count()
        text = self.take(n)
        self.take(-n % 4)
        return text.decode("utf-8", "replace")

    def values(self, nc_type: int, n: int):
        dtype = _dtype(nc_type)
        raw = self.take(n * dtype.itemsize)
        self.take(-(n * dtype.itemsize) % 4)
        if dtype.kind == "S":
            return raw.split(b"\0", 1)[0].decode("utf-8", "replace")
        array = np.frombuffer(raw, dtype=dtype)
        return json_value(array[0] if n == 1 else array)

    def listing(self, tag: int, what: str) -> int:
        found, n = self.int32(), self.count()
        if found == 0 and n == 0:
            return 0
        if found != tag:
            raise Skip(f"the header has tag {found} where the {what} list should be")
        return n

    def attributes(self) -> dict:
        out = {}
        for _ in range(self.listing(_ATTRIBUTE, "attribute")):
            name = self.name()
            nc_type = self.int32()
            out[name] = self.values(nc_type, self.count())
        return out


def _dtype(nc_type: int) -> np.dtype:
    if nc_type not in _TYPES:
        raise Skip(f"unknown netCDF type {nc_type} in the header")
    return np.dtype(_TYPES[nc_type])


def is_netcdf3(head: bytes) -> bool:
    return head[:4] in MAGICS


def scan_file(url: str, f, size: int, combining: bool = True) -> FileScan:
    """References for every variable of the netCDF3 file open as ``f`` (``size`` bytes long).
    A file whose header cannot be parsed raises ``Skip`` (the caller names the file)."""
    f.seek(0)
    version = f.read(4)[3]
    header = _Header(f, version, url, size)
    numrecs = struct.unpack(">Q" if header.long else ">I", header.take(8 if header.long else 4))[0]
    streaming = numrecs == (1 << (64 if header.long else 32)) - 1
    dims: list[tuple[str, int]] = [(header.name(), header.count()) for _ in range(header.listing(_DIMENSION, "dimension"))]
    scan = FileScan(url)
    scan.groups[""] = header.attributes()
    raw = []
    for _ in range(header.listing(_VARIABLE, "variable")):
        name = header.name()
        ids = [header.count() for _ in range(header.count())]
        attrs = header.attributes()
        nc_type = header.int32()
        header.count()  # vsize: recomputed below (it overflows for large variables)
        begin = header.offset()
        if any(i >= len(dims) for i in ids):
            raise Skip(f"variable {name} names a dimension the header does not have")
        if any(dims[i][1] == 0 for i in ids[1:]):
            raise Skip(f"variable {name} has the record dimension in a place other than first")
        raw.append((name, [dims[i] for i in ids], attrs, _dtype(nc_type), begin))
    record = [r for r in raw if r[1] and r[1][0][1] == 0]

    def per_record(dtype, shape) -> int:
        n = int(np.prod([length for _, length in shape[1:]], dtype=np.int64)) * dtype.itemsize
        return n if len(record) == 1 else n + (-n % 4)  # one record variable: no padding
    record_size = sum(per_record(r[3], r[1]) for r in record)
    if streaming:  # written while streaming: the records are what the file holds
        numrecs = (size - min(r[4] for r in record)) // record_size if record and record_size else 0
    for name, shape, attrs, dtype, begin in raw:
        try:
            scan.variables[name] = _variable(url, f, name, shape, attrs, dtype, begin, numrecs, record_size, size,
                                             combining)
        except Skip as exc:
            scan.warnings.append(f"{url}: variable {name}: {exc}; left out")
    return scan


def _variable(url, f, name, shape, attrs, dtype, begin, numrecs, record_size, size, combining) -> Variable:
    is_record = bool(shape) and shape[0][1] == 0
    lengths = [numrecs if is_record and i == 0 else n for i, (_, n) in enumerate(shape)]
    dims = [d for d, _ in shape]
    zattrs = dict(attrs)
    zattrs["_ARRAY_DIMENSIONS"] = dims
    fill = attrs.get("_FillValue")
    if dtype.kind == "S" and isinstance(fill, str):
        fill = fill.encode()
    per_row = int(np.prod(lengths[1:], dtype=np.int64)) * dtype.itemsize
    chunks = list(lengths)
    ndim = len(lengths)
    if is_record:
        chunks[0] = 1
        # checked before anything is built from the count: a garbled count is billions of records
        if numrecs and begin + record_size * (numrecs - 1) + per_row > size:
            last = max(0, (size - per_row - begin) // record_size + 1) if record_size else 0
            raise Skip(f"record {last} runs past the end of the file ({size} bytes): truncated file")
        if not per_row:  # records of no bytes: nothing to reference
            numrecs = 0
        starts = begin + record_size * np.arange(numrecs, dtype=np.int64)
        index = np.zeros((numrecs, ndim), dtype=np.int64)
        index[:, 0] = np.arange(numrecs)
        refs = Chunks.ranges(index, starts, np.full(numrecs, per_row, dtype=np.int64))
    else:
        nbytes = int(np.prod(lengths, dtype=np.int64)) * dtype.itemsize
        if begin + nbytes > size:
            raise Skip(f"its data runs past the end of the file ({size} bytes): truncated file")
        rows = split_rows(lengths, dtype.itemsize) if nbytes > SPLIT_BYTES else None
        refs = Chunks.empty(ndim)
        if rows:
            chunks[0] = rows
            step = rows * per_row
            count = lengths[0] // rows
            index = np.zeros((count, ndim), dtype=np.int64)
            index[:, 0] = np.arange(count)
            refs = Chunks.ranges(index, begin + step * np.arange(count, dtype=np.int64), np.full(count, step, dtype=np.int64))
        elif nbytes:
            refs = Chunks.one(ndim, begin, nbytes)
    chunks = [max(c, 1) for c in chunks]
    zarray = {"zarr_format": 2, "shape": lengths, "chunks": chunks, "dtype": dtype.str, "compressor": None,
              "filters": None, "fill_value": fill_value(dtype, fill), "order": "C"}
    variable = Variable(name, zarray, zattrs, dims, refs)
    variable.unlimited = is_record and dims == [name]
    total = int(np.prod(lengths, dtype=np.int64)) * dtype.itemsize
    # values only where combining needs them: the record coordinate, and static variables' digests
    if combining and total <= DIGEST_BYTES and (variable.unlimited or not is_record):
        data = b"".join(_read(f, int(o), int(n)) for o, n in zip(refs.offset, refs.size))
        values = np.frombuffer(data, dtype=dtype)
        variable.digest = hashlib.sha256(data).hexdigest()
        if len(lengths) == 1:
            variable.values = values.tolist()
    return variable


def _read(f, offset: int, length: int) -> bytes:
    f.seek(offset)
    data = f.read(length)
    if len(data) != length:
        raise Skip(f"short read at {offset} ({len(data)} of {length} bytes)")
    return data
