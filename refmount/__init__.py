"""refmount: mount kerchunk reference sets and Icechunk repositories as a read-only local Zarr tree.

Python API::

    with refmount.mounted("refs.json", "/mnt/data") as root:     # a real mount, for any program
        xarray.open_zarr(root)

    with refmount.open("refs.json") as engine:                    # in process, no FUSE needed
        engine.read("t2m/0.0.0")
"""

from __future__ import annotations

import contextlib
import logging
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

    from refmount.engine import options_for

    opts = options_for(source, mountpoint=mountpoint, **options)
    proc = spawn(to_args(opts), tied=not detach)
    for warning in proc.warnings:  # said at start (left-out arrays, ...): the caller's log says them too
        logging.getLogger("refmount").warning("%s", warning)
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


def open(source: str | list[str] | dict[str, str], **options):  # noqa: A001 - refmount.open, like io.open
    """Serve ``source`` in process (no FUSE): an ``engine.Engine`` with ``tree``, ``read(key,
    start, end)``, ``listdir``, ``info``, ``stats()`` and ``close()`` (also a context manager).
    Options are those of ``refmount.options.MountOptions`` (``view="decoded"``,
    ``cache_size="2GiB"``, ``storage_options={"s3": {...}}``, ``allow_origin=[...]``)."""
    from refmount.engine import Engine, options_for

    return Engine(options_for(source, **options))


__all__ = ["mounted", "open", "RefmountError", "FetchError", "__version__"]
