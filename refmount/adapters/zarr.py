"""A read-only zarr-python 3 store over an engine (no FUSE)::

    store = RefmountStore.open("refs.json", view="decoded")
    group = zarr.open_group(store, mode="r")

Absent keys are ``None`` (zarr's fill value); a chunk that cannot be fetched exactly raises --
never a fill value in its place. Reads run in threads, so zarr's concurrent gets overlap.
"""

from __future__ import annotations

import asyncio
import os
from typing import AsyncIterator, Iterable

from zarr.abc.store import ByteRequest, OffsetByteRequest, RangeByteRequest, Store, SuffixByteRequest
from zarr.core.buffer import Buffer, BufferPrototype


class RefmountStore(Store):
    supports_writes = False
    supports_deletes = False
    supports_partial_writes = False
    supports_listing = True

    def __init__(self, engine, read_only: bool = True, **options):
        """``engine``: an engine, or a source to open one for (``RefmountStore("refs.json")``,
        with ``options`` as for ``refmount.open``)."""
        super().__init__(read_only=True)
        if isinstance(engine, (str, os.PathLike, list, dict)):
            from refmount.engine import open_engine

            engine = open_engine(os.fspath(engine) if isinstance(engine, os.PathLike) else engine, **options)
        elif options:
            raise TypeError(f"options are for opening a source, not an engine: {', '.join(options)}")
        self.engine = engine

    @classmethod
    def open(cls, source, **options) -> "RefmountStore":  # type: ignore[override]
        from refmount.engine import open_engine

        return cls(open_engine(source, **options))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RefmountStore) and other.engine is self.engine

    def __repr__(self) -> str:
        return f"RefmountStore({', '.join(src for _, src in self.engine.opts.sources)})"

    def _read(self, key: str, byte_range: ByteRequest | None) -> bytes | None:
        try:
            if byte_range is None:
                return self.engine.read(key)
            if isinstance(byte_range, RangeByteRequest):
                return self.engine.read(key, byte_range.start, byte_range.end)
            if isinstance(byte_range, OffsetByteRequest):
                return self.engine.read(key, byte_range.offset)
            if isinstance(byte_range, SuffixByteRequest):
                size = self.engine.size(key)
                return self.engine.read(key, max(size - byte_range.suffix, 0), size)
            raise TypeError(f"unexpected byte range {byte_range!r}")
        except (FileNotFoundError, IsADirectoryError):
            return None

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        data = await asyncio.to_thread(self._read, key, byte_range)
        return None if data is None else prototype.buffer.from_bytes(data)

    async def get_partial_values(self, prototype: BufferPrototype,
                                 key_ranges: Iterable[tuple[str, ByteRequest | None]]) -> list[Buffer | None]:
        return list(await asyncio.gather(*(self.get(key, prototype, byte_range) for key, byte_range in key_ranges)))

    async def exists(self, key: str) -> bool:
        try:
            return (await asyncio.to_thread(self.engine.info, key))["type"] == "file"
        except FileNotFoundError:
            return False

    async def set(self, key: str, value: Buffer) -> None:
        raise PermissionError("refmount stores are read-only")

    async def delete(self, key: str) -> None:
        raise PermissionError("refmount stores are read-only")

    async def list(self) -> AsyncIterator[str]:
        for key in await asyncio.to_thread(lambda: list(self.engine.walk())):
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        for key in await asyncio.to_thread(lambda: list(self.engine.walk())):
            if key.startswith(prefix):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        try:
            entries = await asyncio.to_thread(self.engine.listdir, prefix.rstrip("/"))
        except (FileNotFoundError, NotADirectoryError):
            return
        for name, _ in entries:
            yield name

    def close(self) -> None:
        self.engine.close()
        super().close()
