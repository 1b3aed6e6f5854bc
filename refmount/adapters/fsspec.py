"""``refmount://``: an fsspec filesystem over an engine (no FUSE).

    fs = fsspec.filesystem("refmount", fo="refs.json", view="decoded")
    xarray.open_zarr("refmount::refs.json")            # chained: the inner URL is the source
    xarray.open_zarr("refmount::s3://bucket/refs.json", storage_options={"refmount": {...}})

Registered through the ``fsspec.specs`` entry point. Keyword arguments other than ``fo``/
``source`` are refmount's options (``view``, ``cache_size``, ``storage_options``, ...).
"""

from __future__ import annotations

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem


class RefmountFileSystem(AbstractFileSystem):
    protocol = "refmount"
    root_marker = ""

    def __init__(self, fo: str | None = None, source=None, target_protocol: str | None = None,
                 target_options: dict | None = None, **options):
        from refmount.engine import open_engine

        options = {k: v for k, v in options.items() if k not in ("skip_instance_cache", "use_listings_cache",
                                                                  "listings_expiry_time", "max_paths", "asynchronous", "loop")}
        super().__init__()
        source = source if source is not None else fo
        if source is None:
            raise ValueError("refmount filesystem: give the reference set or repository as fo= (or source=)")
        if isinstance(source, str) and target_protocol and target_protocol != "file" and "://" not in source:
            source = f"{target_protocol}://{source}"
        storage = {p: dict(v) for p, v in (options.pop("storage_options", None) or {}).items()}
        if target_protocol and target_options:
            storage.setdefault(target_protocol, {}).update(target_options)
        self.engine = open_engine(source, storage_options=storage, **options)

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        path = str(path)
        if path.startswith("refmount://"):
            path = path[len("refmount://"):]
        return path.strip("/")

    def ls(self, path: str, detail: bool = True, **kwargs):
        path = self._strip_protocol(path)
        out = []
        for name, is_dir in self.engine.listdir(path):
            full = f"{path}/{name}" if path else name
            out.append({"name": full, "type": "directory", "size": 0} if is_dir else self.engine.info(full))
        return out if detail else [entry["name"] for entry in out]

    def info(self, path: str, **kwargs) -> dict:
        return self.engine.info(self._strip_protocol(path))

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs) -> bytes:
        path = self._strip_protocol(path)
        if (start is not None and start < 0) or (end is not None and end < 0):
            size = self.engine.size(path)
            start = size + start if start is not None and start < 0 else start
            end = size + end if end is not None and end < 0 else end
        return self.engine.read(path, start or 0, end)

    def _open(self, path: str, mode: str = "rb", block_size=None, autocommit=True, cache_options=None, **kwargs):
        if mode != "rb":
            raise PermissionError(f"{path}: refmount is read-only")
        return _File(self, self._strip_protocol(path), mode, block_size or "default", cache_options=cache_options, **kwargs)

    def _read_only(self, path, *args, **kwargs):
        """What would change the tree: refused, as writing a file is (fsspec's defaults did
        nothing for ``mkdir``/``touch`` and said "not implemented" for ``rm``)."""
        raise PermissionError(f"{path}: refmount is read-only")

    mkdir = makedirs = rmdir = touch = rm_file = _rm = rm = mv = cp_file = _read_only

    def put_file(self, lpath, rpath, *args, **kwargs):
        self._read_only(rpath)

    def close(self) -> None:
        self.engine.close()


class _File(AbstractBufferedFile):
    def _fetch_range(self, start: int, end: int) -> bytes:
        return self.fs.engine.read(self.path, start, end)
