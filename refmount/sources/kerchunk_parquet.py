"""kerchunk Parquet reference directories (``LazyReferenceMapper``), read lazily.

Mounting reads ``.zmetadata`` only. A chunk key maps to record file ``refs.<n // record_size>.parq``
and row ``n % record_size``, where n is the row-major number of the chunk in the array's grid;
record files are read on first touch and kept in a bounded LRU. A null path, a never-written
record file or a row past its end mean a missing chunk (ENOENT); a record file that cannot be
read or decoded fails its chunks (EIO), never "missing". Offset 0
with size 0 means the whole object; ``raw`` means inline bytes (``reference-formats.md`` §7).

The set's own ``.zmetadata`` is not shown (it lacks ``zarr_consolidated_format``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
from cachetools import LRUCache

from refmount.errors import FetchError, RefmountError
from refmount.io.origins import Origins
from refmount.index import CompactIndex, Dir, Index, Inline, Range, Ref, Unreadable, Whole, load_json
from refmount.grid import chunk_name, chunk_number, grid_of
from refmount.urls import parent_of, resolve, split_protocol
from refmount.sources.reading import read_file

log = logging.getLogger("refmount.parquet")

RECORD_CACHE_BYTES = 256 << 20
MAX_PROBED_RECORDS = 10_000
_RECORD_NAME = re.compile(r"refs\.(\d+)\.parq")


def is_parquet_set(location: str) -> bool:
    protocol, path = split_protocol(location)
    if protocol == "file":
        return os.path.isfile(os.path.join(path, ".zmetadata"))
    return location.rstrip("/").endswith((".parq", ".parquet")) or location.endswith("/")


class _Array:
    __slots__ = ("path", "grid", "count")

    def __init__(self, path: str, shape: list[int], chunks: list[int]):
        self.path = path
        self.grid = grid_of(shape, chunks)
        self.count = math.prod(self.grid)


def _integers(table, name: str) -> np.ndarray:
    column = table.column(name)
    if not pa.types.is_integer(column.type):
        raise ValueError(f"column {name!r} holds {column.type}, not integers")
    values = column.fill_null(0).to_numpy(zero_copy_only=False)  # a null offset or size is 0, as kerchunk writes
    if values.dtype.kind == "u" and values.size and values.max() > np.iinfo(np.int64).max:
        raise ValueError(f"column {name!r} holds a value of 2**63 or more")
    return values.astype("int64", copy=False)


def _of(kind, *tests) -> bool:
    """Whether an Arrow type passes one of ``tests``, itself or as a dictionary's values."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return any(test(kind) for test in tests)


class _Record:
    """One decoded record file: columns kept as Arrow/NumPy arrays, not Python objects."""

    def __init__(self, table):
        names = table.column_names
        self.rows = table.num_rows
        self.path = table.column("path").combine_chunks() if "path" in names else None
        self.raw = table.column("raw").combine_chunks() if "raw" in names else None
        zeros = np.zeros(self.rows, dtype="int64")
        self.offset = _integers(table, "offset") if "offset" in names else zeros
        self.size = _integers(table, "size") if "size" in names else zeros
        # a dictionary-encoded column (pandas' categorical: kerchunk's refs_to_dataframe writes the
        # paths so when few files hold many chunks) is read through its dictionary
        if self.path is not None and not _of(self.path.type, pa.types.is_string, pa.types.is_large_string):
            raise ValueError(f"column 'path' holds {self.path.type}, not strings")
        if self.raw is not None and not _of(self.raw.type, pa.types.is_binary, pa.types.is_large_binary):
            raise ValueError(f"column 'raw' holds {self.raw.type}, not bytes")
        present = np.zeros(self.rows, dtype=bool)
        ranged = np.zeros(self.rows, dtype=bool)
        if self.path is not None:
            ranged = self.path.is_valid().to_numpy(zero_copy_only=False)
            present |= ranged
        if self.raw is not None:
            present |= self.raw.is_valid().to_numpy(zero_copy_only=False)
        # offsets and sizes of the rows that name a file: non-negative, the end within 2**63
        offset, size = self.offset[ranged], self.size[ranged]
        bad = (offset < 0) | (size < 0)
        bad[~bad] |= offset[~bad] > np.iinfo(np.int64).max - size[~bad]  # the end would pass 2**63 - 1
        if bad.any():
            row = int(np.flatnonzero(ranged)[np.flatnonzero(bad)[0]])
            raise ValueError(f"row {row}: offset {int(self.offset[row])}, size {int(self.size[row])}: offsets and "
                             "sizes must be non-negative, their end below 2**63")
        self.present = present
        self.nbytes = table.nbytes + present.nbytes

    def ref(self, row: int, base: str) -> Ref | None:
        if row >= self.rows or not self.present[row]:
            return None
        if self.raw is not None and self.raw[row].is_valid:
            return Inline(self.raw[row].as_py())
        url = self.path[row].as_py() if self.path is not None else None
        if not isinstance(url, str) or not url:
            return None
        offset, size = int(self.offset[row]), int(self.size[row])
        try:
            url = resolve(url, base)
        except RefmountError as exc:  # a URL no reader may follow: this chunk fails, with the reason
            return Unreadable(size, str(exc))
        if offset == 0 and size == 0:
            return Whole(url)
        return Range(url, offset, size) if size > 0 else Inline(b"")


