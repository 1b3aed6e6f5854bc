"""Write the data-type fixture repository: arrays of many types in both byte orders, structured
types, crc32c and bitround codecs and a sharded array, written by the icechunk package, and the
values it reads back.

Needs Python >= 3.12 with ``icechunk`` 2.x, ``zarr`` 3 and ``numcodecs`` (the suite itself does
not)::

    python3.12 -m venv /tmp/ic && /tmp/ic/bin/pip install icechunk zarr numcodecs
    /tmp/ic/bin/python tests/data/icechunk/generate_dtypes.py

Writes ``dtypes/repo/`` (spec v2) and ``dtypes/expected.npz`` (each array as icechunk reads it).
"""

from __future__ import annotations

import os
import shutil
import warnings

import icechunk
import numpy as np
import zarr
from numcodecs.zarr3 import BitRound
from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec, ZstdCodec

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dtypes")
TYPES = ["i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8", "c8", "c16", "b1",
         "M8[s]", "M8[ns]", "m8[ms]", "U5", "S3"]


def values_of(spec: str, n: int) -> np.ndarray:
    dtype = np.dtype(spec)
    rng = np.random.default_rng(sum(map(ord, spec)))
    if dtype.kind == "c":
        return (rng.normal(size=n) + 1j * rng.normal(size=n)).astype(dtype)
    if dtype.kind in "Mm":
        return rng.integers(0, 10**6, n).astype(dtype)
    if dtype.kind == "U":
        return np.array([f"é{i}" for i in range(n)], dtype=dtype)
    if dtype.kind == "S":
        return np.array([f"b{i}".encode()[:3] for i in range(n)], dtype=dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, n).astype(bool)
    if dtype.kind == "f":
        return rng.normal(size=n).astype(dtype)
    return rng.integers(0, 100, n).astype(dtype)


def main() -> None:
    shutil.rmtree(HERE, ignore_errors=True)
    os.makedirs(HERE)
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(os.path.join(HERE, "repo")))
    session = repo.writable_session("main")
    root = zarr.group(session.store)
    expected = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr's "no v3 specification yet" for U, S
        for spec in TYPES:
            for endian in ("little", "big"):
                name = f"{spec.replace('[', '_').rstrip(']')}_{endian}"
                values = values_of(spec, 12)
                a = root.create_array(name, shape=(12,), chunks=(5,), dtype=values.dtype,
                                      serializer=BytesCodec(endian=endian), compressors=ZstdCodec(level=1),
                                      fill_value=None)
                a[:] = values
        for endian in ("little", "big"):
            values = np.array([(1.5 * i, f"s{i}".encode(), -i) for i in range(12)],
                              dtype=[("t", "f8"), ("name", "S3"), ("n", "i2")])
            root.create_array(f"struct_{endian}", shape=(12,), chunks=(5,), dtype=values.dtype,
                              serializer=BytesCodec(endian=endian), compressors=ZstdCodec(level=1))[:] = values
        root.create_array("crc", shape=(12,), chunks=(4,), dtype="f8",
                          compressors=[ZstdCodec(level=1), Crc32cCodec()])[:] = values_of("f8", 12)
        root.create_array("rounded", shape=(12,), chunks=(4,), dtype="f4",
                          filters=[BitRound(keepbits=10)])[:] = values_of("f4", 12)
        sharded = root.create_group("numeric").create_array("sharded", shape=(8, 6), dtype="<i4", chunks=(4, 6),
                                    serializer=ShardingCodec(chunk_shape=(2, 3), codecs=[BytesCodec(), ZstdCodec()]),
                                    compressors=None, fill_value=-1)
        sharded[:4] = np.arange(24, dtype="<i4").reshape(4, 6)  # the second shard never written
    session.commit("every type")
    store = repo.readonly_session(branch="main").store
    group = zarr.open_group(store, mode="r")
    for name, node in group.members(max_depth=None):
        if isinstance(node, zarr.Array):
            expected[name] = node[...]
    np.savez(os.path.join(HERE, "expected.npz"), **expected)


if __name__ == "__main__":
    main()
