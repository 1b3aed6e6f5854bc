"""The one index model every source produces.

A tree of read-only files. Each file is a reference:

* ``Inline(data)``          -- bytes held in the index;
* ``Range(url, offset, length)`` -- ``length`` bytes of the object at ``url`` from ``offset``;
* ``Whole(url)``            -- the whole object at ``url`` (size learned once, from the origin);
* ``Unreadable(length, reason)`` -- a file whose size is known but whose bytes must not be read
  (an unauthorised Icechunk virtual chunk): every read fails with ``reason``.

A ``Range`` may carry ``check``: ``"etag:VALUE"`` or ``"mtime:SECONDS"``, the identity the
original had when the reference was written; a read of a changed original fails.

Directories are implicit (the ``/``-separated prefixes of keys). The FUSE layer only sees the
``Index`` interface, so compact in-memory sets, lazy Parquet sets and Icechunk manifests are all
just other implementations of it.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from refmount.errors import RefmountError


@dataclass(frozen=True, slots=True)
class Inline:
    data: bytes


@dataclass(frozen=True, slots=True)
class Range:
    url: str
    offset: int
    length: int
    check: str = ""


@dataclass(frozen=True, slots=True)
class Whole:
    url: str


@dataclass(frozen=True, slots=True)
class Unreadable:
    length: int
    reason: str


@dataclass(frozen=True, slots=True)
class Decoded:
    """The chunk at ``source`` as a view serves it: decoded by ``codec`` (an object with
    ``nbytes`` and ``decode(raw) -> bytes``, one per array, compared by identity)."""

    source: "Inline | Range | Whole | Unreadable"
    codec: object


Ref = Inline | Range | Whole | Unreadable | Decoded
METADATA_NAMES = (".zgroup", ".zattrs", ".zarray", "zarr.json")


@dataclass(frozen=True, slots=True)
class Dir:
    nlink: int


class Index:
    """Interface: a read-only tree. Paths are relative, ``/``-separated; ``""`` is the root."""

    mtime_ns: int = 0

    def node(self, path: str) -> Ref | Dir | None:
        """The file's reference, ``Dir`` for a directory, ``None`` when absent."""
        raise NotImplementedError

    def listdir(self, path: str) -> Iterator[tuple[str, bool]]:
        """``(name, is_dir)`` for each entry of the directory ``path``."""
        raise NotImplementedError

    def items(self) -> Iterator[tuple[str, Ref]]:
        """Every file with its reference, each once, in no promised order (for ``inspect`` and
        tests); may read from the source (a Parquet set's record files)."""
        raise NotImplementedError

    def files(self, top: str = "") -> Iterator[str]:
        """Every file key below the directory ``top``, by listing."""
        stack = [top]
        while stack:
            directory = stack.pop()
            for name, is_dir in self.listdir(directory):
                path = f"{directory}/{name}" if directory else name
                if is_dir:
                    stack.append(path)
                else:
                    yield path

    def metadata_keys(self) -> Iterator[str]:
        """Keys of Zarr metadata files (``METADATA_NAMES``). This default walks the tree;
        indexes that know their directories avoid listing chunk files."""
        return (path for path in self.files() if path.rpartition("/")[2] in METADATA_NAMES)

    def urls(self) -> Iterator[str]:
        """Distinct origin URLs known without expensive work (to check origins at mount)."""
        seen = set()
        for _, ref in self.items():
            url = getattr(ref, "url", None)
            if url is not None and url not in seen:
                seen.add(url)
                yield url

    def own_urls(self) -> Iterator[str]:
        """URL prefixes of objects that belong to the source the user named (an Icechunk
        repository's chunk files): the origin policy lets them through."""
        return iter(())

    def moved(self) -> str | None:
        """What changed, when the source has moved on since this tree was built (a followed
        branch has a new head); asks the source, so it may do I/O."""
        return None

    def describe(self) -> dict | None:
        """What ``inspect`` shows besides the arrays (an Icechunk repository's refs, history,
        containers), or None."""
        return None

    def largest_chunk(self) -> int:
        """Bytes of the largest chunk that is served from memory whole (decoded chunks); 0 when
        none is."""
        return 0

    def reserved_bytes(self) -> int:
        """Memory this index may hold for what it reads on demand (a Parquet set's record
        files): counted against the mount's cache bound."""
        return 0


