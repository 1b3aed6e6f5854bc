"""Icechunk's binary envelope and the flatbuffers tables inside it (``icechunk-format.md`` §5-7).

Tables are read by hand with ``struct`` on the decompressed payload: a table's fields are
found through its vtable slot ``i`` at vtable offset ``4 + 2*i``; absent fields read as their
defaults. (The ``flatbuffers`` runtime's ``Table`` is this same arithmetic, slower per call;
the package is still used for FlexBuffers values.)
"""

from __future__ import annotations

import io
import struct

import zstandard

from refmount.errors import RefmountError
from refmount.sources.reading import document_limit

MAGIC = "ICE🧊CHUNK".encode()
HEADER = 39
SNAPSHOT, MANIFEST, REPO_INFO = 1, 2, 6
FILE_TYPES = {1: "snapshot", 2: "manifest", 3: "attributes", 4: "transaction log", 5: "chunk", 6: "repository info"}

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

_u8 = struct.Struct("<B").unpack_from
_u16 = struct.Struct("<H").unpack_from
_i32 = struct.Struct("<i").unpack_from
_u32 = struct.Struct("<I").unpack_from
_u64 = struct.Struct("<Q").unpack_from


def encode_id(raw: bytes) -> str:
    """Crockford base32, upper case, no padding (12 bytes -> 20 characters)."""
    bits = len(raw) * 8
    pad = -bits % 5
    value = int.from_bytes(raw, "big") << pad
    n = (bits + pad) // 5
    return "".join(_ALPHABET[(value >> (5 * (n - 1 - i))) & 31] for i in range(n))


def open_object(data: bytes, expected: int, name: str) -> tuple[int, bytes]:
    """Check the header of a metadata file; return ``(spec byte, decompressed payload)``."""
    if len(data) < HEADER or data[:12] != MAGIC:
        raise RefmountError(f"{name}: not an Icechunk file (bad magic)")
    spec, kind, compression = data[36], data[37], data[38]
    if kind != expected:
        raise RefmountError(f"{name}: is a {FILE_TYPES.get(kind, f'type-{kind}')} file, expected a {FILE_TYPES[expected]}")
    payload = data[HEADER:]
    if compression == 1:
        try:  # streaming: frames need not record their content size
            payload = read_bounded(zstandard.ZstdDecompressor(), payload, document_limit(), name)
        except zstandard.ZstdError as exc:
            raise RefmountError(f"{name}: cannot decompress: {exc}") from None
    elif compression != 0:
        raise RefmountError(f"{name}: unknown compression {compression}")
    return spec, payload


def read_bounded(decompressor, data: bytes, limit: int, name: str) -> bytes:
    """A zstd payload, read a MiB at a time and refused past ``limit`` bytes (a few KB of a
    hostile repository's object must not make gigabytes)."""
    parts, total = [], 0
    with decompressor.stream_reader(io.BytesIO(data)) as reader:
        while True:
            part = reader.read(1 << 20)
            if not part:
                break
            total += len(part)
            if total > limit:
                raise RefmountError(f"{name}: decompresses to more than {limit >> 20} MiB")
            parts.append(part)
    return b"".join(parts)


class Table:
    """One flatbuffers table at ``pos`` in ``buf``."""

    __slots__ = ("buf", "pos", "_vt", "_vtlen")

    def __init__(self, buf, pos: int):
        self.buf = buf
        self.pos = pos
        self._vt = pos - _i32(buf, pos)[0]
        self._vtlen = _u16(buf, self._vt)[0]

    @classmethod
    def root(cls, buf) -> "Table":
        return cls(buf, _u32(buf, 0)[0])

    def field(self, slot: int) -> int:
        """Absolute position of field ``slot``, 0 when absent."""
        at = 4 + 2 * slot
        if at >= self._vtlen:
            return 0
        off = _u16(self.buf, self._vt + at)[0]
        return self.pos + off if off else 0

    def u8(self, slot: int, default: int = 0) -> int:
        p = self.field(slot)
        return _u8(self.buf, p)[0] if p else default

    def u32(self, slot: int, default: int = 0) -> int:
        p = self.field(slot)
        return _u32(self.buf, p)[0] if p else default

    def i32(self, slot: int, default: int = 0) -> int:
        p = self.field(slot)
        return _i32(self.buf, p)[0] if p else default

    def u64(self, slot: int, default: int = 0) -> int:
        p = self.field(slot)
        return _u64(self.buf, p)[0] if p else default

    def struct(self, slot: int, size: int) -> bytes | None:
        p = self.field(slot)
        return bytes(self.buf[p : p + size]) if p else None

    def _target(self, slot: int) -> int:
        p = self.field(slot)
        return p + _u32(self.buf, p)[0] if p else 0

    def vector(self, slot: int) -> tuple[int, int]:
        """``(start of elements, count)``; ``(0, 0)`` when absent."""
        p = self._target(slot)
        return (p + 4, _u32(self.buf, p)[0]) if p else (0, 0)

    def bytes(self, slot: int) -> bytes | None:
        start, n = self.vector(slot)
        return bytes(self.buf[start : start + n]) if start else None

    def string(self, slot: int) -> str | None:
        raw = self.bytes(slot)
        return None if raw is None else raw.decode("utf-8", "surrogateescape")

    def table(self, slot: int) -> "Table | None":
        p = self._target(slot)
        return Table(self.buf, p) if p else None

    def tables(self, slot: int) -> list["Table"]:
        start, n = self.vector(slot)
        buf = self.buf
        return [Table(buf, start + 4 * i + _u32(buf, start + 4 * i)[0]) for i in range(n)]

    def strings(self, slot: int) -> list[str]:
        start, n = self.vector(slot)
        out = []
        for i in range(n):
            p = start + 4 * i
            p += _u32(self.buf, p)[0]
            out.append(bytes(self.buf[p + 4 : p + 4 + _u32(self.buf, p)[0]]).decode("utf-8", "surrogateescape"))
        return out

    def u32s(self, slot: int) -> tuple[int, ...]:
        start, n = self.vector(slot)
        return struct.unpack_from(f"<{n}I", self.buf, start) if start else ()


def flexbuffer(raw: bytes | None):
    """A FlexBuffers value (spec-v2 configuration and metadata) as Python objects."""
    if not raw:
        return None
    from flatbuffers import flexbuffers

    return flexbuffers.Loads(raw)
