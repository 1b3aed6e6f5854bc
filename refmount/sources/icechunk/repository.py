"""An Icechunk repository: version detection, refs, and immutable objects cached by id
(``icechunk-format.md`` §3, §4, §9, §11, §14).

Only the ref (``repo`` in spec v2, ``refs/*/ref.json`` in v1) is ever re-read; snapshots and
manifests are immutable, so one ``Repository`` object keeps them across refreshes.
"""

from __future__ import annotations

from urllib.parse import unquote
import re
import threading
import time
from dataclasses import dataclass

import yaml
from cachetools import LRUCache

from refmount.errors import RefmountError
from refmount.index import load_json
from refmount.sources.icechunk.binary import REPO_INFO, Table, encode_id, flexbuffer, open_object
from refmount.sources.icechunk.objects import Manifest, Snapshot, parse_snapshot
from refmount.io.origins import Origins
from refmount.sources.icechunk.storage import Storage

SNAPSHOT_ID = re.compile(r"[0-9A-HJKMNP-TV-Z]{20}\Z")
_LEGACY_BRANCH_FILE = re.compile(r"[0-9A-HJKMNP-TV-Z]{8}\.json\Z")
MANIFEST_CACHE_BYTES = 512 << 20


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    id: str
    parent: str | None
    flushed_at: int  # microseconds since the epoch
    message: str


@dataclass(frozen=True, slots=True)
class Refs:
    branches: dict[str, str]
    tags: dict[str, str]
    deleted_tags: frozenset[str]


class _AnyTagLoader(yaml.SafeLoader):
    """``config.yaml`` tags stores (``!local_file_system /path``); their values are not needed."""


_AnyTagLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


