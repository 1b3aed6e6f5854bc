"""Origin policy: which URLs a reference set may make the daemon read.

Reference files are untrusted input. With ``--allow-origin`` prefixes, every original must lie
under one of them. Without, a *shared* daemon (``allow_other``, or a system service run as
root) refuses local files, protocols outside a fixed set, and HTTP
targets on loopback, link-local, private or unspecified addresses -- otherwise a reference set
could publish ``/etc/shadow`` or a cloud metadata endpoint to every user.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
from urllib.parse import unquote, urlsplit

from refmount.urls import split_protocol

SHARED_PROTOCOLS = frozenset({"http", "https", "s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


DEFAULT_PORTS = {"http": 80, "https": 443}


def canonical(url: str) -> tuple[str, str, int | None, tuple[str, ...]] | None:
    """``(scheme, host, port, path segments)`` of a URL as a server would resolve it: host
    lower-cased, default ports filled in, the path percent-decoded and ``.``/``..`` resolved.
    None for a URL with user information (``http://allowed.org@elsewhere/``) or a bad port."""
    parts = urlsplit(url)
    if "@" in parts.netloc:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    segments: list[str] = []
    for segment in unquote(parts.path).split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    return scheme, (parts.hostname or "").lower(), port or DEFAULT_PORTS.get(scheme), tuple(segments)


def _url_under(url: str, prefix: str) -> bool:
    """``url`` lies under ``prefix``: same scheme, host and port, and the prefix's path
    segments begin the URL's (after normalisation -- never a match on text)."""
    want, got = canonical(prefix), canonical(url)
    if want is None or got is None or want[:3] != got[:3]:
        return False
    return got[3][: len(want[3])] == want[3]


class OriginPolicy:
    def __init__(self, allow: list[str] | None = None, shared: bool = False):
        self.shared = shared
        self._files: list[str] = []
        self._urls: list[str] = []
        for prefix in allow or []:
            protocol, path = split_protocol(prefix)
            if protocol == "file":
                self._files.append(os.path.realpath(path))
            else:
                self._urls.append(prefix)
        self._trusted: list[str] = []
        self._decided: dict[str, str | None] = {}
        self._hosts: dict[str, str | None] = {}
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return self.shared or bool(self._files or self._urls)

    def trust(self, prefixes) -> None:
        """Let URLs under ``prefixes`` through whatever the rules: objects of the source the
        user named (an Icechunk repository's own chunk files)."""
        for prefix in prefixes:
            protocol, path = split_protocol(prefix)
            self._trusted.append(os.path.realpath(path) if protocol == "file" else prefix)
        self._decided.clear()

    def problem(self, url: str) -> str | None:
        """Why ``url`` may not be read, or None. Decisions are remembered per URL."""
        if not self.active:
            return None
        with self._lock:
            if url in self._decided:
                return self._decided[url]
        answer = self._decide(url)
        with self._lock:
            self._decided[url] = answer
        return answer

    def local_problem(self, real: str) -> str | None:
        """Why the local file whose real path (that of the opened descriptor) is ``real`` may not
        be read, or None. Not remembered: a symlink may be swapped at any time."""
        if not self.active or any(_under(real, p) for p in self._trusted) or any(_under(real, p) for p in self._files):
            return None
        if self._files or self._urls:
            return f"opened as {real}, which is not under any allowed origin (--allow-origin)"
        return "local files are refused when other users can read the mount (--allow-other or a system service)"

    def _decide(self, url: str) -> str | None:
        protocol, path = split_protocol(url)
        if protocol != "file" and canonical(url) is None:
            return "a URL with user information (user@host) or a bad port is refused"
        if self._trusted:
            real = os.path.realpath(path) if protocol == "file" else url
            if any(_under(real, p) if protocol == "file" else _url_under(url, p) for p in self._trusted):
                return None
        if self._files or self._urls:
            if protocol == "file":
                if any(_under(os.path.realpath(path), p) for p in self._files):
                    return None
            elif any(_url_under(url, p) for p in self._urls):
                return None
            return "not under any allowed origin (--allow-origin)"
        if protocol == "file":
            return "local files are refused when other users can read the mount (--allow-other or a system service); allow a directory with --allow-origin"
        if protocol not in SHARED_PROTOCOLS:
            return f"protocol {protocol!r} is refused when other users can read the mount (--allow-other or a system service)"
        if protocol in ("http", "https"):
            return self._host_problem(urlsplit(url).hostname or "")
        return None

    def _host_problem(self, host: str) -> str | None:
        with self._lock:
            if host in self._hosts:
                return self._hosts[host]
        try:
            addresses = {info[4][0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
        except OSError:
            addresses = set()  # unresolvable: the read fails on its own
        answer = None
        for address in sorted(addresses):
            ip = ipaddress.ip_address(address.split("%")[0])
            if ip.is_loopback or ip.is_link_local or ip.is_private or ip.is_unspecified or ip.is_multicast:
                answer = (
                    f"host {host} is a loopback, link-local or private address ({ip}); "
                    "refused when other users can read the mount (--allow-other or a system service) unless allowed with --allow-origin"
                )
                break
        with self._lock:
            self._hosts[host] = answer
        return answer


def is_shared(allow_other: bool) -> bool:
    """A daemon whose mount other users can read: with ``allow_other``, or a system service
    (root under systemd, whose mounts serve a machine). Root mounting for itself alone is not:
    only root can read such a mount, and root can read the originals anyway."""
    return allow_other or (os.geteuid() == 0 and "INVOCATION_ID" in os.environ)
