"""Reading a reference file's bytes (through the origins, local or any fsspec URL), decompressed by magic bytes."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os

from refmount.errors import FetchError, RefmountError
from refmount.io.origins import Origins

_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"BZh", "bz2"),
    (b"\xfd7zXZ\x00", "xz"),
)
_EXTENSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2", ".xz": "xz"}


def read_file(location: str, origins: Origins) -> tuple[bytes, int]:
    """Return ``(bytes, mtime_ns)`` of a reference file; errors name the file."""
    try:
        data = origins.get(location)
    except FetchError as exc:
        cause = exc.__cause__
        if isinstance(cause, IsADirectoryError):
            raise RefmountError(f"{location}: is a directory, not a reference file") from None
        if isinstance(cause, PermissionError):
            raise RefmountError(f"{location}: permission denied") from None
        raise RefmountError(f"{location}: cannot read reference file: {exc}") from None
    if data is None:
        raise RefmountError(f"{location}: no such reference file")
    return data, origins.modified_ns(location)


def _zstd(data: bytes, location: str) -> bytes:
    """Every frame of a zstd stream; a stream that ends inside a frame is truncated."""
    import zstandard

    parts = []
    while data:
        frame = zstandard.ZstdDecompressor().decompressobj()
        parts.append(frame.decompress(data))
        if not frame.eof:
            raise RefmountError(f"{location}: truncated (zstd stream ends early)")
        data = frame.unused_data
    return b"".join(parts)


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
        return _zstd(data, location)
    except RefmountError:
        raise
    except EOFError:
        raise RefmountError(f"{location}: truncated ({kind} stream ends early)") from None
    except Exception as exc:
        raise RefmountError(f"{location}: cannot decompress ({kind}): {exc}") from None


def release_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc keeps the temporaries of a large
    parse otherwise: hundreds of MB of resident memory for nothing); a no-op elsewhere."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
