"""Reading a reference file's bytes (local or any fsspec URL), decompressed by magic bytes."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import time

from refmount.errors import RefmountError
from refmount.urls import split_protocol

_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"BZh", "bz2"),
    (b"\xfd7zXZ\x00", "xz"),
)
_EXTENSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2", ".xz": "xz"}


def read_file(location: str, storage_options: dict) -> tuple[bytes, int]:
    """Return ``(bytes, mtime_ns)`` of a reference file; errors name the file."""
    protocol, path = split_protocol(location)
    try:
        if protocol == "file":
            with open(path, "rb") as f:
                return f.read(), os.fstat(f.fileno()).st_mtime_ns
        import fsspec

        fs = fsspec.filesystem(protocol, **storage_options.get(protocol, {}))
        return fs.cat_file(path), time.time_ns()
    except FileNotFoundError:
        raise RefmountError(f"{location}: no such reference file") from None
    except IsADirectoryError:
        raise RefmountError(f"{location}: is a directory, not a reference file") from None
    except PermissionError:
        raise RefmountError(f"{location}: permission denied") from None
    except Exception as exc:  # any origin failure: report it in one line
        raise RefmountError(f"{location}: cannot read reference file: {exc}") from None


def decompress(data: bytes, location: str) -> bytes:
    kind = next((name for magic, name in _MAGIC if data.startswith(magic)), None)
    if kind is None:
        kind = _EXTENSIONS.get(os.path.splitext(location)[1].lower())
        if kind is None:
            return data
    try:
        if kind == "gzip":
            return gzip.decompress(data)
        if kind == "bz2":
            return bz2.decompress(data)
        if kind == "xz":
            return lzma.decompress(data)
        import zstandard

        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)) as reader:
            return reader.read()
    except Exception as exc:
        raise RefmountError(f"{location}: cannot decompress ({kind}): {exc}") from None