_BAD_KEY = re.compile(r"(?:^|/)\.{1,2}(?:/|$)|//|^/|/$|\x00")


def load_json(data: bytes | str):
    """A metadata document (``.zarray``, ``.zattrs``, ``zarr.json``, ...) parsed; one nested
    too deeply to parse is refused as any other invalid JSON is (``ValueError``), not with the
    interpreter's ``RecursionError`` wherever it happens to be read."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _encodable(key: str) -> bool:
    try:
        key.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    return True


def check_key(key: str) -> str:
    """Validate one key as a POSIX path (``fuse-and-operations.md`` §9.3); return it."""
    if not key:
        raise RefmountError("empty key")
    if _BAD_KEY.search(key):
        raise RefmountError(f"key {key!r}: empty, '.' or '..' component, NUL, or leading/trailing '/'")
    if len(key) > 63:  # only long keys can break a byte limit
        raw = key.encode("utf-8", "surrogateescape")
        if len(raw) > 4096:
            raise RefmountError(f"key {key[:60]!r}...: longer than 4096 bytes")
        if any(len(part) > 255 for part in raw.split(b"/")):
            raise RefmountError(f"key {key!r}: a name is longer than 255 bytes")
    return key


LISTING_SORT_LIMIT = 1_000_000
_GRID_NAME = re.compile(r"\d+(?:\.\d+)*\Z")


def listing_order(entry: tuple[str, bool]):
    """Sort key of a directory entry: dot files (Zarr metadata), then names of chunk indices in
    grid order, then everything else by name."""
    name = entry[0]
    if name.startswith(".") or name == "zarr.json":
        return 0, (), name
    if _GRID_NAME.match(name):
        return 1, tuple(int(part) for part in name.split(".")), name
    return 2, (), name


class CompactIndex(Index):
    """A sorted, compact in-memory index (JSON sets of millions of keys).

    Keys live UTF-8 encoded in one bytes blob with an offsets array, sorted; each key's
    reference is a kind code plus integer columns (URL id or inline id, offset, length) in
    NumPy arrays, URLs interned in a table. No Python object per key survives loading, so a
    1 M-key set costs tens of MB. Lookup is a binary search; listing a directory costs
    O(log n) per entry, never a scan of the subtree.
    """

    INLINE, RANGE, WHOLE = 0, 1, 2

    def __init__(self, mtime_ns: int = 0):
        self.mtime_ns = mtime_ns
        self._pending_keys: list[str] = []
        self._pending: list[tuple[int, int, int, int]] = []  # kind, a, offset, length
        self._urls: list[str] = []
        self._url_ids: dict[str, int] = {}
        self._inline: list[bytes] = []
        self._bulk: list[tuple] = []
        self._dirs: dict[str, int] = {"": 2}

    # -- building ---------------------------------------------------------------------
    def url_id(self, url: str) -> int:
        uid = self._url_ids.get(url)
        if uid is None:
            uid = self._url_ids[url] = len(self._urls)
            self._urls.append(url)
        return uid

    def add(self, key: str, ref: Ref) -> None:
        """Add or replace ``key`` (the last one added wins, as in a JSON object)."""
        self._pending_keys.append(key)
        if isinstance(ref, Inline):
            self._pending.append((self.INLINE, len(self._inline), 0, len(ref.data)))
            self._inline.append(ref.data)
        elif isinstance(ref, Range):
            self._pending.append((self.RANGE, self.url_id(ref.url), ref.offset, ref.length))
        else:
            self._pending.append((self.WHOLE, self.url_id(ref.url), 0, -1))

    def add_ranges(self, keys, url_ids, offsets, lengths) -> None:
        """Bulk form of ``add`` for ranges whose URLs were interned with ``url_id``; ``keys`` a
        list of str, or a fixed-width bytes array of their UTF-8 (``sources.json_columns``)."""
        self._bulk.append((keys, url_ids, offsets, lengths))

    def build(self) -> "CompactIndex":
        """Sort, drop replaced duplicates, validate keys and derive directories."""
        # bulk ranges first, then single additions: a later ``add`` replaces a bulk key
        key_parts = [bkeys for bkeys, _, _, _ in self._bulk] + [self._pending_keys]
        parts = [np.stack([np.full(len(bkeys), self.RANGE, dtype=np.int64), np.asarray(bids, dtype=np.int64),
                           np.asarray(boffs, dtype=np.int64), np.asarray(blens, dtype=np.int64)], axis=1).reshape(-1, 4)
                 for bkeys, bids, boffs, blens in self._bulk]
        parts.append(np.array(self._pending, dtype=np.int64).reshape(-1, 4))
        columns = np.concatenate(parts)
        kind, a, off, length = (columns[:, i] for i in range(4))
        self._pending_keys = self._pending = self._bulk = None
        del self._url_ids
        rows = _as_rows(key_parts)
        if rows is not None:
            return self._build_rows(rows, kind, a, off, length)
        keys: list[str] = []
        for part in key_parts:
            part = part if isinstance(part, list) else [k.decode("utf-8", "surrogateescape") for k in part.tolist()]
            keys = keys + part if keys else part
        order = self._sort(keys)
        if len(order):
            # stable sort: among equal keys the last added comes last; keep that one
            sorted_keys = [keys[i] for i in order.tolist()]
            last = np.ones(len(order), dtype=bool)
            last[:-1] = [x != y for x, y in zip(sorted_keys, sorted_keys[1:])]
            if not last.all():
                order = order[last]
                sorted_keys = [k for k, keep in zip(sorted_keys, last.tolist()) if keep]
        else:
            sorted_keys = []
        check_keys(sorted_keys)
        try:
            encoded = [k.encode("utf-8", "surrogateescape") for k in sorted_keys]
        except UnicodeEncodeError:  # a JSON "\ud800": no file name holds a lone surrogate
            bad = next(k for k in sorted_keys if not _encodable(k))
            raise RefmountError(f"key {bad!r}: holds a lone UTF-16 surrogate, which no file name can") from None
        self._blob = b"".join(encoded)
        self._starts = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=self._starts[1:])
        self._kind = kind[order].astype(np.int8)
        self._a = a[order]
        self._off = off[order]
        self._len = length[order]
        self._n = len(encoded)
        self._derive_dirs({k.rpartition("/")[0] for k in sorted_keys})
        return self

    def _build_rows(self, rows: np.ndarray, kind, a, off, length) -> "CompactIndex":
        """``build`` for keys as one fixed-width bytes array: sorted, deduplicated, checked and
        laid out in vectorised passes (a 1 M-key set without a Python object per key)."""
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        if len(ordered):  # among equal keys the last added comes last: keep that one
            last = np.ones(len(ordered), dtype=bool)
            last[:-1] = ordered[1:] != ordered[:-1]
            if not last.all():
                order, ordered = order[last], ordered[last]
        n, width = len(ordered), ordered.dtype.itemsize
        grid = ordered.view(np.uint8).reshape(n, width)
        sizes = np.char.str_len(ordered).astype(np.int64)
        inside = np.arange(width) < sizes[:, None]
        _check_rows(ordered, grid, sizes, inside)
        self._blob = grid[inside].tobytes()
        self._starts = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(sizes, out=self._starts[1:])
        self._kind = kind[order].astype(np.int8)
        self._a, self._off, self._len = a[order], off[order], length[order]
        self._n = n
        # each key's parent directory: the bytes before its last '/' (only as wide as the widest
        # parent; the keys are sorted, so a parent is new only where it differs from the one before)
        slash = (grid == 47) & inside
        nested = slash.any(axis=1)
        cut = np.where(nested, width - 1 - np.argmax(slash[:, ::-1], axis=1), 0)
        names = set()
        if nested.any():
            wide = max(int(cut.max()), 1)
            parents = np.where(np.arange(wide) < cut[:, None], grid[:, :wide], 0)
            parents = np.ascontiguousarray(parents).view(f"S{wide}").reshape(n)[nested]
            new = np.ones(len(parents), dtype=bool)
            new[1:] = parents[1:] != parents[:-1]
            names = {p.decode("utf-8", "surrogateescape") for p in parents[new].tolist()}
        if not nested.all():
            names.add("")
        self._derive_dirs(names)
        return self

    @staticmethod
    def _sort(keys: list[str]) -> np.ndarray:
        if not keys:
            return np.zeros(0, dtype=np.int64)
        longest = max(map(len, keys))
        if longest * len(keys) * 4 <= 512 << 20:  # NumPy's fixed-width strings fit: sort in C
            return np.argsort(np.array(keys), kind="stable")
        return np.array(sorted(range(len(keys)), key=keys.__getitem__), dtype=np.int64)

    def _derive_dirs(self, parents: set[str]) -> None:
        """Directories from the keys' parents (and theirs), with link counts."""
        dirs: dict[str, int] = {"": 2}
        for parent in parents:
            while parent not in dirs:
                dirs[parent] = 2
                parent = parent.rpartition("/")[0]
        for d in dirs:
            if d:
                dirs[d.rpartition("/")[0]] += 1
                if self._find(d) is not None:
                    raise RefmountError(f"key {d!r} is both a file and a directory")
        self._dirs = dirs

    # -- queries ----------------------------------------------------------------------
    def _key(self, i: int) -> bytes:
        return self._blob[self._starts[i] : self._starts[i + 1]]

    def _bisect(self, key: bytes, lo: int = 0) -> int:
        hi = self._n
        blob, starts = self._blob, self._starts
        while lo < hi:
            mid = (lo + hi) // 2
            if blob[starts[mid] : starts[mid + 1]] < key:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def _find(self, key: str) -> int | None:
        raw = key.encode("utf-8", "surrogateescape")
        i = self._bisect(raw)
        if i < self._n and self._key(i) == raw:
            return i
        return None

    def _ref(self, i: int) -> Ref:
        kind = self._kind[i]
        if kind == self.INLINE:
            return Inline(self._inline[self._a[i]])
        url = self._urls[self._a[i]]
        if kind == self.RANGE:
            return Range(url, int(self._off[i]), int(self._len[i]))
        return Whole(url)

    def node(self, path: str) -> Ref | Dir | None:
        nlink = self._dirs.get(path)
        if nlink is not None:
            return Dir(nlink)
        i = self._find(path)
        return None if i is None else self._ref(i)

    def listdir(self, path: str) -> Iterator[tuple[str, bool]]:
        """Metadata first, then chunk names in grid order (``0.0, 0.1, ..., 1.0, ..., 10.0``,
        not ``0.0, 1.0, 10.0``): tools that walk a listing (cp, rsync, tar, find) then read an
        array in storage order, which fetch-ahead follows. Directories of more than
        ``LISTING_SORT_LIMIT`` entries are listed in key order without being held in memory."""
        entries = self._listdir_keys(path)
        head = list(itertools.islice(entries, LISTING_SORT_LIMIT + 1))
        if len(head) > LISTING_SORT_LIMIT:
            yield from head
            yield from entries
            return
        yield from sorted(head, key=listing_order)

    def _listdir_keys(self, path: str) -> Iterator[tuple[str, bool]]:
        prefix = (path + "/").encode("utf-8", "surrogateescape") if path else b""
        cut = len(prefix)
        i = self._bisect(prefix)
        while i < self._n:
            key = self._key(i)
            if not key.startswith(prefix):
                break
            rest = key[cut:]
            slash = rest.find(b"/")
            if slash < 0:
                yield rest.decode("utf-8", "surrogateescape"), False
                i += 1
            else:
                name = rest[:slash]
                yield name.decode("utf-8", "surrogateescape"), True
                i = self._bisect(prefix + name + b"0", i)  # "0" sorts right after "/"

    def items(self) -> Iterator[tuple[str, Ref]]:
        for i in range(self._n):
            yield self._key(i).decode("utf-8", "surrogateescape"), self._ref(i)

    def urls(self) -> Iterator[str]:
        return iter(self._urls)

    def metadata_keys(self) -> Iterator[str]:
        for directory in sorted(self._dirs):
            for name in METADATA_NAMES:
                key = f"{directory}/{name}" if directory else name
                if self._find(key) is not None:
                    yield key

    def __len__(self) -> int:
        return self._n

    # -- keeping (``refmount.io.kept``) -----------------------------------------------
    def kept_form(self) -> tuple[dict, dict[str, np.ndarray], dict[str, bytes]]:
        """``(meta, arrays, blobs)``: everything this index is, as JSON-able values, NumPy arrays
        and byte strings, for ``from_kept`` to rebuild it (memory-mapped) in another process."""
        inline_starts = np.zeros(len(self._inline) + 1, dtype=np.int64)
        np.cumsum([len(d) for d in self._inline], out=inline_starts[1:])
        meta = {"n": self._n, "mtime_ns": self.mtime_ns, "urls": list(self._urls), "dirs": self._dirs}
        arrays = {"starts": self._starts, "kind": self._kind, "a": self._a, "off": self._off, "len": self._len,
                  "inline_starts": inline_starts}
        return meta, arrays, {"keys": bytes(self._blob), "inline": b"".join(self._inline)}

    @classmethod
    def from_kept(cls, meta: dict, arrays: dict[str, np.ndarray], blobs: dict) -> "CompactIndex":
        """The index ``kept_form`` described; ``blobs`` may be memory maps (slicing gives bytes).
        Checks that the parts agree with each other (a torn or altered kept index raises
        ``RefmountError``), in vectorised passes."""
        index = cls(int(meta["mtime_ns"]))
        n = int(meta["n"])
        starts, kind, a = arrays["starts"], arrays["kind"], arrays["a"]
        off, length, inline_starts = arrays["off"], arrays["len"], arrays["inline_starts"]
        urls, dirs = meta["urls"], meta["dirs"]
        keys, inline = blobs["keys"], blobs["inline"]
        ranged = kind != cls.INLINE
        if (len(starts) != n + 1 or any(len(x) != n for x in (kind, a, off, length)) or int(starts[0]) != 0
                or int(starts[-1]) != len(keys) or int(inline_starts[0]) != 0 or int(inline_starts[-1]) != len(inline)
                or (n and (np.any(np.diff(starts) <= 0) or np.any(kind < 0) or np.any(kind > cls.WHOLE)
                           or np.any(a < 0) or np.any(a[ranged] >= len(urls)) or np.any(a[~ranged] >= len(inline_starts) - 1)))
                or not isinstance(dirs, dict) or not all(isinstance(u, str) for u in urls)):
            raise RefmountError("the kept index's parts do not agree")
        index._pending_keys = index._pending = index._bulk = None
        del index._url_ids
        index._blob, index._starts, index._kind, index._a, index._off, index._len = keys, starts, kind, a, off, length
        index._n, index._urls, index._dirs = n, urls, {str(k): int(v) for k, v in dirs.items()}
        index._inline = _Slices(inline, inline_starts)
        return index


