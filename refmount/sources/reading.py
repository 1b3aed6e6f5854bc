"""Reading a reference file's bytes (through the origins, local or any fsspec URL), decompressed by magic bytes."""

from __future__ import annotations

import bz2
import lzma
import os
import zlib

from refmount.errors import FetchError, RefmountError
from refmount.io.cache import memory_limit
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


_STEP = 1 << 20  # output produced at a time (zstd: see _Member.feed)


def document_limit() -> int:
    """The most a reference document may hold once decompressed: an eighth of this process's
    memory limit -- parsing a document whole takes up to four times its size. A few MB of a
    compressed bomb (gigabytes of spaces) is refused instead of taking the node's memory."""
    return max(256 << 20, memory_limit() // 8)


class _Member:
    """One compressed member (gzip) or stream/frame (bz2, xz, zstd), fed from a view of the
    rest of the file: ``feed(view) -> (output of at most about _STEP bytes, input used)``."""

    def __init__(self, kind: str):
        self.kind = kind
        if kind == "gzip":
            self._d = zlib.decompressobj(wbits=31)
        elif kind == "bz2":
            self._d = bz2.BZ2Decompressor()
        elif kind == "xz":
            self._d = lzma.LZMADecompressor()
        else:
            import zstandard

            self._d = zstandard.ZstdDecompressor().decompressobj()

    @property
    def eof(self) -> bool:
        return self._d.eof

    def feed(self, view: memoryview) -> tuple[bytes, int]:
        d = self._d
        if self.kind == "gzip":  # what it did not take waits in unconsumed_tail (past the end: unused_data)
            out = d.decompress(view, _STEP)
            return out, len(view) - len(d.unused_data if d.eof else d.unconsumed_tail)
        if self.kind in ("bz2", "xz"):  # they keep what they did not take yet
            if d.needs_input:
                out, used = d.decompress(view, _STEP), len(view)
            else:
                out, used = d.decompress(b"", _STEP), 0
        else:  # zstd bounds no output per call: 4 KiB of input make at most 128 MiB (RLE blocks)
            view = view[:4096]
            out, used = d.decompress(view), len(view)
        if d.eof:  # what followed the end belongs to the next member
            used -= len(d.unused_data)
        return out, used


def decompress(data: bytes, location: str, limit: int | None = None) -> bytes:
    """The reference file's text: decompressed (by magic bytes, else by extension) member by
    member, frame by frame, and refused past ``limit`` bytes (``document_limit``) before they
    are all produced; a stream that ends inside a member is truncated."""
    kind = next((name for magic, name in _MAGIC if data.startswith(magic)), None)
    if kind is None:
        kind = _EXTENSIONS.get(os.path.splitext(location)[1].lower())
        if kind is None:
            return data
    limit = document_limit() if limit is None else limit
    parts: list[bytes] = []
    total, pos, view = 0, 0, memoryview(data)
    try:
        while pos < len(data):
            if kind == "gzip" and pos and not any(view[pos:]):
                break  # zero padding after the last member (as gzip tolerates)
            member = _Member(kind)
            while not member.eof:
                out, used = member.feed(view[pos:])
                pos += used
                if not out and not used:  # nothing left to take and the member not ended
                    raise RefmountError(f"{location}: truncated ({kind} stream ends early)")
                total += len(out)
                if total > limit:
                    raise RefmountError(f"{location}: decompresses to more than {limit >> 20} MiB, an eighth of this "
                                        "machine's memory limit: more than parsing it could take")
                parts.append(out)
    except RefmountError:
        raise
    except EOFError:
        raise RefmountError(f"{location}: truncated ({kind} stream ends early)") from None
    except Exception as exc:
        raise RefmountError(f"{location}: cannot decompress ({kind}): {exc}") from None
    return b"".join(parts)


def release_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc keeps the temporaries of a large
    parse otherwise: hundreds of MB of resident memory for nothing); a no-op elsewhere."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
