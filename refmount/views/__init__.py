"""Views: other faces of the same index. ``raw`` is the index itself (the Zarr store as the
references describe it); ``decoded`` serves every chunk decoded, for readers with fixed codec
support (Debian's netCDF-C and GDAL)."""

from __future__ import annotations

from ..errors import RefmountError
from ..index import Index

VIEWS = ("raw", "decoded")


def apply_view(tree: Index, view: str) -> Index:
    if view == "raw":
        return tree
    if view == "decoded":
        from .decoded import DecodedView

        return DecodedView(tree)
    raise RefmountError(f"unknown view {view!r} (known: {', '.join(VIEWS)})")


__all__ = ["VIEWS", "apply_view"]