class _Slices:
    """``slices[i]``: the bytes ``blob[starts[i]:starts[i + 1]]`` (a kept index's inline data)."""

    def __init__(self, blob, starts: np.ndarray):
        self.blob, self.starts = blob, starts

    def __len__(self) -> int:
        return len(self.starts) - 1

    def __getitem__(self, i: int) -> bytes:
        return bytes(self.blob[int(self.starts[i]) : int(self.starts[i + 1])])


ROWS_LIMIT = 256 << 20  # bytes of a fixed-width key array, at most


def _as_rows(parts: list) -> np.ndarray | None:
    """All keys as one fixed-width bytes array, when some came as one (and it fits); str keys
    are checked first (a trailing NUL would vanish in a fixed-width array)."""
    if not any(isinstance(p, np.ndarray) for p in parts):
        return None
    count = sum(len(p) for p in parts)
    width = max((p.dtype.itemsize if isinstance(p, np.ndarray) else max(map(len, p), default=0) * 4) for p in parts)
    if count * max(width, 1) > ROWS_LIMIT:
        return None
    arrays = []
    for part in parts:
        if isinstance(part, list):
            check_keys(part)
            part = np.array([k.encode("utf-8", "surrogateescape") for k in part], dtype=bytes) if part else None
        if part is not None and len(part):
            arrays.append(part)
    if not arrays:
        return None
    return np.concatenate(arrays)


