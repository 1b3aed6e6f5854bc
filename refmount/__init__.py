"""refmount: mount kerchunk reference sets as a read-only local Zarr tree.

Python API::

    with refmount.mounted("refs.json", "/mnt/data") as root:
        xarray.open_zarr(root)
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

from refmount.errors import FetchError, RefmountError

__version__ = "0.1.0"


@contextlib.contextmanager
def mounted(source: str | list[str] | dict[str, str], mountpoint: str, *, detach: bool = False,
            **options) -> Iterator[str]:
    """Mount ``source`` (one path/URL, a list, or ``{name: source}``) at ``mountpoint``.

    Keyword options are those of ``refmount.options.MountOptions`` (``cache_size`` may be
    given as text such as ``"2GiB"``). The daemon runs in its own process; the mount is
    removed and the daemon waited for on exit. The daemon is tied to this process: if it dies
    (a killed notebook kernel), the daemon unmounts and exits too -- unless ``detach=True``.
    """
    from refmount.cli.commands import to_args
    from refmount.mount.daemon import spawn
    from refmount.mount.mountpoint import unmount
    from refmount.options import MountOptions, parse_size, split_sources

    if isinstance(source, dict):
        sources = [(name, src) for name, src in source.items()]
    else:
        sources = split_sources([source] if isinstance(source, str) else list(source))
    if isinstance(options.get("cache_size"), str):
        options["cache_size"] = parse_size(options["cache_size"])
    opts = MountOptions(sources=sources, mountpoint=mountpoint, **options)
    proc = spawn(to_args(opts), tied=not detach)
    try:
        yield os.path.abspath(mountpoint)
    finally:
        try:
            unmount(mountpoint)
        finally:
            try:
                proc.wait(timeout=30)
            except Exception:
                proc.kill()
                proc.wait()
            if proc.tie is not None:
                os.close(proc.tie)


__all__ = ["mounted", "RefmountError", "FetchError", "__version__"]
