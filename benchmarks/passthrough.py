"""The ceiling for Python FUSE: a minimal mfusepy passthrough of one local file.

Usage: python passthrough.py FILE MOUNTPOINT  (foreground; SIGTERM unmounts)
"""

import errno
import os
import stat
import sys

os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
import mfusepy  # noqa: E402


class Passthrough(mfusepy.Operations):
    use_ns = True

    def __init__(self, path):
        self.path = path
        self.fd = os.open(path, os.O_RDONLY)
        self.name = "/" + os.path.basename(path)

    def getattr(self, path, fh=None):
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o555, "st_nlink": 2}
        if path == self.name:
            st = os.fstat(self.fd)
            return {"st_mode": stat.S_IFREG | 0o444, "st_nlink": 1, "st_size": st.st_size}
        raise mfusepy.FuseOSError(errno.ENOENT)

    def readdir(self, path, fh):
        return [".", "..", self.name[1:]]

    def read(self, path, size, offset, fh):
        return os.pread(self.fd, size, offset)


if __name__ == "__main__":
    mfusepy.FUSE(Passthrough(sys.argv[1]), sys.argv[2], foreground=True, ro=True, nothreads=False)
