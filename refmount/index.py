"""The one index model every source produces.

A tree of read-only files. Each file is a reference:

* ``Inline(data)``          -- bytes held in the index;
* ``Range(url, offset, length)`` -- ``length`` bytes of the object at ``url`` from ``offset``;
* ``Whole(url)``            -- the whole object at ``url`` (size learned once, from the origin).

Directories are implicit (the ``/``-separated prefixes of keys). The FUSE layer only sees the
``Index`` interface, so compact in-memory sets, lazy Parquet sets and Icechunk manifests are all
just other implementations of it.
"""

from __future__ import annotations

import bisect
import re
from array import array
from dataclasses import dataclass
from typing import Iterable, Iterator

from .errors import RefmountError


@dataclass(frozen=True, slots=True)
class Inline:
    data: bytes


@dataclass(frozen=True, slots=True)
class Range:
    url: str
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class Whole:
    url: str


Ref = Inline | Range | Whole


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
        """Every file with its reference, in key order (for ``inspect`` and tests)."""
        raise NotImplementedError

    def urls(self) -> Iterator[str]:
        """Distinct origin URLs known without expensive work (to check origins at mount)."""
        seen = set()
        for _, ref in self.items():
            url = getattr(ref, "url", None)
            if url is not None and url not in seen:
                seen.add(url)
                yield url


_BAD_KEY = re.compile(r"(?:^|/)\.{1,2}(?:/|$)|//|^/|/$|\x00")
_NEXT_AFTER_SLASH = chr(ord("/") + 1)  # keys "d/..." sort before "d0": skip a subtree with it


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


class CompactIndex(Index):
    """A sorted, compact in-memory index (JSON sets of millions of keys).

    Keys are one sorted list; each key's reference is a kind code plus integer columns
    (URL id, offset, length) in ``array`` storage, URLs interned in a table. Lookup is a
    binary search; listing a directory costs O(log n) per entry, never a scan of the subtree.
    """

    INLINE, RANGE, WHOLE = 0, 1, 2

    def __init__(self, mtime_ns: int = 0):
        self.mtime_ns = mtime_ns
        self._keys: list[str] = []
        self._kind = bytearray()
        self._a = array("q")  # url id, or inline id
        self._off = array("q")
        self._len = array("q")
        self._urls: list[str] = []
        self._url_ids: dict[str, int] = {}
        self._inline: list[bytes] = []
        self._dirs: dict[str, int] = {"": 2}
        self._built = False

    # -- building ---------------------------------------------------------------------
    def add(self, key: str, ref: Ref) -> None:
        """Add or replace ``key`` (last one wins, as with a JSON object)."""
        self._keys.append(key)
        if isinstance(ref, Inline):
            self._kind.append(self.INLINE)
            self._a.append(len(self._inline))
            self._inline.append(ref.data)
            self._off.append(0)
            self._len.append(len(ref.data))
            return
        uid = self._url_ids.get(ref.url)
        if uid is None:
            uid = self._url_ids[ref.url] = len(self._urls)
            self._urls.append(ref.url)
        self._a.append(uid)
        if isinstance(ref, Range):
            self._kind.append(self.RANGE)
            self._off.append(ref.offset)
            self._len.append(ref.length)
        else:
            self._kind.append(self.WHOLE)
            self._off.append(0)
            self._len.append(-1)

    def build(self) -> "CompactIndex":
        """Sort, drop replaced duplicates, validate keys and derive directories."""
        n = len(self._keys)
        keys = self._keys
        order = sorted(range(n), key=keys.__getitem__)
        # keep the last added of equal keys
        keep = [i for j, i in enumerate(order) if j + 1 == n or keys[order[j + 1]] != keys[i]]
        if len(keep) != n or keep != list(range(n)):
            self._keys = [keys[i] for i in keep]
            self._kind = bytearray(self._kind[i] for i in keep)
            self._a = array("q", (self._a[i] for i in keep))
            self._off = array("q", (self._off[i] for i in keep))
            self._len = array("q", (self._len[i] for i in keep))
        del self._url_ids
        self._derive_dirs()
        self._built = True
        return self

    def _derive_dirs(self) -> None:
        dirs: dict[str, int] = {"": 2}
        last_parent = None
        for key in self._keys:
            check_key(key)
            parent = key.rpartition("/")[0]
            if parent == last_parent:
                continue
            last_parent = parent
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
    def _find(self, key: str) -> int | None:
        i = bisect.bisect_left(self._keys, key)
        if i < len(self._keys) and self._keys[i] == key:
            return i
        return None

    def _ref(self, i: int) -> Ref:
        kind = self._kind[i]
        if kind == self.INLINE:
            return Inline(self._inline[self._a[i]])
        url = self._urls[self._a[i]]
        if kind == self.RANGE:
            return Range(url, self._off[i], self._len[i])
        return Whole(url)

    def node(self, path: str) -> Ref | Dir | None:
        nlink = self._dirs.get(path)
        if nlink is not None:
            return Dir(nlink)
        i = self._find(path)
        return None if i is None else self._ref(i)

    def listdir(self, path: str) -> Iterator[tuple[str, bool]]:
        keys = self._keys
        prefix = path + "/" if path else ""
        cut = len(prefix)
        i = bisect.bisect_left(keys, prefix)
        n = len(keys)
        while i < n and keys[i].startswith(prefix):
            rest = keys[i][cut:]
            slash = rest.find("/")
            if slash < 0:
                yield rest, False
                i += 1
            else:
                name = rest[:slash]
                yield name, True
                i = bisect.bisect_left(keys, prefix + name + _NEXT_AFTER_SLASH, i)

    def items(self) -> Iterator[tuple[str, Ref]]:
        for i, key in enumerate(self._keys):
            yield key, self._ref(i)

    def urls(self) -> Iterator[str]:
        return iter(self._urls)

    def __len__(self) -> int:
        return len(self._keys)


class Union(Index):
    """Several indexes side by side, each under its own top-level directory name."""

    def __init__(self, members: dict[str, Index]):
        for name in members:
            check_key(name)
            if "/" in name:
                raise RefmountError(f"source name {name!r} must not contain '/'")
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


def build_index(entries: Iterable[tuple[str, Ref]], mtime_ns: int = 0) -> CompactIndex:
    index = CompactIndex(mtime_ns)
    for key, ref in entries:
        index.add(key, ref)
    return index.build()
