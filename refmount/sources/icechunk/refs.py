"""``--all-refs``: every branch, tag and snapshot of a repository side by side, each a
complete read-only tree, like a filesystem's snapshot directory::

    branches/NAME/...   tags/NAME/...   snapshots/ID/...

Trees are built on first use; refs are read once per tree (a refresh builds a new one).
"""

from __future__ import annotations

import threading
import time
from typing import Iterator

from refmount.errors import FetchError, RefmountError
from refmount.index import Dir, Ref
from refmount.sources.icechunk.repository import Repository
from refmount.sources.icechunk.tree import RepositoryIndex, SnapshotIndex
from refmount.sources.icechunk.virtual import VirtualAccess

KINDS = ("branches", "tags", "snapshots")


class AllRefsIndex(RepositoryIndex):
    def __init__(self, repo: Repository, access: VirtualAccess, root: str = ""):
        self.repo, self.access, self.root = repo, access, root
        self.refs = repo.refs()
        self._history: list[str] | None = None
        self._trees: dict[tuple[str, str], SnapshotIndex | None] = {}
        self._lock = threading.Lock()
        self.mtime_ns = time.time_ns()

    def _names(self, kind: str) -> list[str]:
        if kind == "branches":
            return sorted(n for n in self.refs.branches if n not in (".", ".."))
        if kind == "tags":
            return sorted(n for n in self.refs.tags if n not in (".", ".."))
        if self._history is None:
            try:
                self._history = sorted(s.id for s in self.repo.history())
            except RefmountError as exc:
                raise FetchError(str(exc)) from None
        return self._history

    def _tree(self, kind: str, name: str) -> SnapshotIndex | None:
        key = (kind, name)
        with self._lock:
            if key in self._trees:
                return self._trees[key]
        if kind == "branches":
            sid = self.refs.branches.get(name)
        elif kind == "tags":
            sid = self.refs.tags.get(name)
        else:
            sid = name if name in self._names("snapshots") else None
        tree = None
        if sid is not None:
            try:
                snapshot = self.repo.snapshot(sid)
                if not self.root or self.root in snapshot.nodes:
                    tree = SnapshotIndex(self.repo, snapshot, self.access, self.root)
            except RefmountError as exc:
                raise FetchError(str(exc)) from None
        with self._lock:
            self._trees[key] = tree
        return tree

    def _split(self, path: str) -> tuple[str, str | None, str]:
        """``(kind, ref name, path inside its tree)``; a ref name may hold ``/`` (``feature/x``
        is ``branches/feature/x/``), the longest name that fits wins. A name of None with a
        ``rest``: a directory of names (``branches/feature``), or nothing."""
        kind, _, rest = path.partition("/")
        if kind not in KINDS or not rest:
            return kind, None, rest
        best = None
        for name in self._names(kind):
            if (rest == name or rest.startswith(name + "/")) and (best is None or len(name) > len(best)):
                best = name
        if best is None:
            return kind, None, rest
        return kind, best, rest[len(best) + 1 :]

    def _below(self, kind: str, prefix: str) -> list[str]:
        """The next path segment of every ref name under ``prefix`` (a directory of names)."""
        start = prefix + "/" if prefix else ""
        return sorted({n[len(start):].split("/", 1)[0] for n in self._names(kind) if n.startswith(start)
                       and (not self.root or self._tree(kind, n) is not None)})

    def node(self, path: str) -> Ref | Dir | None:
        if path == "":
            return Dir(2 + len(KINDS))
        kind, name, rest = self._split(path)
        if kind not in KINDS:
            return None
        if name is None:
            below = self._below(kind, rest)
            return Dir(2 + len(below)) if below or not rest else None
        tree = self._tree(kind, name)
        return None if tree is None else tree.node(rest)

    def listdir(self, path: str) -> Iterator[tuple[str, bool]]:
        if path == "":
            return ((k, True) for k in KINDS)
        kind, name, rest = self._split(path)
        if kind not in KINDS:
            return iter(())
        if name is None:
            return ((n, True) for n in self._below(kind, rest))
        tree = self._tree(kind, name)
        return iter(()) if tree is None else tree.listdir(rest)

    def _each(self) -> Iterator[tuple[str, SnapshotIndex]]:
        for kind in KINDS:
            for name in self._names(kind):
                tree = self._tree(kind, name)
                if tree is not None:
                    yield f"{kind}/{name}", tree

    def items(self) -> Iterator[tuple[str, Ref]]:
        for prefix, tree in self._each():
            for key, ref in tree.items():
                yield f"{prefix}/{key}", ref

    def metadata_keys(self) -> Iterator[str]:
        for prefix, tree in self._each():
            for key in tree.metadata_keys():
                yield f"{prefix}/{key}"

    def describe(self) -> dict:
        return self._describe("every branch, tag and snapshot")

    def moved(self) -> str | None:
        try:
            now = self.repo.refs(fresh=True)
        except RefmountError:
            return None
        return None if now == self.refs else "the repository's refs changed"
