"""Reading a repository's objects through the origins (a local directory or any fsspec URL).

Objects are read whole (metadata files are small and zstd-compressed; native chunks are not
read here but through refmount's fetch path, as ranges of ``url(key)``).
"""

from __future__ import annotations

from refmount.errors import FetchError, RefmountError
from refmount.io.origins import Origins
from refmount.urls import split_protocol


class Storage:
    def __init__(self, base: str, origins: Origins):
        self.base = base.rstrip("/") if base.rstrip("/") else base
        self.protocol, self.path = split_protocol(self.base)
        self.origins = origins
        self.rooted = False  # empty-prefix S3 repositories before icechunk 2.1: keys start with '/'

    def url(self, key: str) -> str:
        """The URL refmount's fetch layer reads ``key`` from (a local path for local repositories)."""
        sep = "//" if self.rooted else "/"
        return f"{self.path}/{key}" if self.protocol == "file" else f"{self.base}{sep}{key}"

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None when it does not exist. Other failures raise, naming it."""
        where = self.url(key)
        try:
            return self.origins.get(where)
        except FetchError as exc:
            if isinstance(exc.__cause__, IsADirectoryError):
                return None
            if isinstance(exc.__cause__, PermissionError):
                raise RefmountError(f"{where}: permission denied") from None
            raise RefmountError(f"{where}: cannot read: {exc}") from None

    def names(self, key: str) -> list[str]:
        """Names directly under ``key`` (only the 0.1-layout probe and ref listings list)."""
        where = self.url(key)
        try:
            return self.origins.listdir(where)
        except FetchError as exc:
            raise RefmountError(f"{where}: cannot list: {exc}") from None
