"""URLs in reference sets: relative resolution and protocol split.

Relative URLs (no scheme, not starting with ``/``) resolve against the directory holding the
reference file -- not the process working directory (a daemon's is ``/``).
"""

from __future__ import annotations

import os
import posixpath
import re

from refmount.errors import RefmountError


_IPV6_HOST = re.compile(r"^([a-z][a-z0-9+.-]*://)\[[0-9a-f:.%a-z]*\]", re.I)


def split_protocol(url: str) -> tuple[str, str]:
    """``("s3", "s3://b/k")``, ``("file", "/abs/path")``, ``("https", "https://h/p")``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "file", url
    scheme = scheme.lower()
    if scheme in ("file", "local"):
        if rest.lower().startswith("localhost/"):  # file://localhost/path is /path (RFC 8089)
            rest = rest[len("localhost"):]
        return "file", rest if rest.startswith("/") else "/" + rest
    return scheme, url


def location_of(source: str) -> str:
    """Normalise a source location: absolute local path or URL. In a URL pipeline
    (``BASE|icechunk:...``) only the base is a location."""
    if "|icechunk" in source:
        base, _, rest = source.partition("|")
        return f"{location_of(base)}|{rest}"
    if "://" in source:
        scheme, path = split_protocol(source)
        return path if scheme == "file" else source
    return os.path.abspath(os.path.expanduser(source))


def parent_of(location: str) -> str:
    """The directory URL of a reference file (``location_of`` form), with a trailing ``/``."""
    return location.rstrip("/").rpartition("/")[0] + "/"


def resolve(url: str, base: str) -> str:
    """Resolve ``url`` from a reference file whose directory is ``base``."""
    if "\x00" in url:
        raise RefmountError(f"URL {url!r} contains a NUL character")
    try:
        url.encode("utf-8")
    except UnicodeEncodeError:
        raise RefmountError(f"URL {url!r} is not valid Unicode (a lone surrogate)") from None
    if "::" in _IPV6_HOST.sub("", url):  # an IPv6 literal host ([::1]) is not a chain
        raise RefmountError(f"chained URL {url!r} is not allowed in a reference set")
    if "://" in url:
        scheme, path = split_protocol(url)
        return path if scheme == "file" else url
    if url.startswith("/"):
        return url
    if "://" in base:
        scheme, _, rest = base.partition("://")
        host, _, path = rest.partition("/")
        joined = posixpath.normpath(posixpath.join("/" + path, url))
        return f"{scheme}://{host}{joined}"
    return posixpath.normpath(posixpath.join(base, url))
