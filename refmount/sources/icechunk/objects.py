"""Snapshots and manifests (``icechunk-format.md`` §7.4, §7.5, §10).

A snapshot is parsed once into plain objects (nodes are few). A manifest stays as its
decompressed flatbuffers payload: lookups binary-search the sorted chunk references in place,
so a manifest of millions of references costs its payload's size and no Python object each.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass, field

import zstandard

from refmount.errors import RefmountError
from refmount.index import load_json
from refmount.sources.icechunk.binary import MANIFEST, SNAPSHOT, Table, encode_id, open_object, read_bounded


@dataclass(slots=True)
class Node:
    path: str  # "" for the root, "a/b" otherwise
    id: bytes
    user_data: bytes  # the node's zarr.json, verbatim
    is_array: bool
    manifests: list[tuple[str, tuple[tuple[int, int], ...]]] = field(default_factory=list)  # (id, extents)
    _meta: dict | None = None

    @property
    def meta(self) -> dict:
        if self._meta is None:
            try:
                self._meta = load_json(self.user_data)
            except ValueError as exc:
                raise RefmountError(f"{self.path or '/'}: zarr.json is not valid JSON: {exc}") from None
        return self._meta

    @property
    def ndim(self) -> int:
        return len(self.meta.get("shape") or ())


@dataclass(slots=True)
class Snapshot:
    id: str
    spec: int
    parent: str | None  # spec v1 only (v2 keeps ancestry in the repo file)
    flushed_at: int  # microseconds since the epoch
    message: str
    nodes: dict[str, Node]
    children: dict[str, list[str]]  # node path -> names of child nodes


def _path(raw: str) -> str:
    return "" if raw == "/" else raw.lstrip("/")


def parse_snapshot(data: bytes, name: str) -> Snapshot:
    spec, payload = open_object(data, SNAPSHOT, name)
    try:
        root = Table.root(payload)
        parent = root.struct(1, 12)
        nodes: dict[str, Node] = {}
        for t in root.tables(2):
            path = _path(t.string(1) or "/")
            node = Node(path, t.struct(0, 8) or b"", t.bytes(2) or b"", t.u8(3) == 1)
            data_table = t.table(4)
            if node.is_array and data_table is not None:
                for m in data_table.tables(2):
                    start, n = m.vector(1)
                    buf = m.buf
                    extents = tuple((int.from_bytes(buf[start + 8 * i : start + 8 * i + 4], "little"),
                                     int.from_bytes(buf[start + 8 * i + 4 : start + 8 * i + 8], "little")) for i in range(n))
                    node.manifests.append((encode_id(m.struct(0, 12) or b""), extents))
            nodes[path] = node
        snapshot = Snapshot(encode_id(root.struct(0, 12) or b""), spec, encode_id(parent) if parent else None,
                            root.u64(3), root.string(4) or "", nodes, {})
    except (IndexError, ValueError, UnicodeError, TypeError, struct.error) as exc:
        raise RefmountError(f"{name}: malformed snapshot: {exc}") from None
    for path in nodes:
        if path:
            parent_path, _, leaf = path.rpartition("/")
            snapshot.children.setdefault(parent_path, []).append(leaf)
    return snapshot


class ChunkRef:
    """A decoded chunk reference: kind ``inline`` | ``native`` | ``virtual``."""

    __slots__ = ("kind", "data", "chunk_id", "location", "offset", "length", "etag", "last_modified")

    def __init__(self, kind, data=None, chunk_id=None, location=None, offset=0, length=0, etag=None, last_modified=0):
        self.kind, self.data, self.chunk_id, self.location = kind, data, chunk_id, location
        self.offset, self.length, self.etag, self.last_modified = offset, length, etag, last_modified


class Manifest:
    def __init__(self, data: bytes, name: str):
        self.name = name
        _, self.payload = open_object(data, MANIFEST, name)
        self.nbytes = len(self.payload)
        try:
            root = Table.root(self.payload)
            self._arrays: dict[bytes, tuple[int, int]] = {}
            for a in root.tables(1):
                self._arrays[a.struct(0, 8) or b""] = a.vector(1)
            self._dictionary = root.bytes(2)
        except (IndexError, ValueError, TypeError, struct.error) as exc:
            raise RefmountError(f"{name}: malformed manifest: {exc}") from None
        self._decompressor = None
        self._lock = threading.Lock()  # a zstandard decompressor serves one thread at a time

    def _ref_table(self, start: int, i: int) -> Table:
        p = start + 4 * i
        return Table(self.payload, p + int.from_bytes(self.payload[p : p + 4], "little"))

    def _lower_bound(self, start: int, n: int, key: tuple[int, ...]) -> int:
        lo, hi = 0, n
        while lo < hi:
            mid = (lo + hi) // 2
            if self._ref_table(start, mid).u32s(0) < key:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def find(self, node_id: bytes, coords: tuple[int, ...]) -> ChunkRef | None:
        start, n = self._arrays.get(node_id, (0, 0))
        if not n:
            return None
        i = self._lower_bound(start, n, coords)
        if i < n:
            t = self._ref_table(start, i)
            if t.u32s(0) == coords:
                return self._decode(t)
        return None

    def next_values(self, node_id: bytes, prefix: tuple[int, ...], limit: int | None = None) -> list[int]:
        """Distinct values of coordinate ``len(prefix)`` among references starting with
        ``prefix`` (the first ``limit`` of them)."""
        start, n = self._arrays.get(node_id, (0, 0))
        depth = len(prefix)
        out: list[int] = []
        i = self._lower_bound(start, n, prefix)
        while i < n:
            index = self._ref_table(start, i).u32s(0)
            if index[:depth] != prefix or len(index) <= depth:
                break
            value = index[depth]
            out.append(value)
            if limit and len(out) >= limit:
                break
            i = self._lower_bound(start, n, prefix + (value + 1,))
        return out

    def refs(self, node_id: bytes):
        """``(coords, ChunkRef)`` for every reference of the node, in coordinate order."""
        start, n = self._arrays.get(node_id, (0, 0))
        for i in range(n):
            t = self._ref_table(start, i)
            yield t.u32s(0), self._decode(t)

    def _decode(self, t: Table) -> ChunkRef:
        inline = t.bytes(1)
        if inline is not None:
            return ChunkRef("inline", data=inline)
        chunk_id = t.struct(4, 12)
        if chunk_id is not None:
            return ChunkRef("native", chunk_id=encode_id(chunk_id), offset=t.u64(2), length=t.u64(3))
        location = t.string(5)
        if location is None:
            compressed = t.bytes(8)
            if compressed is None:
                raise RefmountError(f"{self.name}: a chunk reference has neither data, chunk id nor location")
            location = self._decompress(compressed)
        return ChunkRef("virtual", location=location, offset=t.u64(2), length=t.u64(3), etag=t.string(6), last_modified=t.u32(7))

    def _decompress(self, compressed: bytes) -> str:
        if self._decompressor is None:
            if not self._dictionary:
                raise RefmountError(f"{self.name}: compressed locations but no location dictionary")
            self._decompressor = zstandard.ZstdDecompressor(dict_data=zstandard.ZstdCompressionDict(self._dictionary))
        try:
            with self._lock:  # (a location is a URL: a MiB is more than any)
                return read_bounded(self._decompressor, compressed, 1 << 20, self.name).decode("utf-8", "surrogateescape")
        except zstandard.ZstdError as exc:
            raise RefmountError(f"{self.name}: cannot decompress a location: {exc}") from None
