"""A Zarr v2 view of Zarr v3 trees: no C reader here reads ``zarr.json`` (``legacy-clients.md``).

Each ``zarr.json`` becomes ``.zgroup`` or ``.zarray``, plus ``.zattrs`` (the attributes, and
``_ARRAY_DIMENSIONS`` from ``dimension_names``). Chunk keys are mapped to the v2 form
``i.j.k``; the bytes of each chunk are the v3 chunk's, unchanged, since the codecs are carried
over: array-to-array ``transpose`` (full reversal) as ``order: "F"``, the ``bytes`` codec's
endianness into the dtype, the last bytes-to-bytes codec as the compressor and any before it as
filters (``gzip``, ``zstd``, ``blosc``, ``zlib``, and numcodecs' own ``numcodecs.*`` names).
Arrays with no faithful v2 form (sharding, other grids or data types) are left out with one
warning each. v2 parts of the tree pass through unchanged.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from typing import Iterator

from refmount.grid import runs_v3
from refmount.index import Dir, Index, Inline, Ref, load_json
from refmount.views.common import View, consolidate, within

log = logging.getLogger("refmount.views")

_TYPES = {
    "bool": "|b1", "int8": "|i1", "uint8": "|u1",
    "int16": "i2", "int32": "i4", "int64": "i8", "uint16": "u2", "uint32": "u4", "uint64": "u8",
    "float16": "f2", "float32": "f4", "float64": "f8", "complex64": "c8", "complex128": "c16",
}
_BLOSC_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}
_CHUNK_NAME = re.compile(r"\d+(?:\.\d+)*")


class NoV2Form(Exception):
    pass


ZARR3_CODEC = "refmount.zarr3"  # the decoded view's marker: decode this chunk with zarr-python

_TIME_UNITS = {"Y", "M", "W", "D", "h", "m", "s", "ms", "us", "μs", "ns", "ps", "fs", "as", "generic"}


def v2_fill(fill, dtype: str | list):
    """A Zarr v3 fill value in its Zarr v2 form for ``dtype`` (a ``v2_dtype``): a structured one
    (zarr >= 3.2 writes an object of fields) as the base64 of its bytes, a float given as raw
    bits (``"0x7fc00000"``) as its number or ``"NaN"``/``"Infinity"``; others as they are."""
    if isinstance(dtype, list) and isinstance(fill, dict):
        import base64

        import numpy as np

        try:
            layout = np.dtype([(name, kind if isinstance(kind, str) else [tuple(k) for k in kind]) for name, kind in dtype])
            value = np.zeros((), dtype=layout)
            for name in layout.names:
                if name in fill:
                    field = fill[name]
                    value[name] = base64.b64decode(field) if layout[name].kind == "V" and isinstance(field, str) else field
        except (TypeError, ValueError, UnicodeError) as exc:
            raise NoV2Form(f"fill value {json.dumps(fill)[:60]} ({exc})") from None
        return base64.b64encode(value.tobytes()).decode()
    if isinstance(dtype, str) and dtype[1:2] == "f" and isinstance(fill, str) and fill.startswith("0x"):
        import numpy as np

        size = int(dtype[2:])
        number = np.frombuffer(int(fill, 16).to_bytes(size, "big"), dtype=f">f{size}")[0]
        if np.isnan(number):
            return "NaN"
        if np.isinf(number):
            return "Infinity" if number > 0 else "-Infinity"
        return float(number)
    return fill


def v2_dtype(data_type, endian: str | None) -> str | list:
    """The Zarr v2 (numpy) dtype string of a Zarr v3 data type whose chunks the ``bytes`` codec
    wrote with ``endian`` byte order -- the one place this mapping lives. Every multi-byte type
    carries its byte order (``<c16``, ``>M8[s]``, ``<U5``); one-byte and byte-string types ``|``."""
    order = ">" if endian == "big" else "<"
    if isinstance(data_type, str):
        base = _TYPES.get(data_type)
        if base is None:
            raise NoV2Form(f"data type {data_type!r}")
        return base if base.startswith("|") else order + base
    if not isinstance(data_type, dict):
        raise NoV2Form(f"data type {json.dumps(data_type)[:60]}")
    name, config = data_type.get("name"), data_type.get("configuration") or {}
    if name in ("structured", "struct"):  # Zarr v2's list of [name, dtype] fields, each with the byte order
        fields = config.get("fields")
        if isinstance(fields, list) and all(isinstance(f, dict) for f in fields):  # zarr >= 3.2: named objects
            fields = [[f.get("name"), f.get("data_type")] for f in fields]
        if not isinstance(fields, list) or not fields or not all(isinstance(f, list) and len(f) == 2
                                                                  and isinstance(f[0], str) for f in fields):
            raise NoV2Form(f"data type {json.dumps(data_type)[:60]}")
        return [[field, v2_dtype(kind, endian)] for field, kind in fields]
    if name in ("numpy.datetime64", "numpy.timedelta64"):
        unit, scale = config.get("unit"), config.get("scale_factor", 1)
        if unit not in _TIME_UNITS or type(scale) is not int or scale < 1:
            raise NoV2Form(f"data type {name} with unit {unit!r} x {scale!r}")
        letter = "M8" if name == "numpy.datetime64" else "m8"
        return f"{order}{letter}[{'' if scale == 1 else scale}{'' if unit == 'generic' else unit}]".replace("[]", "")
    length = config.get("length_bytes")
    if type(length) is not int or length < 1:
        raise NoV2Form(f"data type {json.dumps(data_type)[:60]}")
    if name == "fixed_length_utf32" and length % 4 == 0:
        return f"{order}U{length // 4}"
    if name == "null_terminated_bytes":
        return f"|S{length}"
    if name == "raw_bytes":
        return f"|V{length}"
    raise NoV2Form(f"data type {json.dumps(data_type)[:60]}")


def _codec_v2(codec: dict) -> dict:
    name, config = codec.get("name"), dict(codec.get("configuration") or {})
    if name == "gzip":
        return {"id": "gzip", "level": config.get("level", 5)}
    if name == "zstd":
        return {"id": "zstd", "level": config.get("level", 0), "checksum": config.get("checksum", False)}
    if name == "blosc":
        shuffle = config.get("shuffle", "noshuffle")
        return {"id": "blosc", "cname": config.get("cname", "lz4"), "clevel": config.get("clevel", 5),
                "shuffle": _BLOSC_SHUFFLE.get(shuffle, shuffle), "blocksize": config.get("blocksize", 0)}
    if name == "crc32c":  # the v3 checksum codec: numcodecs has the same
        return {"id": "crc32c"}
    if isinstance(name, str) and name.startswith("numcodecs."):
        return {"id": name.split(".", 1)[1], **config}
    raise NoV2Form(f"codec {name!r} has no Zarr v2 equivalent")


class ArrayV3:
    """One v3 array: its v2 metadata and chunk-key mapping."""

    def __init__(self, path: str, meta: dict, decoded: bool = False):
        """``decoded``: for the decoded view, which can also serve what v2 cannot express --
        a sharded array becomes one v2 chunk per shard, decoded whole by zarr-python."""
        self.path = path
        shape = meta["shape"]
        grid = meta.get("chunk_grid") or {}
        runs = runs_v3(meta)
        if runs is None:
            raise NoV2Form(f"chunk grid {grid.get('name') if isinstance(grid, dict) else grid!r}")
        chunks = [next((length for length, n in r if n), 0) for r in runs]
        # a rectilinear grid stores each chunk at its own size: v2 can express it only when every
        # chunk of a dimension has the same size (regular in fact)
        if grid.get("name") != "regular" and any(
                any(length != c for length, n in r if n) or (c and sum(n for _, n in r) != -(-s // c))
                for r, c, s in zip(runs, chunks, shape)):
            raise NoV2Form(f"chunk grid {grid.get('name')!r} with varying chunk sizes (Zarr v2 cannot express them)")
        if meta.get("storage_transformers"):
            raise NoV2Form("storage transformers")
        order, endian, compressors, prefilters = "C", "little", [], []
        stage = "array"
        codecs = meta.get("codecs", [])
        if decoded and any(isinstance(c, dict) and c.get("name") == "sharding_indexed" for c in codecs):
            # the decoded view hands a shard to zarr-python whole (``decoded.ArrayCodec``)
            compressors, stage = [{"id": ZARR3_CODEC, "metadata": meta}], "bytes"
            codecs = []
        for codec in codecs:
            name = codec.get("name")
            config = codec.get("configuration") or {}
            if stage == "array" and name == "transpose":
                if list(config.get("order", [])) != list(range(len(shape)))[::-1]:
                    raise NoV2Form("a transpose other than a full reversal")
                order = "F" if order == "C" else "C"
            elif stage == "array" and isinstance(name, str) and name.startswith("numcodecs."):
                prefilters.append(_codec_v2(codec))  # array-to-array (bitround, ...): a v2 filter first
            elif stage == "array" and name == "bytes":
                endian = config.get("endian", "little")
                stage = "bytes"
            elif stage == "bytes":
                compressors.append(_codec_v2(codec))
            else:
                raise NoV2Form(f"codec {name!r} has no Zarr v2 equivalent")
        if stage != "bytes":
            raise NoV2Form("no bytes codec")
        dtype = v2_dtype(meta.get("data_type"), endian)
        encoding = meta.get("chunk_key_encoding", {"name": "default"})
        self.separator = (encoding.get("configuration") or {}).get("separator", "/" if encoding.get("name") == "default" else ".")
        self.prefix = "c" + self.separator if encoding.get("name", "default") == "default" else ""
        self.ndim = len(shape)
        zarray = {
            "zarr_format": 2, "shape": shape, "chunks": chunks, "dtype": dtype,
            "compressor": compressors[-1] if compressors else None, "filters": (prefilters + compressors[:-1]) or None,
            "fill_value": v2_fill(meta.get("fill_value"), dtype), "order": order, "dimension_separator": ".",
        }
        self.zarray = json.dumps(zarray, indent=2).encode()
        attrs = dict(meta.get("attributes") or {})
        names = meta.get("dimension_names")
        if names and all(isinstance(n, str) for n in names):
            attrs.setdefault("_ARRAY_DIMENSIONS", list(names))
        self.zattrs = json.dumps(attrs, indent=2).encode()

    def v3_key(self, name: str) -> str | None:
        """``i.j.k`` -> the v3 key below the array (``c/i/j/k``); None if not a chunk name."""
        if not _CHUNK_NAME.fullmatch(name):
            return None
        parts = name.split(".")
        if self.ndim == 0:
            return ("c" if self.prefix else "0") if parts == ["0"] else None
        if len(parts) != self.ndim:
            return None
        return self.prefix + self.separator.join(parts)

    def names(self, tree: Index) -> Iterator[str]:
        """v2 names of the chunks present, by walking the v3 chunk keys."""
        base = self.path + "/" if self.path else ""
        if self.ndim == 0:
            if tree.node(base + ("c" if self.prefix else "0")) is not None:
                yield "0"
            return
        if self.separator == "/":
            start = base + "c" if self.prefix else base.rstrip("/")
            yield from self._walk(tree, start, self.ndim, [])
        else:
            for name, is_dir in tree.listdir(self.path):
                if not is_dir and name.startswith(self.prefix):
                    parts = name[len(self.prefix):].split(self.separator)
                    if len(parts) == self.ndim and all(p.isdigit() for p in parts):
                        yield ".".join(parts)

    def _walk(self, tree: Index, path: str, depth: int, parts: list[str]) -> Iterator[str]:
        for name, is_dir in tree.listdir(path):
            if not name.isdigit() or is_dir != (depth > 1):
                continue
            if depth == 1:
                yield ".".join(parts + [name])
            else:
                yield from self._walk(tree, f"{path}/{name}", depth - 1, parts + [name])


class V2View(View):
    def __init__(self, tree: Index, decoded: bool = False):
        super().__init__(tree)
        self.groups: dict[str, bytes] = {}  # path -> .zattrs
        self.arrays: dict[str, ArrayV3] = {}
        self.hidden: set[str] = set()
        for key in tree.metadata_keys():
            parent, _, name = key.rpartition("/")
            if name != "zarr.json":
                continue
            node = tree.node(key)
            try:
                meta = load_json(node.data) if isinstance(node, Inline) else None
                if not isinstance(meta, dict) or meta.get("zarr_format") != 3:
                    raise NoV2Form("zarr.json is not inline Zarr v3 metadata")
                if meta.get("node_type") == "group":
                    self.groups[parent] = json.dumps(meta.get("attributes") or {}, indent=2).encode()
                else:
                    self.arrays[parent] = ArrayV3(parent, meta, decoded)
            except (NoV2Form, ValueError, KeyError, TypeError, AttributeError) as exc:  # (a list where an object belongs, ...)
                log.warning("v2 view: %s left out: %s", parent or "/", exc)
                self.hidden.add(parent)
        self._hidden_children = Counter(path.rpartition("/")[0] for path in self.hidden if path)
        self.zmetadata = consolidate(self, self.metadata_keys())

    def _synthesized(self, path: str) -> bytes | None:
        parent, _, name = path.rpartition("/")
        if parent in self.arrays:
            return {".zarray": self.arrays[parent].zarray, ".zattrs": self.arrays[parent].zattrs}.get(name)
        if parent in self.groups:
            return {".zgroup": b'{\n  "zarr_format": 2\n}', ".zattrs": self.groups[parent]}.get(name)
        return None

    def _is_hidden(self, path: str) -> bool:
        return within(path, self.hidden)

    def node(self, path: str) -> Ref | Dir | None:
        if path == ".zmetadata":
            return Inline(self.zmetadata)
        if self._is_hidden(path) or path.rpartition("/")[2] == ".zmetadata":
            return None  # a v2 part's own consolidated metadata would leave out the v3 parts
        data = self._synthesized(path)
        if data is not None:
            return Inline(data)
        if path in self.arrays:
            return Dir(2)  # chunk files only
        parent, _, name = path.rpartition("/")
        array = self.arrays.get(parent)
        if array is not None:
            key = array.v3_key(name)
            if key is None:
                return None
            node = self.tree.node(f"{parent}/{key}" if parent else key)
            return None if isinstance(node, Dir) else node
        if name == "zarr.json" or self._inside_array(parent):
            return None
        node = self.tree.node(path)
        if isinstance(node, Dir):
            hidden = self._hidden_children.get(path)
            return Dir(node.nlink - hidden) if hidden else node
        return node

    @staticmethod
    def _join(directory: str, name: str) -> str:
        return f"{directory}/{name}" if directory else name

    def _inside_array(self, path: str) -> bool:
        """Below an array directory (its v3 chunk tree, not shown as such)."""
        while path:
            path = path.rpartition("/")[0]
            if path in self.arrays:
                return True
        return False

    def listdir(self, path: str) -> Iterator[tuple[str, bool]]:
        if path in self.arrays:
            yield ".zarray", False
            yield ".zattrs", False
            for name in self.arrays[path].names(self.tree):
                yield name, False
            return
        if path in self.groups:
            yield ".zgroup", False
            yield ".zattrs", False
        left_out = path in self.hidden  # the array at the root, left out: nothing of it is listed
        for name, is_dir in () if left_out else self.tree.listdir(path):
            if name in ("zarr.json", ".zmetadata") or self._join(path, name) in self.hidden:
                continue
            yield name, is_dir
        if not path:
            yield ".zmetadata", False

    def items(self) -> Iterator[tuple[str, Ref]]:
        stack = [""]
        while stack:
            directory = stack.pop()
            for name, is_dir in self.listdir(directory):
                path = self._join(directory, name)
                if is_dir:
                    stack.append(path)
                else:
                    node = self.node(path)
                    if node is not None:
                        yield path, node

    def metadata_keys(self) -> Iterator[str]:
        for path in self.groups:
            yield self._join(path, ".zgroup")
            yield self._join(path, ".zattrs")
        for path in self.arrays:
            yield self._join(path, ".zarray")
            yield self._join(path, ".zattrs")
        for key in self.tree.metadata_keys():
            if not key.endswith("zarr.json") and not self._is_hidden(key):
                yield key


def has_v3(tree: Index) -> bool:
    return any(key.rpartition("/")[2] == "zarr.json" for key in tree.metadata_keys())
