"""One snapshot of a repository as an ``Index``: ``zarr.json`` per node, chunk keys
``c/i/j...`` for initialised chunks only, exact sizes from manifests (``icechunk-format.md`` §8).

Nothing is enumerated eagerly: a chunk lookup opens only the manifest whose extents cover
it and binary-searches it; a chunk directory lists by skipping through the sorted references.
"""

from __future__ import annotations

import struct
from typing import Iterator

from refmount.errors import FetchError, RefmountError
from refmount.index import Dir, Index, Inline, Range, Ref, Unreadable
from refmount.sources.icechunk.objects import ChunkRef, Node, Snapshot
from refmount.sources.icechunk.repository import Repository
from refmount.sources.icechunk.virtual import VirtualAccess

MAX_OFFSET = 1 << 63  # byte positions are signed 64-bit (pread, HTTP)


def _coords(parts: list[str]) -> tuple[int, ...] | None:
    out = []
    for part in parts:
        if not (part.isascii() and part.isdigit()) or (len(part) > 1 and part[0] == "0"):
            return None  # only canonical decimal integers name a chunk
        out.append(int(part))
    return tuple(out)


class RepositoryIndex(Index):
    """What every tree of a repository shares: its origins and its description."""

    repo: Repository
    access: VirtualAccess

    def urls(self) -> Iterator[str]:
        return iter(self.access.origins())

    def own_urls(self) -> Iterator[str]:
        yield self.repo.chunk_url("")

    def _describe(self, showing: str) -> dict:
        unauthorized = self.access.unauthorized()
        return self.repo.describe(showing, lambda prefix: prefix not in unauthorized)