def _check_rows(rows: np.ndarray, grid: np.ndarray, sizes: np.ndarray, inside: np.ndarray) -> None:
    """``check_key`` for keys as rows of bytes: each row that could be wrong (a NUL, a leading,
    trailing or doubled '/', a '.' opening a name, more than 63 bytes) is checked in full."""
    n, width = grid.shape
    if not n:
        return
    slash = grid == 47
    opening = np.ones((n, width), dtype=bool)
    opening[:, 1:] = slash[:, :-1]
    doubled = np.zeros((n, width), dtype=bool)
    doubled[:, 1:] = slash[:, 1:] & slash[:, :-1]
    last = grid[np.arange(n), np.maximum(sizes - 1, 0)]
    suspect = ((grid[:, 0] == 47) | (last == 47) | (sizes == 0) | (sizes > 63)
               | ((grid == 0) & inside).any(axis=1) | (doubled & inside).any(axis=1)
               | ((grid == 46) & opening & inside).any(axis=1))
    for row in rows[suspect].tolist():
        check_key(row.decode("utf-8", "surrogateescape"))


def check_keys(keys: list[str]) -> None:
    """``check_key`` for many keys at once: substring scans of the joined keys, per key only
    where something looks wrong."""
    if not keys:
        return
    joined = "\n" + "\n".join(keys) + "\n"
    suspicious = (
        joined.count("\n") != len(keys) + 1  # a key holds a newline: check each
        or any(s in joined for s in ("\x00", "//", "\n/", "/\n", "\n\n", "/./", "/.\n", "\n./", "\n.\n", "/../", "/..\n", "\n../", "\n..\n"))
    )
    if suspicious:
        for key in keys:
            check_key(key)
    elif max(map(len, keys)) > 63:  # only long keys can break a byte limit
        for key in keys:
            if len(key) > 63:
                check_key(key)


