"""From a reference and a byte window to bytes: blocks, cache, origins.

A ranged reference up to ``whole_limit`` bytes is one block: the first read of a chunk file
fetches the whole chunk with one request and later kernel reads are served from memory.
Larger ranges and whole-object references are read in aligned ``block_size`` blocks.
"""

from __future__ import annotations

from .cache import MemoryCache
from .fetch import Origins
from .index import Inline, Range, Ref, Whole


class Reader:
    def __init__(
        self,
        origins: Origins,
        cache: MemoryCache,
        block_size: int = 8 << 20,
        whole_limit: int = 32 << 20,
    ):
        self.origins = origins
        self.cache = cache
        self.block_size = block_size
        self.whole_limit = whole_limit

    def size(self, ref: Ref) -> int:
        if isinstance(ref, Inline):
            return len(ref.data)
        if isinstance(ref, Range):
            return ref.length
        return self.origins.size(ref.url)

    def _segment(self, ref: Range | Whole, size: int) -> tuple[str, int, int]:
        """The reference as ``(url, start, block)`` with its block length."""
        start = ref.offset if isinstance(ref, Range) else 0
        block = size if size <= self.whole_limit else self.block_size
        return ref.url, start, block

    def read(self, ref: Ref, offset: int, length: int, size: int | None = None) -> bytes:
        """Bytes ``[offset, offset+length)`` of the file, clamped to its size."""
        if isinstance(ref, Inline):
            return ref.data[offset : offset + length]
        if size is None:
            size = self.size(ref)
        end = min(offset + length, size)
        if offset >= end:
            return b""
        url, start, block = self._segment(ref, size)
        first, last = offset // block, (end - 1) // block
        parts = []
        for b in range(first, last + 1):
            b_start = b * block
            b_len = min(block, size - b_start)
            lo = start + b_start
            data = self.cache.get((url, lo, b_len), lambda lo=lo, n=b_len: self.origins.read(url, lo, lo + n))
            parts.append(data[max(offset - b_start, 0) : end - b_start])
        return parts[0] if len(parts) == 1 else b"".join(parts)
