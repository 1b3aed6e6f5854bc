"""The ceiling for Python FUSE: a minimal mfusepy passthrough of one local file, or of the files
of a local directory tree (so per-file and per-byte costs can be told apart).

Usage: python passthrough.py PATH MOUNTPOINT  (foreground; SIGTERM unmounts)
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
        self.root = path if os.path.isdir(path) else os.path.dirname(path)
        self.only = None if os.path.isdir(path) else "/" + os.path.basename(path)

    def _real(self, path):
        if self.only is not None and path not in ("/", self.only):
            raise mfusepy.FuseOSError(errno.ENOENT)
        return os.path.join(self.root, path.lstrip("/"))

    def getattr(self, path, fh=None):
        try:
            st = os.lstat(self._real(path))
        except FileNotFoundError:
            raise mfusepy.FuseOSError(errno.ENOENT) from None
        if stat.S_ISDIR(st.st_mode):
            return {"st_mode": stat.S_IFDIR | 0o555, "st_nlink": 2}
        return {"st_mode": stat.S_IFREG | 0o444, "st_nlink": 1, "st_size": st.st_size}

    def readdir(self, path, fh):
        names = [self.only[1:]] if self.only is not None else os.listdir(self._real(path))
        return [".", "..", *names]

    def open(self, path, flags):
        return os.open(self._real(path), os.O_RDONLY)

    def read(self, path, size, offset, fh):
        return os.pread(fh, size, offset)

    def release(self, path, fh):
        os.close(fh)
        return 0


if __name__ == "__main__":
    mfusepy.FUSE(Passthrough(sys.argv[1]), sys.argv[2], foreground=True, ro=True, nothreads=False)
