"""Reading a repository's objects: a local directory or any fsspec URL.

Objects are read whole (metadata files are small and zstd-compressed; native chunks are not
read here but through refmount's fetch path, as ranges of ``url(key)``).
"""

from __future__ import annotations

import os

from refmount.errors import RefmountError
from refmount.urls import split_protocol


class Storage:
    def __init__(self, base: str, storage_options: dict | None = None):
        self.base = base.rstrip("/") if base.rstrip("/") else base
        self.protocol, self.path = split_protocol(self.base)
        self.storage_options = storage_options or {}
        self._fs = None
        self.rooted = False  # empty-prefix S3 repositories before icechunk 2.1: keys start with '/'

    @property
    def fs(self):
        if self._fs is None:
            import fsspec

            try:
                self._fs = fsspec.filesystem(self.protocol, **self.storage_options.get(self.protocol, {}))
            except (ImportError, ValueError, TypeError) as exc:
                raise RefmountError(f"{self.base}: cannot use protocol {self.protocol!r}: {exc}") from None
        return self._fs

    def url(self, key: str) -> str:
        """The URL refmount's fetch layer reads ``key`` from (a local path for local repositories)."""
        sep = "//" if self.rooted else "/"
        return f"{self.path}/{key}" if self.protocol == "file" else f"{self.base}{sep}{key}"

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None when it does not exist. Other failures raise, naming it."""
        where = self.url(key)
        try:
            if self.protocol == "file":
                with open(where, "rb") as f:
                    return f.read()
            return self.fs.cat_file(where)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except PermissionError:
            raise RefmountError(f"{where}: permission denied") from None
        except Exception as exc:
            raise RefmountError(f"{where}: cannot read: {type(exc).__name__}: {exc}") from None

    def names(self, key: str) -> list[str]:
        """Names directly under ``key`` (only the 0.1-layout probe lists)."""
        where = self.url(key)
        try:
            if self.protocol == "file":
                return sorted(os.listdir(where))
            return sorted(p.rstrip("/").rpartition("/")[2] for p in self.fs.ls(where, detail=False))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except Exception as exc:
            raise RefmountError(f"{where}: cannot list: {type(exc).__name__}: {exc}") from None
