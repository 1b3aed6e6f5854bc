"""Views: other faces of the same index. ``raw`` is the index itself (the Zarr store as the
references describe it); ``v2`` shows Zarr v3 parts as Zarr v2 (chunks unchanged); ``decoded``
is the v2 form with every chunk decoded, for readers with fixed codec support (Debian's
netCDF-C and GDAL)."""

from __future__ import annotations

from refmount.errors import RefmountError
from refmount.index import Index

VIEWS = ("raw", "v2", "decoded")


def apply_view(tree: Index, view: str) -> Index:
    from refmount.views.common import consolidated

    if view == "raw":
        return consolidated(tree)
    if view in ("v2", "decoded"):
        from refmount.views.v2 import V2View, has_v3

        if has_v3(tree):
            tree = V2View(tree, decoded=view == "decoded")
    if view == "decoded":
        from refmount.views.decoded import DecodedView

        return DecodedView(tree)
    if view == "v2":  # a tree that was v2 already is the raw view, consolidated alike
        return consolidated(tree)
    raise RefmountError(f"unknown view {view!r} (known: {', '.join(VIEWS)})")


__all__ = ["VIEWS", "apply_view"]
