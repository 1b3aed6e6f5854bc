"""kerchunk Parquet reference directories (``LazyReferenceMapper``), read lazily.

Mounting reads ``.zmetadata`` only. A chunk key maps to record file ``refs.<n // record_size>.parq``
and row ``n % record_size``, where n is the row-major number of the chunk in the array's grid;
record files are read on first touch and kept in a bounded LRU. A null path, a never-written
record file, an unreadable one or a row past its end mean a missing chunk (ENOENT). Offset 0
with size 0 means the whole object; ``raw`` means inline bytes (``reference-formats.md`` §7).

The set's own ``.zmetadata`` is not shown (it lacks ``zarr_consolidated_format``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from typing import Iterator

import numpy as np
from cachetools import LRUCache

from refmount.errors import FetchError, RefmountError
from refmount.io.origins import Origins
from refmount.index import CompactIndex, Dir, Index, Inline, Range, Ref, Whole
from refmount.grid import chunk_name, chunk_number, grid_of
from refmount.urls import parent_of, resolve, split_protocol
from refmount.sources.reading import read_file

log = logging.getLogger("refmount.parquet")

RECORD_CACHE_BYTES = 256 << 20


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


class _Record:
    """One decoded record file: columns kept as Arrow/NumPy arrays, not Python objects."""

    def __init__(self, table):
        names = table.column_names
        self.rows = table.num_rows
        self.path = table.column("path").combine_chunks() if "path" in names else None
        self.raw = table.column("raw").combine_chunks() if "raw" in names else None
        zeros = np.zeros(self.rows, dtype="int64")
        self.offset = table.column("offset").to_numpy() if "offset" in names else zeros
        self.size = table.column("size").to_numpy() if "size" in names else zeros
        present = np.zeros(self.rows, dtype=bool)
        if self.path is not None:
            present |= self.path.is_valid().to_numpy(zero_copy_only=False)
        if self.raw is not None:
            present |= self.raw.is_valid().to_numpy(zero_copy_only=False)
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
        url = resolve(url, base)
        offset, size = int(self.offset[row]), int(self.size[row])
        if offset == 0 and size == 0:
            return Whole(url)
        return Range(url, offset, size) if size > 0 else Inline(b"")


class ParquetIndex(Index):
    def __init__(self, location: str, origins: Origins):
        self.location = location.rstrip("/")
        self.origins = origins
        self.base = parent_of(self.location)
        raw, self.mtime_ns = read_file(self.location + "/.zmetadata", origins)
        try:
            doc = json.loads(raw)
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
                zarray = value if isinstance(value, dict) else json.loads(value)
                try:
                    self.arrays[parent] = _Array(parent, list(zarray["shape"]), list(zarray["chunks"]))
                except (KeyError, TypeError, ValueError):
                    raise RefmountError(f"{location}: {key} has no valid shape/chunks") from None
        try:
            self.meta.build()
        except RefmountError as exc:
            raise RefmountError(f"{location}: {exc}") from None
        self._records: LRUCache = LRUCache(maxsize=RECORD_CACHE_BYTES, getsizeof=lambda r: max(r.nbytes, 1) if r else 1)
        self._lock = threading.Lock()

    # -- records ----------------------------------------------------------------------
    def _record(self, array: str, number: int) -> _Record | None:
        key = (array, number)
        with self._lock:
            if key in self._records:
                return self._records[key]
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
            self._records[key] = record
        return record

    def _chunk(self, array: _Array, name: str) -> Ref | None:
        n = chunk_number(name, array.grid)
        if n is None:
            return None
        record = self._record(array.path, n // self.record_size)
        return None if record is None else record.ref(n % self.record_size, self.base)

    def _chunk_names(self, array: _Array) -> Iterator[str]:
        records = math.ceil(array.count / self.record_size)
        for number in range(records):
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


def load(location: str, origins: Origins) -> ParquetIndex:
    return ParquetIndex(location, origins)
