"""The peer baseline: fsspec's own FUSE adapter over a ReferenceFileSystem (fusepy, libfuse2).

fsspec's adapter prefixes every path with "/", which reference keys lack; a subclass with
``root = ""`` is the documented workaround (``reference-formats.md`` §9.3). Usage:
python fsspec_mount.py REFS.json MOUNTPOINT [REMOTE_PROTOCOL]  (foreground; SIGTERM unmounts)
"""

import sys

import fsspec
from fsspec.fuse import FUSEr, run


class RootlessFUSEr(FUSEr):
    def __init__(self, fs, path, ready_file=False):
        super().__init__(fs, path, ready_file=ready_file)
        self.root = ""


if __name__ == "__main__":
    refs, mountpoint = sys.argv[1], sys.argv[2]
    protocol = sys.argv[3] if len(sys.argv) > 3 else None
    fs = fsspec.filesystem("reference", fo=refs, remote_protocol=protocol)
    run(fs, "", mountpoint, foreground=True, threads=False, ops_class=RootlessFUSEr)
