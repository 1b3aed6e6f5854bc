"""The decoded view: every array's chunks served decoded, for readers with fixed codec support.

Measured (``legacy-clients.md``): GDAL 3.6 refuses the shuffle filter, Debian's ``ncdump``
prints wrong values with exit 0 for anything compressed or big-endian. Here each array's
``.zarray`` says ``compressor: null``, ``filters: null``, a little-endian dtype and C order
(same shape, chunks, fill value; ``.zattrs`` untouched), and each chunk file is the decoded
chunk: exactly ``prod(chunks) * itemsize`` bytes, known without decoding. Missing chunks stay
missing (the fill value). A root ``.zmetadata`` is synthesized from the view's own metadata.

Arrays whose codecs numcodecs cannot provide stay listed, and their chunk files fail with EIO
(one log line at mount, one per failed read) -- never garbage. Arrays of variable-length
strings are left out with one warning: their fixed width is unknown until every chunk is read.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from typing import Iterator

import numpy as np

from refmount.errors import FetchError
from refmount.views.v2 import ZARR3_CODEC
from refmount.index import Decoded, Dir, Index, Inline, Ref, load_json
from refmount.views.common import View, consolidate, within

log = logging.getLogger("refmount.views")


def _zarr3_array(metadata: dict, raw: bytes | None):
    """A one-chunk Zarr v3 array in memory with ``metadata``; ``raw`` as its only chunk."""
    import zarr
    from zarr.core.buffer import default_buffer_prototype
    from zarr.storage import MemoryStore

    buffer = default_buffer_prototype().buffer
    store = {"zarr.json": buffer.from_bytes(json.dumps(metadata).encode())}
    array = zarr.open_array(MemoryStore(store), mode="r")
    if raw is not None:
        store[array.metadata.encode_chunk_key((0,) * len(metadata["shape"]))] = buffer.from_bytes(raw)
    return array


class LeftOut(Exception):
    """An array the decoded view cannot represent."""


def _dtype(spec) -> np.dtype:
    if isinstance(spec, list):
        return np.dtype([tuple(field) for field in spec])
    return np.dtype(spec)


def _dtype_json(dtype: np.dtype):
    return [list(field) for field in dtype.descr] if dtype.fields else dtype.str


class ArrayCodec:
    """How one array's chunks are decoded, and its ``.zarray`` in the view."""

    def __init__(self, path: str, zarray: dict):
        self.path = path
        self.dtype = _dtype(zarray["dtype"])
        if self.dtype.hasobject:
            raise LeftOut(f"dtype {zarray['dtype']!r} (variable-length) has no fixed width to serve")
        self.out_dtype = self.dtype.newbyteorder("<")
        self.chunks = tuple(int(c) for c in zarray["chunks"])
        self.separator = zarray.get("dimension_separator") or "."  # "/": chunk keys are nested directories
        self.order = zarray.get("order", "C")
        if self.order not in ("C", "F"):
            raise LeftOut(f"order {self.order!r}")
        self.nbytes = math.prod(self.chunks) * self.out_dtype.itemsize
        filters = zarray.get("filters") or []
        compressor = zarray.get("compressor")
        self.error: str | None = None
        self.filters, self.compressor = [], None
        self.zarr3: dict | None = None  # a Zarr v3 array's metadata: its shards decoded by zarr-python
        if isinstance(compressor, dict) and compressor.get("id") == ZARR3_CODEC:
            self.zarr3 = dict(compressor["metadata"], shape=list(self.chunks), attributes={})
            compressor = None
            try:
                _zarr3_array(self.zarr3, None)  # metadata zarr cannot use: left out at mount, not EIO per read
            except Exception as exc:
                raise LeftOut(f"zarr cannot read its Zarr v3 metadata ({type(exc).__name__}: {exc})") from None
        try:
            import numcodecs

            for spec in filters:
                self.filters.append(_codec(numcodecs, spec))
            if compressor:
                self.compressor = _codec(numcodecs, compressor)
        except LeftOut as exc:
            self.error = str(exc)
        self.identity = (not filters and not compressor and self.zarr3 is None and self.order == "C"
                         and self.dtype == self.out_dtype)
        view = dict(zarray, compressor=None, filters=None, dtype=_dtype_json(self.out_dtype), order="C")
        self.zarray = json.dumps(view, indent=2, sort_keys=True).encode()

    def _decode_zarr3(self, raw: bytes) -> np.ndarray:
        """One shard (or chunk) of a Zarr v3 array, decoded by zarr-python as a dense block;
        inner chunks the shard does not hold are the fill value, as zarr reads them."""
        try:
            return _zarr3_array(self.zarr3, raw)[...]
        except Exception as exc:
            raise FetchError(f"decoded view of {self.path}: zarr could not decode a chunk: {type(exc).__name__}: {exc}") from None

    def decode(self, raw: bytes) -> bytes:
        if self.error is not None:
            raise FetchError(f"decoded view of {self.path}: {self.error}")
        if self.zarr3 is not None:
            return np.ascontiguousarray(self._decode_zarr3(raw), dtype=self.out_dtype).tobytes()
        from numcodecs.compat import ensure_ndarray_like

        buf = raw
        if self.compressor is not None:
            buf = self.compressor.decode(buf)
        for codec in reversed(self.filters):
            buf = codec.decode(buf)
        arr = ensure_ndarray_like(buf).reshape(-1, order="A")
        expected = math.prod(self.chunks)
        try:
            if arr.dtype != self.dtype:
                arr = arr.view(self.dtype)
        except ValueError:
            arr = None
        if arr is None or arr.size != expected:
            size = len(memoryview(buf).cast("B")) if arr is None else arr.nbytes
            raise FetchError(
                f"decoded view of {self.path}: a chunk decoded to {size} bytes, expected {expected * self.dtype.itemsize}"
            )
        arr = arr.reshape(self.chunks, order=self.order)
        return np.ascontiguousarray(arr, dtype=self.out_dtype).tobytes()


