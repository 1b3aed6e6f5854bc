"""Naming a repository, a ref and a node (``icechunk-format.md`` §12).

Accepted::

    BASE|icechunk:                      branch main, the root
    BASE|icechunk:path/to/node          branch main, that node
    BASE|icechunk:@branch.NAME/path     BASE|icechunk:@tag.NAME/path     BASE|icechunk:@SNAPSHOTID/path
    BASE|icechunk://branch.NAME/path    (the URL-pipeline form; also tag.NAME and SNAPSHOTID)
    ... optionally followed by |zarr3:path, which narrows further.

Names and paths are percent-decoded; a raw ``?`` or ``#`` is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

from refmount.errors import RefmountError
from refmount.urls import location_of

SNAPSHOT_ID = re.compile(r"[0-9A-HJKMNP-TV-Z]{20}\Z")


@dataclass(frozen=True)
class Target:
    base: str
    kind: str = "branch"  # branch | tag | snapshot
    name: str = "main"
    path: str = ""  # node path inside the repository, "" for the root

    def __str__(self) -> str:
        """The canonical form (the one refmount documents)."""
        ref = self.name if self.kind == "snapshot" else f"{self.kind}.{quote(self.name, safe='')}"
        path = quote(self.path, safe="/;,:&=+$!*'()")
        return f"{self.base}|icechunk:@{ref}/{path}"


def is_pipeline(source: str) -> bool:
    return "|icechunk" in source


def parse(source: str) -> Target:
    base, _, rest = source.partition("|")
    if not base:
        raise RefmountError(f"{source!r}: no repository before '|icechunk'")
    elements = rest.split("|")
    head = elements[0]
    if head != "icechunk" and not head.startswith("icechunk:"):
        raise RefmountError(f"{source!r}: expected '|icechunk:' after the repository, found {head!r}")
    suffix = head[len("icechunk") :]
    extra = ""
    for element in elements[1:]:
        if element != "zarr3" and not element.startswith("zarr3:"):
            raise RefmountError(f"{source!r}: unknown URL pipeline element {element!r} (only '|zarr3:' may follow)")
        extra = _path(element[len("zarr3:") :], source)
    if "?" in suffix or "#" in suffix:
        raise RefmountError(f"{source!r}: '?' and '#' must be percent-encoded after 'icechunk:'")
    kind, name, path = "branch", "main", ""
    if suffix.startswith("://"):
        ref, _, path = suffix[3:].partition("/")
        kind, name = _ref(ref, source)
    elif suffix.startswith(":@"):
        ref, _, path = suffix[2:].partition("/")
        kind, name = _ref(ref, source)
    elif suffix.startswith(":"):
        path = suffix[1:]
    elif suffix:
        raise RefmountError(f"{source!r}: expected ':' after 'icechunk'")
    path = _path(path, source)
    if extra:
        path = f"{path}/{extra}" if path else extra
    return Target(location_of(base), kind, name, path)


def _ref(ref: str, source: str) -> tuple[str, str]:
    for kind in ("branch", "tag"):
        if ref.startswith(kind + "."):
            name = unquote(ref[len(kind) + 1 :])  # any name the spec allows: "feature%2Fx" is feature/x
            if not name:
                break
            return kind, name
    else:
        if SNAPSHOT_ID.match(ref):
            return "snapshot", ref
    raise RefmountError(f"{source!r}: invalid ref {ref!r} (use branch.NAME, tag.NAME or a 20-character snapshot id)")


def _path(raw: str, source: str) -> str:
    path = unquote(raw).strip("/")
    if path and any(part in ("", ".", "..") for part in path.split("/")):
        raise RefmountError(f"{source!r}: invalid path {path!r} inside the repository")
    return path