class Repository:
    def __init__(self, base: str, origins: Origins | None = None, manifest_cache_bytes: int = MANIFEST_CACHE_BYTES):
        self.base = base
        self.storage = Storage(base, origins or Origins())
        self._lock = threading.Lock()
        self._snapshots: LRUCache = LRUCache(maxsize=64)
        self._manifests: LRUCache = LRUCache(maxsize=manifest_cache_bytes, getsizeof=lambda m: m.nbytes)
        self._oversized: dict[int, tuple[str, object]] = {}  # per cache: the last object larger than it
        self._repo_info: tuple[bytes, Table] | None = None
        self.spec = self._detect()

    # -- detection (§11) --------------------------------------------------------------
    def _detect(self) -> int:
        for attempt in range(2):
            data = self.storage.get("repo")
            if data is not None:
                self._repo_info = self._parse_repo(data)
                return 2
            if self.storage.get("refs/branch.main/ref.json") is not None:
                return 1
            if any(_LEGACY_BRANCH_FILE.match(n) for n in self.storage.names("refs/branch.main")):
                raise RefmountError(f"{self.base}: written by icechunk 0.1.x, a format no current icechunk release reads; "
                                    "the repository must be re-ingested with icechunk >= 0.2")
            if self.storage.names("refs") and self.storage.names("snapshots"):
                return 1  # a v1 repository without branch main: ref resolution reports it
            if attempt or self.storage.protocol not in ("s3", "s3a") or "/" in self.storage.path.partition("://")[2].strip("/"):
                break
            self.storage.rooted = True  # empty-prefix S3 repositories before 2.1: keys start with '/'
        self.storage.rooted = False
        raise RefmountError(f"{self.base}: not an Icechunk repository (no 'repo' file and no refs/branch.main/ref.json)")

    def _parse_repo(self, data: bytes) -> tuple[bytes, Table]:
        _, payload = open_object(data, REPO_INFO, f"{self.base}/repo")
        return payload, Table.root(payload)

    def refresh(self) -> None:
        """Read the mutable ref again (spec v2: the ``repo`` file; v1 reads ``ref.json`` each time)."""
        if self.spec == 2:
            self._info(fresh=True)

    def _info(self, fresh: bool = False) -> Table:
        if fresh or self._repo_info is None:
            data = self.storage.get("repo")
            if data is None:
                raise RefmountError(f"{self.base}/repo: missing")
            self._repo_info = self._parse_repo(data)
        return self._repo_info[1]

    # -- refs ---------------------------------------------------------------------------
    def refs(self, fresh: bool = False) -> Refs:
        if self.spec == 2:
            info = self._info(fresh)
            ids = [encode_id(t.struct(0, 12) or b"") for t in info.tables(4)]
            pick = lambda slot: {t.string(0): ids[t.u32(1)] for t in info.tables(slot)}  # noqa: E731
            return Refs(pick(2), pick(1), frozenset(info.strings(3)))
        branches, tags, deleted = {}, {}, set()
        for entry in self.storage.names("refs"):
            kind, _, name = entry.partition(".")
            name = unquote(name)  # spec v1 stores names percent-encoded (ünïcode as %C3%BCn%C3%AFcode)
            if kind == "branch":
                branches[name] = self._ref_file(entry)
            elif kind == "tag":
                if self.storage.get(f"refs/{entry}/ref.json.deleted") is not None:
                    deleted.add(name)
                else:
                    tags[name] = self._ref_file(entry)
        return Refs({k: v for k, v in branches.items() if v}, {k: v for k, v in tags.items() if v}, frozenset(deleted))

    def _ref_file(self, entry: str) -> str | None:
        data = self.storage.get(f"refs/{entry}/ref.json")
        if data is None:
            return None
        try:
            snapshot = load_json(data)["snapshot"]
        except (ValueError, KeyError, TypeError):
            raise RefmountError(f"{self.base}/refs/{entry}/ref.json: malformed ref") from None
        if not isinstance(snapshot, str) or not SNAPSHOT_ID.match(snapshot):
            raise RefmountError(f"{self.base}/refs/{entry}/ref.json: malformed snapshot id {snapshot!r}")
        return snapshot

    def resolve(self, kind: str, name: str, fresh: bool = False) -> str:
        """The snapshot id a branch, tag or snapshot id names; errors say what is missing."""
        if kind == "snapshot":
            if not SNAPSHOT_ID.match(name):
                raise RefmountError(f"{name!r} is not a snapshot id (20 characters of Crockford base32)")
            if not (self.spec == 2 and name in {s.id for s in self.history()}):
                self._immutable(self._snapshots, "snapshot", name, parse_snapshot, missing=f"{self.base}: no snapshot {name}")
            return name
        if self.spec == 1:  # one read, no listing, unless the name is unknown
            if kind == "tag" and self.storage.get(f"refs/tag.{name}/ref.json.deleted") is not None:
                raise RefmountError(f"{self.base}: tag {name!r} was deleted")
            found = self._ref_file(f"{kind}.{name}")
            if found is not None:
                return found
        refs = self.refs(fresh)
        table = refs.branches if kind == "branch" else refs.tags
        if name in table:
            return table[name]
        if kind == "tag" and name in refs.deleted_tags:
            raise RefmountError(f"{self.base}: tag {name!r} was deleted")
        known = sorted(table)
        raise RefmountError(f"{self.base}: no {kind} {name!r} (known: {', '.join(known) or 'none'})")

    def history(self) -> list[SnapshotInfo]:
        """Every snapshot the repository knows (v2: its list; v1: the ancestry of every ref)."""
        if self.spec == 2:
            info = self._info()
            entries = info.tables(4)
            ids = [encode_id(t.struct(0, 12) or b"") for t in entries]
            parents = [t.i32(1) for t in entries]  # an index into the list; -1: none (absent: 0)
            return [SnapshotInfo(ids[i], ids[p] if 0 <= p < len(ids) and p != i else None, t.u64(2), t.string(3) or "")
                    for i, (t, p) in enumerate(zip(entries, parents))]
        refs = self.refs()
        seen: dict[str, SnapshotInfo] = {}
        for head in list(refs.branches.values()) + list(refs.tags.values()):
            sid = head
            while sid and sid not in seen:
                snap = self.snapshot(sid)
                seen[sid] = SnapshotInfo(sid, snap.parent, snap.flushed_at, snap.message)
                sid = snap.parent
        return sorted(seen.values(), key=lambda s: s.id)

    # -- immutable objects --------------------------------------------------------------
    def snapshot(self, sid: str) -> Snapshot:
        return self._immutable(self._snapshots, "snapshot", sid, parse_snapshot)

    def manifest(self, mid: str) -> Manifest:
        return self._immutable(self._manifests, "manifest", mid, Manifest)

    def _immutable(self, cache: LRUCache, kind: str, oid: str, parse, missing: str | None = None):
        """``snapshots/ID`` or ``manifests/ID``, parsed once and kept while the cache allows."""
        with self._lock:
            found = cache.get(oid)
            held = self._oversized.get(id(cache))
            if found is None and held is not None and held[0] == oid:
                found = held[1]
        if found is None:
            data = self.storage.get(f"{kind}s/{oid}")
            if data is None:
                raise RefmountError(missing or f"{self.base}: {kind} {oid} is missing (expired or garbage-collected?)")
            try:
                found = parse(data, f"{self.base}/{kind}s/{oid}")
            except RefmountError:
                raise
            except Exception as exc:  # a corrupt object: one line naming it, never a traceback
                raise RefmountError(f"{self.base}/{kind}s/{oid}: corrupt {kind}: {type(exc).__name__}: {exc}") from None
            with self._lock:
                if cache.getsizeof(found) <= cache.maxsize:
                    cache[oid] = found
                else:  # larger than the whole cache: held alone, so its next lookups do not parse it again
                    self._oversized[id(cache)] = (oid, found)
        return found

    def chunk_url(self, chunk_id: str) -> str:
        return self.storage.url(f"chunks/{chunk_id}")

    def describe(self, showing: str, authorised) -> dict:
        """For ``refmount inspect``: refs, every snapshot, virtual chunk containers."""
        refs = self.refs()
        stamp = lambda us: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(us / 1e6))  # noqa: E731
        history = sorted(self.history(), key=lambda s: s.flushed_at, reverse=True)
        return {
            "repository": self.base, "spec": self.spec, "showing": showing,
            "branches": dict(sorted(refs.branches.items())), "tags": dict(sorted(refs.tags.items())),
            "deleted_tags": sorted(refs.deleted_tags),
            "history": [{"id": s.id, "parent": s.parent, "time": stamp(s.flushed_at), "message": s.message} for s in history],
            "virtual_containers": [{"prefix": p, "authorised": authorised(p)} for p in sorted(self.containers())],
        }

    # -- configuration (§9) ---------------------------------------------------------------
    def containers(self) -> dict[str, str | None]:
        """Virtual chunk containers the repository declares: ``url_prefix -> name``."""
        if self.spec == 2:
            config = flexbuffer(self._info().bytes(9)) or {}
        else:
            data = self.storage.get("config.yaml")
            try:
                config = yaml.load(data, Loader=_AnyTagLoader) if data else {}
            except yaml.YAMLError as exc:
                raise RefmountError(f"{self.base}/config.yaml: {str(exc).splitlines()[0]}") from None
        found = {}
        for key, value in ((config or {}).get("virtual_chunk_containers") or {}).items():
            value = value if isinstance(value, dict) else {}
            prefix = value.get("url_prefix") or key
            if isinstance(prefix, str):
                found[prefix] = value.get("name") if isinstance(value.get("name"), str) else None
        return found