class _Unshuffle:
    """HDF5's shuffle, decoding: the bytes past the last whole element stay as they are. HDF5
    does so (``H5Z_FILTER_SHUFFLE``); numcodecs' ``Shuffle`` refuses such a buffer. netCDF-C puts
    its checksum (``fletcher32``) before the shuffle, so a chunk of 8-byte values is shuffled
    with its 4 checksum bytes past the last element."""

    def __init__(self, codec):
        self.codec = codec

    def decode(self, buf, out=None):
        from numcodecs.compat import ensure_contiguous_ndarray

        data = ensure_contiguous_ndarray(buf).view("u1").reshape(-1)
        whole = len(data) - len(data) % self.codec.elementsize
        if whole == len(data):
            return self.codec.decode(data, out)
        head = np.frombuffer(bytes(self.codec.decode(data[:whole])), dtype="u1") if whole else data[:0]
        return np.concatenate([head, data[whole:]])


def _codec(numcodecs, spec):
    if not isinstance(spec, dict) or "id" not in spec:
        raise LeftOut(f"codec {spec!r} is not a codec description")
    try:
        codec = numcodecs.get_codec(dict(spec))
        if spec["id"] == "shuffle":
            codec = _Unshuffle(codec)
    except Exception as exc:
        raise LeftOut(f"codec {spec['id']!r} cannot be decoded here ({exc})") from None
    try:  # a codec registered by a package whose own imports are missing fails on first use:
        codec.decode(b"")  # find that now, not on every read (kerchunk's grib needs eccodes)
    except ImportError as exc:
        raise LeftOut(f"codec {spec['id']!r} cannot be decoded here (module {exc.name or exc} is not installed)") from None
    except Exception:
        pass  # an empty buffer is not a chunk: any other complaint is expected
    return codec


