"""kerchunk JSON reference sets, version 0 and 1 (``docs/reference-formats.md`` §2-5).

A JSON list of sets (as ``scan_grib`` users often write) mounts as numbered sub-trees
``0/``, ``1/``, ... -- each element keeps its own root group.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging

import numpy as np

from refmount.errors import RefmountError
from refmount.io.kept import KEEP_MIN, KeptIndexes
from refmount.io.origins import Origins
from refmount.index import CompactIndex, Index, Inline, Range, Ref, Union, Whole
from refmount.urls import parent_of, resolve
from refmount.sources import json_columns
from refmount.sources.reading import decompress, read_file, release_memory
from refmount.sources.templates import expand_gen, fill_url

log = logging.getLogger("refmount.sources")

try:  # several times faster on large sets; the standard library otherwise
    import orjson

    def _loads(text: bytes):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            return json.loads(text)  # for its error message, and NaN/Infinity which orjson refuses

except ImportError:  # pragma: no cover
    _loads = json.loads


def load(location: str, origins: Origins, kept: KeptIndexes | None = None) -> Index:
    """The index of the JSON set at ``location``; with ``kept``, mapped from the index kept
    there for the file as it is now, else parsed (and a large one kept for next time)."""
    identity = origins.identity(location) if kept is not None else None
    if identity is not None:
        index = kept.get(identity)
        if index is not None:
            log.info("%s: index kept from an earlier mount (%d keys)", location, len(index))
            return index
    index = _parse(location, origins)
    if identity is not None and isinstance(index, CompactIndex) and len(index) >= KEEP_MIN:
        kept.put(identity, index)
    return index


def _parse(location: str, origins: Origins) -> Index:
    raw, mtime_ns = read_file(location, origins)
    text = decompress(raw, location)
    del raw
    # the bulk of a large set straight into columns; the rest (or all, when it cannot be split
    # safely) through the JSON parser
    split = json_columns.split(text)
    doc = columns = None
    if split is not None:
        try:
            doc, columns = _loads(split[0]), split[1]
        except ValueError:  # the whole text is parsed below, for the error and where it is
            pass
        if columns is not None and not _columns_fit(doc, columns):
            doc = columns = None
    if columns is None:
        try:
            doc = _loads(text)
        except UnicodeDecodeError:
            raise RefmountError(f"{location}: not a reference set (not UTF-8 JSON)") from None
        except json.JSONDecodeError as exc:
            raise RefmountError(f"{location}: malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    large = len(text) >= json_columns.MIN_BYTES
    del text, split
    base = parent_of(location)
    if isinstance(doc, list):
        if not doc:
            raise RefmountError(f"{location}: empty list of reference sets")
        index = Union({str(n): _load_set(f"{location}[{n}]", d, base, mtime_ns) for n, d in enumerate(doc)})
    else:
        index = _load_set(location, doc, base, mtime_ns, columns)
    del doc, columns
    if large:
        release_memory()
    return index


def _columns_fit(doc, columns: json_columns.Columns) -> bool:
    """Whether entries taken as columns add up with the parsed rest exactly as the whole
    document would: the same version reading, no key normalised or present in both."""
    if not isinstance(doc, dict):
        return False
    if "version" in doc:
        if not (type(doc["version"]) is int and doc["version"] == 1 and isinstance(doc.get("refs"), dict)):
            return False
        refs = doc["refs"]
    else:
        refs = doc
    if np.char.startswith(columns.keys, b"/").any():
        return False
    if refs:
        try:
            rest = np.array([_key(k).encode("utf-8", "surrogateescape") for k in refs], dtype=bytes)
        except UnicodeEncodeError:  # a key no file name can be: the whole parse names it
            return False
        if len(rest) <= 64:  # the usual rest: metadata; a vectorised comparison each
            return not any((columns.keys == key).any() for key in rest)
        ordered = np.sort(columns.keys)
        at = np.minimum(np.searchsorted(ordered, rest), len(ordered) - 1)
        return not (ordered[at] == rest).any()
    return True


def from_refs(doc: dict, where: str, mtime_ns: int = 0) -> CompactIndex:
    """An index of a reference set already in memory (``refmount scan``'s, with absolute URLs)."""
    return _load_set(where, doc, "/", mtime_ns)


def _load_set(where: str, doc, base: str, mtime_ns: int, columns: json_columns.Columns | None = None) -> CompactIndex:
    if not isinstance(doc, dict):
        raise RefmountError(f"{where}: a reference set must be a JSON object, not {type(doc).__name__}")
    version = doc.get("version")
    index = CompactIndex(mtime_ns)
    if version is None:
        refs, templates, gen = doc, {}, None
    elif version == 1 and type(version) is int:
        refs = doc.get("refs", {})
        templates = doc.get("templates") or {}
        gen = doc.get("gen")
        if not isinstance(refs, dict):
            raise RefmountError(f"{where}: 'refs' must be an object")
        if not isinstance(templates, dict) or not all(isinstance(v, str) for v in templates.values()):
            raise RefmountError(f"{where}: 'templates' must map names to strings")
    else:
        raise RefmountError(f"{where}: unsupported reference set version {version!r} (expected 1, or none for v0)")

    if columns is not None:  # taken from the text already: URLs resolved once per distinct URL
        table = np.empty(len(columns.urls), dtype=np.int64)
        for n, u in enumerate(columns.urls):
            try:
                table[n] = index.url_id(_url(u, templates, base, where, ""))
            except RefmountError:  # say it again, naming the first key that uses this URL
                first = columns.keys[int(np.argmax(columns.url_ids == n))].decode("utf-8", "surrogateescape")
                _url(u, templates, base, where, first)
                raise
        index.add_ranges(columns.keys, table[columns.url_ids], columns.offsets, columns.lengths)
    # the common case -- [url, offset, length] -- goes into columns without a Python object
    # per key; URLs are resolved once per distinct URL
    keys, raw_urls, offsets, lengths = [], [], [], []
    for key, value in refs.items():
        if (
            type(value) is list
            and len(value) == 3
            and type(value[0]) is str
            and type(value[1]) is int
            and type(value[2]) is int
            and value[1] >= 0
            and value[2] > 0
            and value[1] + value[2] < MAX_OFFSET
        ):
            keys.append(key)
            raw_urls.append(value[0])
            offsets.append(value[1])
            lengths.append(value[2])
        else:
            key = _key(key)
            index.add(key, to_ref(key, value, templates, base, where))
    if keys:
        raw_ids: dict[str, int] = {}
        ids = np.array([raw_ids.setdefault(u, len(raw_ids)) for u in raw_urls], dtype=np.int64)
        table = np.empty(len(raw_ids), dtype=np.int64)
        for u, n in raw_ids.items():
            try:
                table[n] = index.url_id(_url(u, templates, base, where, ""))
            except RefmountError:  # say it again, naming the first key that uses this URL
                _url(u, templates, base, where, keys[raw_urls.index(u)])
                raise
        if any(k.startswith("/") for k in keys):
            keys = [_key(k) for k in keys]
        index.add_ranges(keys, table[ids], offsets, lengths)
        del raw_urls, raw_ids, ids
    if gen:
        for key, value in expand_gen(gen, templates, where):
            key = _key(key)
            index.add(key, to_ref(key, value, {}, base, where))
    try:
        return index.build()
    except RefmountError as exc:
        raise RefmountError(f"{where}: {exc}") from None


def _key(key: str) -> str:
    return key[1:] if key.startswith("/") else key


def _url(url: str, templates: dict[str, str], base: str, where: str, key: str) -> str:
    if not url:
        raise RefmountError(f"{where}: key {key!r}: URL must be a non-empty string")
    url = fill_url(url, templates, f"{where}: key {key!r}")
    try:
        return resolve(url, base)
    except RefmountError as exc:
        raise RefmountError(f"{where}: key {key!r}: {exc}") from None


MAX_OFFSET = 1 << 63  # byte positions are signed 64-bit everywhere (pread, HTTP, Parquet)


def to_ref(key: str, value, templates: dict[str, str], base: str, where: str) -> Ref:
    """Normalise one JSON value into Inline / Range / Whole (§2.2)."""
    if isinstance(value, str):
        if value.startswith("base64:"):
            try:
                return Inline(base64.b64decode(value[7:], validate=True))
            except (binascii.Error, ValueError):
                raise RefmountError(f"{where}: key {key!r}: invalid base64 data") from None
        try:
            return Inline(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise RefmountError(f"{where}: key {key!r}: text is not valid Unicode") from None
    if isinstance(value, dict):
        return Inline(json.dumps(value, separators=(",", ":")).encode())
    if isinstance(value, list) and len(value) in (1, 3):
        url = value[0]
        if url is None:
            raise RefmountError(f"{where}: key {key!r}: reference has no URL (null) and no default target is set")
        if not isinstance(url, str) or not url:
            raise RefmountError(f"{where}: key {key!r}: URL must be a non-empty string")
        url = _url(url, templates, base, where, key)
        if len(value) == 1:
            return Whole(url)
        offset, length = value[1], value[2]
        if not all(type(v) is int and 0 <= v < MAX_OFFSET for v in (offset, length)) or offset + length >= MAX_OFFSET:
            raise RefmountError(f"{where}: key {key!r}: offset and length must be non-negative integers below 2**63")
        return Inline(b"") if length == 0 else Range(url, offset, length)
    raise RefmountError(
        f"{where}: key {key!r}: unsupported value {json.dumps(value)[:60]} "
        "(expected text, base64:, an object, [url] or [url, offset, length])"
    )
