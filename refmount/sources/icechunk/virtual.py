"""Virtual chunk locations to URLs refmount may read (``icechunk-format.md`` §9).

A location is read only when a virtual chunk container covers it -- declared by the
repository, or given by the user -- and the user authorised that container
(``--authorize-virtual PREFIX``, or ``--relocate PREFIX=NEWPREFIX`` for data that moved).
``vcc://NAME/path`` locations resolve against the container named NAME. Object keys are
percent-decoded; ``file://`` paths are normalised and must stay inside their container.
"""

from __future__ import annotations

import posixpath
import threading
from urllib.parse import unquote, urlsplit

from cachetools import LRUCache

AUTHORIZE_HINT = "--authorize-virtual"


def _covers(prefix: str, url: str) -> bool:
    return url.startswith(prefix) and (prefix.endswith("/") or len(url) == len(prefix) or url[len(prefix)] == "/")


class VirtualAccess:
    def __init__(self, declared: dict[str, str | None], authorized: list[str] | tuple = (), relocate: dict[str, str] | None = None):
        self.relocate = {_dir(k): _dir(v if "://" in v else "file://" + v) for k, v in (relocate or {}).items()}
        self.authorized = [_dir(p) for p in authorized] + list(self.relocate)
        self.declared = dict(declared)
        for prefix in self.authorized:
            self.declared.setdefault(prefix, None)
        self.by_name = {name: prefix for prefix, name in self.declared.items() if name}
        self._memo: LRUCache = LRUCache(maxsize=65536)
        self._lock = threading.Lock()

    def unauthorized(self) -> list[str]:
        """Declared containers the user did not authorise."""
        return sorted(p for p in self.declared if not any(_covers(a, p) for a in self.authorized))

    def origins(self) -> list[str]:
        """Where authorised containers are read from (relocations applied)."""
        found = (self.resolve(prefix)[0] for prefix in self.declared if prefix not in self.unauthorized())
        return sorted({url for url in found if url})

    def resolve(self, location: str) -> tuple[str | None, str | None]:
        """``(url, None)`` to read, or ``(None, why not)``."""
        with self._lock:
            answer = self._memo.get(location)
        if answer is None:
            answer = self._resolve(location)
            with self._lock:
                self._memo[location] = answer
        return answer

    def _resolve(self, location: str) -> tuple[str | None, str | None]:
        if location.startswith("vcc://"):
            name, _, rest = location[len("vcc://") :].partition("/")
            prefix = self.by_name.get(name)
            if prefix is None:
                return None, f"no virtual chunk container named {name!r} for {location}"
            location = prefix + rest
        scheme = location.partition("://")[0].lower()
        location = scheme + location[len(scheme) :]
        matches = [p for p in self.declared if _covers(p, location)]
        if not matches:
            return None, f"no virtual chunk container covers {location}"
        container = max(matches, key=len)
        if not any(_covers(a, container) for a in self.authorized):
            return None, f"virtual chunk container {container} is not authorised (mount with {AUTHORIZE_HINT} {container})"
        for old, new in self.relocate.items():
            if _covers(old, location):
                container = new + container[len(old) :] if _covers(old, container) else new
                location = new + location[len(old) :]
                break
        return _url(location, container)


_FSSPEC_NAMES = {"gcs": "gs", "azure": "az"}


def _dir(prefix: str) -> str:
    return prefix if prefix.endswith("/") else prefix + "/"


def _url(location: str, container: str) -> tuple[str | None, str | None]:
    parts = urlsplit(location)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return location.partition("#")[0], None
    if scheme == "file":
        path = posixpath.normpath(unquote(parts.path))
        root = posixpath.normpath(unquote(urlsplit(container).path))
        if not path.startswith("/"):
            return None, f"virtual chunk location {location} is not an absolute path"
        if not (path == root or path.startswith(root.rstrip("/") + "/")):
            return None, f"virtual chunk location {location} escapes its container {container}"
        return path, None
    if not parts.netloc:
        return None, f"virtual chunk location {location} has no bucket or host"
    scheme = _FSSPEC_NAMES.get(scheme, scheme)
    return f"{scheme}://{parts.netloc}/{unquote(parts.path[1:])}", None  # keys verbatim: no normalising