class DecodedView(View):
    def __init__(self, tree: Index):
        super().__init__(tree)
        self.arrays: dict[str, ArrayCodec] = {}
        self.hidden: set[str] = set()
        unavailable: dict[str, list[str]] = {}  # why a codec cannot be had here -> its arrays
        keys = []
        for key in tree.metadata_keys():
            parent, _, name = key.rpartition("/")
            node = tree.node(key)
            if name == "zarr.json" or not isinstance(node, Inline):
                continue  # Zarr v3 (the v2 view comes first), or metadata not in the references
            keys.append(key)
            if name != ".zarray":
                continue
            try:
                codec = ArrayCodec(parent, load_json(node.data))
            except LeftOut as exc:
                log.warning("decoded view: array %s left out: %s", parent or "/", exc)
                self.hidden.add(parent)
                continue
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("decoded view: array %s left out: unreadable .zarray (%s)", parent or "/", exc)
                self.hidden.add(parent)
                continue
            if codec.error is not None:  # found at mount, not by every read: left out
                unavailable.setdefault(codec.error, []).append(parent or "/")
                self.hidden.add(parent)
                continue
            if not codec.identity:
                self.arrays[parent] = codec
        for why, arrays in unavailable.items():
            log.warning("decoded view: %s; left out: %s", why, ", ".join(sorted(arrays)))
        self._hidden_children = Counter(path.rpartition("/")[0] for path in self.hidden if path)
        self._largest = max((codec.nbytes for codec in self.arrays.values()), default=0)
        self.zmetadata = consolidate(self, [k for k in keys if not self._is_hidden(k)])

    def _is_hidden(self, path: str) -> bool:
        return within(path, self.hidden)

    def largest_chunk(self) -> int:
        return self._largest

    def node(self, path: str) -> Ref | Dir | None:
        if path == ".zmetadata":
            return Inline(self.zmetadata)
        if self._is_hidden(path):
            return None
        node = self.tree.node(path)
        if isinstance(node, Dir):
            hidden = self._hidden_children.get(path)
            return Dir(node.nlink - hidden) if hidden else node
        if node is None:
            return None
        parent, _, name = path.rpartition("/")
        if name == ".zmetadata":
            return None  # consolidated metadata of the raw form would describe encoded chunks
        codec = self.arrays.get(parent)
        if codec is None:
            codec = self._nested_owner(parent)
            if codec is None:
                return node
        elif name in (".zattrs", ".zgroup"):
            return node
        if name == ".zarray":
            return Inline(codec.zarray)
        return Decoded(node, codec)

    def _nested_owner(self, directory: str) -> ArrayCodec | None:
        """The array whose chunk keys are nested directories (``dimension_separator: "/"``,
        ``a/0/1``) that ``directory`` is inside of, if any: its chunks are decoded like the others
        (served as they are, they would be encoded bytes under a ``.zarray`` that says none)."""
        while directory:
            directory = directory.rpartition("/")[0]
            codec = self.arrays.get(directory)
            if codec is not None:
                return codec if codec.separator == "/" else None
        return None

    def listdir(self, path: str) -> Iterator[tuple[str, bool]]:
        prefix = f"{path}/" if path else ""
        left_out = path in self.hidden  # the array at the root, left out: nothing of it is listed
        for name, is_dir in () if left_out else self.tree.listdir(path):
            if name == ".zmetadata" or prefix + name in self.hidden:
                continue
            yield name, is_dir
        if not path:
            yield ".zmetadata", False

    def items(self) -> Iterator[tuple[str, Ref]]:
        yield ".zmetadata", Inline(self.zmetadata)
        for key, _ in self.tree.items():
            node = self.node(key)
            if node is not None and not isinstance(node, Dir):
                yield key, node

    def metadata_keys(self) -> Iterator[str]:
        return (key for key in self.tree.metadata_keys() if not self._is_hidden(key.rpartition("/")[0]))