class Union(Index):
    """Several indexes side by side, each under its own top-level directory name."""

    def __init__(self, members: dict[str, Index]):
        for name in members:
            size = len(name.encode("utf-8", "surrogateescape"))
            if not name or name in (".", "..") or "/" in name or "\0" in name or size > 255:
                raise RefmountError(f"source name {name!r}: a directory name must not be empty, '.' or '..', "
                                    "nor contain '/' or NUL, nor be longer than 255 bytes")
        self.members = dict(members)
        self.mtime_ns = max((m.mtime_ns for m in members.values()), default=0)

    def _split(self, path: str) -> tuple[Index | None, str]:
        name, _, rest = path.partition("/")
        return self.members.get(name), rest

    def node(self, path: str) -> Ref | Dir | None:
        if path == "":
            return Dir(2 + len(self.members))
        member, rest = self._split(path)
        return None if member is None else member.node(rest)

    def listdir(self, path: str) -> Iterator[tuple[str, bool]]:
        if path == "":
            return ((name, True) for name in self.members)
        member, rest = self._split(path)
        return iter(()) if member is None else member.listdir(rest)

    def items(self) -> Iterator[tuple[str, Ref]]:
        for name, member in self.members.items():
            for key, ref in member.items():
                yield f"{name}/{key}", ref

    def urls(self) -> Iterator[str]:
        for member in self.members.values():
            yield from member.urls()

    def metadata_keys(self) -> Iterator[str]:
        for name, member in self.members.items():
            for key in member.metadata_keys():
                yield f"{name}/{key}"

    def own_urls(self) -> Iterator[str]:
        for member in self.members.values():
            yield from member.own_urls()

    def moved(self) -> str | None:
        return "; ".join(f"{name}: {m}" for name, m in ((n, x.moved()) for n, x in self.members.items()) if m) or None

    def largest_chunk(self) -> int:
        return max((m.largest_chunk() for m in self.members.values()), default=0)

    def reserved_bytes(self) -> int:
        return sum(m.reserved_bytes() for m in self.members.values())


def build_index(entries: Iterable[tuple[str, Ref]], mtime_ns: int = 0) -> CompactIndex:
    index = CompactIndex(mtime_ns)
    for key, ref in entries:
        index.add(key, ref)
    return index.build()