class SnapshotIndex(RepositoryIndex):
    def __init__(self, repo: Repository, snapshot: Snapshot, access: VirtualAccess, root: str = "",
                 follow: str | None = None):
        self.repo, self.snapshot, self.access, self.root = repo, snapshot, access, root
        self.follow = follow  # a branch name whose head this tree shows
        self.mtime_ns = snapshot.flushed_at * 1000
        if root and root not in snapshot.nodes:
            raise RefmountError(f"{repo.base}: no group or array {root!r} in snapshot {snapshot.id}")

    def _full(self, path: str) -> str:
        if not self.root:
            return path
        return f"{self.root}/{path}" if path else self.root

    # -- the Index interface -------------------------------------------------------------
    def node(self, path: str) -> Ref | Dir | None:
        full = self._full(path)
        nodes = self.snapshot.nodes
        node = nodes.get(full)
        if node is not None:
            return Dir(2 + len(self.snapshot.children.get(full, ())) + (node.is_array and node.ndim > 0))
        if full == "":  # the empty first snapshot has no root node: still a directory
            return Dir(2)
        parent, _, leaf = full.rpartition("/")
        if leaf == "zarr.json" and parent in nodes:
            return Inline(nodes[parent].user_data)
        array, rest = self._array_of(full)
        if array is None or not rest or rest[0] != "c":
            return None
        coords = _coords(rest[1:])
        ndim = array.ndim
        if coords is None or len(coords) > ndim:
            return None
        if len(coords) == ndim:
            found = self._find(array, coords)
            return None if found is None else self._ref(found)
        if coords and not self._next(array, coords, limit=1):
            return None
        return Dir(2 if len(coords) == ndim - 1 else 1)  # 1: subdirectories not counted

    def listdir(self, path: str) -> Iterator[tuple[str, bool]]:
        full = self._full(path)
        node = self.snapshot.nodes.get(full)
        if node is not None:
            entries = [(name, True) for name in self.snapshot.children.get(full, ())]
            entries.append(("zarr.json", False))
            if node.is_array:
                if node.ndim:
                    entries.append(("c", True))
                elif self._find(node, ()) is not None:
                    entries.append(("c", False))
            return iter(sorted(entries))
        array, rest = self._array_of(full)
        if array is None or not rest or rest[0] != "c":
            return iter(())
        coords = _coords(rest[1:])
        if coords is None or len(coords) >= array.ndim:
            return iter(())
        leaf = len(coords) == array.ndim - 1
        return ((str(v), not leaf) for v in self._next(array, coords))

    def items(self) -> Iterator[tuple[str, Ref]]:
        for path in sorted(self.snapshot.nodes):
            if not self._inside(path):
                continue
            node = self.snapshot.nodes[path]
            rel = path[len(self.root) :].lstrip("/") if self.root else path
            prefix = f"{rel}/" if rel else ""
            yield prefix + "zarr.json", Inline(node.user_data)
            if node.is_array:
                for mid, _ in node.manifests:
                    for coords, chunk in self.repo.manifest(mid).refs(node.id):
                        yield prefix + "/".join(("c", *map(str, coords))), self._ref(chunk)

    def metadata_keys(self) -> Iterator[str]:
        for path in sorted(self.snapshot.nodes):
            if self._inside(path):
                rel = path[len(self.root) :].lstrip("/") if self.root else path
                yield f"{rel}/zarr.json" if rel else "zarr.json"

    def moved(self) -> str | None:
        if self.follow is None:
            return None
        try:
            head = self.repo.resolve("branch", self.follow, fresh=True)
        except RefmountError as exc:
            return None if "no branch" not in str(exc) else f"branch {self.follow!r} is gone"
        return None if head == self.snapshot.id else f"branch {self.follow!r} moved to {head}"

    def describe(self) -> dict:
        where = f"branch {self.follow} at " if self.follow else ""
        showing = f"{where}snapshot {self.snapshot.id}" + (f", node {self.root}" if self.root else "")
        return self._describe(showing)

    # -- helpers -----------------------------------------------------------------------
    def _inside(self, path: str) -> bool:
        return not self.root or path == self.root or path.startswith(self.root + "/")

    def _array_of(self, full: str) -> tuple[Node | None, list[str]]:
        parts = full.split("/")
        nodes = self.snapshot.nodes
        for i in range(len(parts) - 1, -1, -1):
            node = nodes.get("/".join(parts[:i]))
            if node is not None:
                return (node if node.is_array else None), parts[i:]
        return None, parts

    def _covering(self, array: Node, coords: tuple[int, ...]):
        for mid, extents in array.manifests:
            if all(lo <= c < hi for c, (lo, hi) in zip(coords, extents)):
                yield self.repo.manifest(mid)

    def _find(self, array: Node, coords: tuple[int, ...]) -> ChunkRef | None:
        try:
            for manifest in self._covering(array, coords):
                found = manifest.find(array.id, coords)
                if found is not None:
                    return found
        except RefmountError as exc:  # a missing or malformed manifest: that read fails, the mount lives
            raise FetchError(str(exc)) from None
        except (ValueError, IndexError, KeyError, TypeError, struct.error, UnicodeDecodeError) as exc:
            raise FetchError(f"{self.repo.base}: a manifest of array {array.path!r} is corrupt: {type(exc).__name__}: {exc}") from None
        return None

    def _next(self, array: Node, prefix: tuple[int, ...], limit: int | None = None) -> list[int]:
        values: set[int] = set()
        try:
            for manifest in self._covering(array, prefix):
                values.update(manifest.next_values(array.id, prefix, limit))
                if limit and values:
                    break
        except RefmountError as exc:
            raise FetchError(str(exc)) from None
        except (ValueError, IndexError, KeyError, TypeError, struct.error, UnicodeDecodeError) as exc:
            raise FetchError(f"{self.repo.base}: a manifest of array {array.path!r} is corrupt: {type(exc).__name__}: {exc}") from None
        return sorted(values)

    def _ref(self, chunk: ChunkRef) -> Ref:
        if chunk.kind == "inline":
            return Inline(chunk.data)
        if not 0 <= chunk.offset < MAX_OFFSET - chunk.length:  # lengths are unsigned in the format
            return Unreadable(min(chunk.length, MAX_OFFSET - 1), f"the manifest gives offset {chunk.offset} and length "
                              f"{chunk.length}, past 2**63")
        if chunk.kind == "native":
            return Range(self.repo.chunk_url(chunk.chunk_id), chunk.offset, chunk.length)
        url, problem = self.access.resolve(chunk.location)
        if url is None:
            return Unreadable(chunk.length, problem)
        check = f"etag:{chunk.etag}" if chunk.etag else (f"mtime:{chunk.last_modified}" if chunk.last_modified else "")
        return Range(url, chunk.offset, chunk.length, check)