class ParquetIndex(Index):
    def __init__(self, location: str, origins: Origins, record_bytes: int = RECORD_CACHE_BYTES):
        self.location = location.rstrip("/")
        self.origins = origins
        self.base = parent_of(self.location)
        protocol, path = split_protocol(self.location)
        if protocol == "file" and os.path.isfile(path):
            raise RefmountError(f"{location}: one Parquet file, not a kerchunk Parquet reference set (the directory "
                                "that holds .zmetadata and the record files)")
        raw, self.mtime_ns = read_file(self.location + "/.zmetadata", origins)
        try:
            doc = load_json(raw)
            metadata, self.record_size = doc["metadata"], doc["record_size"]
        except (ValueError, KeyError, TypeError):
            raise RefmountError(f"{location}: .zmetadata is not a Parquet reference set's (needs metadata and record_size)") from None
        if not isinstance(metadata, dict) or type(self.record_size) is not int or self.record_size < 1:
            raise RefmountError(f"{location}: .zmetadata has an invalid metadata or record_size")
        self.meta = CompactIndex(self.mtime_ns)
        self.arrays: dict[str, _Array] = {}
        for key, value in metadata.items():
            data = value.encode() if isinstance(value, str) else json.dumps(value, separators=(",", ":")).encode()
            self.meta.add(key.lstrip("/"), Inline(data))
            parent, _, name = key.lstrip("/").rpartition("/")
            if name == ".zarray":
                try:
                    zarray = value if isinstance(value, dict) else load_json(value)
                    self.arrays[parent] = _Array(parent, list(zarray["shape"]), list(zarray["chunks"]))
                except (KeyError, TypeError, ValueError):
                    raise RefmountError(f"{location}: {key} has no valid shape/chunks") from None
        try:
            self.meta.build()
        except RefmountError as exc:
            raise RefmountError(f"{location}: {exc}") from None
        self.record_bytes = record_bytes  # decoded record files kept, at most (counted against --cache-size)
        self._records: LRUCache = LRUCache(maxsize=record_bytes, getsizeof=lambda r: max(r.nbytes, 1) if r else 1)
        # a record larger than that whole bound (long URLs, a large record_size, a small
        # --cache-size): the last one read is held beside the LRU, so reading its chunks one by
        # one does not read and decode it again for each
        self._oversized: tuple[tuple[str, int], _Record] | None = None
        self._lock = threading.Lock()

    def reserved_bytes(self) -> int:
        return self.record_bytes

    # -- records ----------------------------------------------------------------------
    def _record(self, array: str, number: int) -> _Record | None:
        key = (array, number)
        with self._lock:
            if key in self._records:
                return self._records[key]
            if self._oversized is not None and self._oversized[0] == key:
                return self._oversized[1]
        import pyarrow as pa
        import pyarrow.parquet as pq

        url = f"{self.location}/{array}/refs.{number}.parq" if array else f"{self.location}/refs.{number}.parq"
        data = self.origins.get(url)  # a failure is a FetchError (EIO), never "absent": not cached
        if data is None:
            record = None  # never written: every chunk of it is missing
        else:
            try:
                record = _Record(pq.read_table(pa.BufferReader(data)))
            except Exception as exc:  # undecodable: its chunks cannot be known, so they fail
                raise FetchError(f"record file {url} is unreadable: {type(exc).__name__}: {exc}") from None
        with self._lock:
            if record is not None and record.nbytes > self.record_bytes:
                if self._oversized is None:
                    log.warning("%s: record files decode to %d MiB, more than the %d MiB kept for records (a quarter "
                                "of --cache-size): one is held beyond it at a time", self.location, record.nbytes >> 20,
                                self.record_bytes >> 20)
                self._oversized = (key, record)
            else:
                self._records[key] = record
        return record

    def _chunk(self, array: _Array, name: str) -> Ref | None:
        n = chunk_number(name, array.grid)
        if n is None:
            return None
        record = self._record(array.path, n // self.record_size)
        return None if record is None else record.ref(n % self.record_size, self.base)

    def _record_numbers(self, array: _Array) -> Iterable[int]:
        """The record files an array has: from one listing of its directory (a grid of 10**12
        chunks with a few records costs a few reads, not a probe per record), or, where the
        store cannot list (plain HTTP), every number up to ``MAX_PROBED_RECORDS``."""
        records = math.ceil(array.count / self.record_size)
        directory = f"{self.location}/{array.path}" if array.path else self.location
        try:
            names = self.origins.listdir(directory)
        except FetchError:
            names = []
        numbers = sorted({int(m.group(1)) for m in map(_RECORD_NAME.fullmatch, names) if m and int(m.group(1)) < records})
        if numbers or names:
            return numbers
        if records > MAX_PROBED_RECORDS:
            raise FetchError(f"{directory}: {records} possible record files and the store cannot list them")
        return range(records)

    def _chunk_names(self, array: _Array) -> Iterator[str]:
        for number in self._record_numbers(array):
            record = self._record(array.path, number)
            if record is None:
                continue
            first = number * self.record_size
            for row in np.flatnonzero(record.present[: array.count - first]):
                yield chunk_name(first + int(row), array.grid)

    # -- Index ------------------------------------------------------------------------
    def node(self, path: str) -> Ref | Dir | None:
        found = self.meta.node(path)
        if found is not None:
            return found
        parent, _, name = path.rpartition("/")
        array = self.arrays.get(parent)
        return None if array is None else self._chunk(array, name)

    def listdir(self, path: str) -> Iterator[tuple[str, bool]]:
        yield from self.meta.listdir(path)
        array = self.arrays.get(path)
        if array is not None:
            for name in self._chunk_names(array):
                yield name, False

    def items(self) -> Iterator[tuple[str, Ref]]:
        yield from self.meta.items()
        for path, array in self.arrays.items():
            for name in self._chunk_names(array):
                ref = self._chunk(array, name)
                if ref is not None:
                    yield (f"{path}/{name}" if path else name), ref

    def metadata_keys(self) -> Iterator[str]:
        return self.meta.metadata_keys()

    def urls(self) -> Iterator[str]:
        """URLs known cheaply (for origin checks): those in the first record file found."""
        seen = set()
        for array in self.arrays.values():
            record = self._record(array.path, 0)
            if record is None or record.path is None:
                continue
            for value in record.path.unique().to_pylist():
                if isinstance(value, str) and value:
                    url = resolve(value, self.base)
                    if url not in seen:
                        seen.add(url)
                        yield url
            return


def load(location: str, origins: Origins, record_bytes: int | None = None) -> ParquetIndex:
    return ParquetIndex(location, origins, record_bytes or RECORD_CACHE_BYTES)
