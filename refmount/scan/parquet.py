"""Write a combined scan as a kerchunk Parquet reference directory (the LazyReferenceMapper layout).

``OUT.parq/.zmetadata`` holds every metadata key and ``record_size``; each array's chunks are rows
of ``OUT.parq/<array>/refs.<n>.parq`` (columns path, offset, size, raw), row = the chunk's
row-major position in the chunk grid, every record file padded to ``record_size`` rows. Arrays are
written one record file at a time from the combiner's flat arrays: no dict of every reference.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np

from refmount.errors import RefmountError
from refmount.scan.combine import Combined, grid_of

RECORD_SIZE = 10_000


def write_parquet(combined: Combined, output: str, record_size: int = RECORD_SIZE) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    output = output.rstrip("/")
    parent = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(parent):
        raise RefmountError(f"{output}: no such directory {parent}")
    if os.path.exists(output) and not os.path.exists(os.path.join(output, ".zmetadata")):
        raise RefmountError(f"{output}: exists and is not a Parquet reference set; not overwritten")
    tmp = f"{output}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    urls = np.asarray(combined.files, dtype=object)
    # offset and size are required columns with statistics, as kerchunk writes them: without, fastparquet
    # (and so fsspec's reader) reads them as floats, which fsspec then cannot seek to
    schema = pa.schema([pa.field("path", pa.string()), pa.field("offset", pa.int64(), nullable=False),
                        pa.field("size", pa.int64(), nullable=False), pa.field("raw", pa.binary())])
    try:
        os.mkdir(tmp)
        for path, (zarray, refs) in combined.arrays.items():
            if not len(refs):
                continue
            os.makedirs(os.path.join(tmp, path), exist_ok=True)
            flat = refs.flat(grid_of(zarray))
            order = np.argsort(flat, kind="stable")
            flat = flat[order]
            files = np.frombuffer(refs.file, dtype=np.dtype("l"))[order]
            offsets = np.frombuffer(refs.offset, dtype=np.int64)[order]
            sizes = np.frombuffer(refs.size, dtype=np.int64)[order]
            inverse = np.empty_like(order)
            inverse[order] = np.arange(len(order))
            inline_at = {int(inverse[i]): data for i, data in refs.inline.items()}
            records = flat // record_size
            bounds = np.flatnonzero(np.diff(records)) + 1
            for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(flat)]):
                rows = flat[lo:hi] - records[lo] * record_size
                path_col = np.full(record_size, None, dtype=object)
                path_col[rows] = urls[files[lo:hi]]
                offset_col = np.zeros(record_size, dtype=np.int64)
                size_col = np.zeros(record_size, dtype=np.int64)
                offset_col[rows] = offsets[lo:hi]
                size_col[rows] = sizes[lo:hi]
                raw_col = np.full(record_size, None, dtype=object)
                for i, data in inline_at.items():
                    if lo <= i < hi:
                        row = int(flat[i] - records[lo] * record_size)
                        raw_col[row], path_col[row], offset_col[row], size_col[row] = data, None, 0, 0
                table = pa.table({"path": pa.array(path_col, type=pa.string()), "offset": offset_col,
                                  "size": size_col, "raw": pa.array(raw_col, type=pa.binary())}, schema=schema)
                pq.write_table(table, os.path.join(tmp, path, f"refs.{int(records[lo])}.parq"), compression="zstd",
                               write_statistics=["offset", "size"])
        with open(os.path.join(tmp, ".zmetadata"), "w") as f:
            json.dump({"metadata": combined.metadata, "record_size": record_size}, f, separators=(",", ":"))
        if os.path.exists(output):  # an earlier reference set: replaced whole
            old = f"{output}.old{os.getpid()}"
            os.rename(output, old)
            os.rename(tmp, output)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, output)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RefmountError(f"{output}: {exc.strerror or exc}") from None
    return output
