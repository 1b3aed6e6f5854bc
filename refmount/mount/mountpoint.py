"""Mountpoint checks, libfuse loading and unmounting."""

from __future__ import annotations

import errno
import logging
import os
import re
import shlex
import shutil
import subprocess

from refmount.errors import RefmountError
from refmount.io.disk import filesystem_type  # (also re-exported for the commands)

log = logging.getLogger("refmount.mount")

# a FUSE mount whose daemon died answers with one of these
DEAD_ERRNOS = (errno.ENOTCONN, errno.ECONNABORTED)

_OCTAL = re.compile(r"\\([0-7]{3})")


def _mountinfo_points() -> set[str]:
    points = set()
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                field = line.split(" ")[4]
                points.add(_OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field))
    except OSError:
        pass
    return points


def is_mounted(path: str) -> bool:
    return os.path.realpath(path) in _mountinfo_points() or os.path.abspath(path) in _mountinfo_points()


def fusermount() -> str:
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    if tool is None:
        raise RefmountError("FUSE is not available: fusermount3 not found (install the fuse3 package)")
    return tool


def lazy_unmount(path: str) -> subprocess.CompletedProcess:
    return subprocess.run([fusermount(), "-uz", path], capture_output=True, text=True)


def is_dead(path: str) -> bool:
    """A mount whose daemon is gone ("Transport endpoint is not connected").

    ``stat`` may still be answered from the kernel's attribute cache, so open the directory.
    """
    try:
        with os.scandir(path) as entries:
            next(entries, None)
    except OSError as exc:
        return exc.errno in DEAD_ERRNOS
    return False


REFMOUNT_TYPE = "fuse.refmount"


def foreign_mount(path: str) -> str | None:
    """The type of a filesystem mounted at ``path`` that is not refmount's (``tmpfs``,
    ``fuse.sshfs``, ...); None when nothing is mounted there or refmount is."""
    if not is_mounted(path):
        return None
    kind = filesystem_type(path)
    return None if kind == REFMOUNT_TYPE else kind or "a filesystem of unknown type"


def check_mountpoint(path: str, allow_non_empty: bool = False) -> int:
    """Make sure ``path`` can be mounted on; clear a dead refmount mount. Returns its ``st_dev``.
    A directory with files in it is refused unless ``allow_non_empty``: the mount would hide
    them (a mistyped mountpoint such as a home directory)."""
    other = foreign_mount(path)
    if other is not None:  # never cleared, even dead: it is not ours
        raise RefmountError(f"mountpoint {path}: already mounted ({other}; not refmount's: unmount it first)")
    try:
        if is_mounted(path) and is_dead(path):
            raise OSError(errno.ENOTCONN, os.strerror(errno.ENOTCONN))
        st = os.stat(path)
    except FileNotFoundError:
        raise RefmountError(f"mountpoint {path}: does not exist") from None
    except PermissionError:
        raise RefmountError(f"mountpoint {path}: permission denied") from None
    except OSError as exc:
        if exc.errno not in DEAD_ERRNOS:
            raise RefmountError(f"mountpoint {path}: {exc.strerror}") from None
        # a daemon died and left "Transport endpoint is not connected": clear it
        result = lazy_unmount(path)
        if result.returncode != 0:
            raise RefmountError(f"mountpoint {path}: dead mount could not be cleared: {result.stderr.strip()}") from None
        return check_mountpoint(path, allow_non_empty)
    if not os.path.isdir(path):
        raise RefmountError(f"mountpoint {path}: not a directory")
    if is_mounted(path):
        raise RefmountError(f"mountpoint {path}: already mounted (first run: refmount umount {shlex.quote(path)})")
    if not allow_non_empty and not is_empty(path):
        raise RefmountError(f"mountpoint {path}: not empty (the mount would hide what is in it; "
                            "--allow-non-empty to mount anyway)")
    return st.st_dev


def is_empty(path: str) -> bool:
    """Whether directory ``path`` holds nothing (True when it cannot be listed: the mount says why)."""
    try:
        with os.scandir(path) as entries:
            return next(entries, None) is None
    except OSError:
        return True


def load_libfuse():
    """Import mfusepy on libfuse3; a one-line error when FUSE is missing."""
    os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
    if not os.path.exists("/dev/fuse"):
        raise RefmountError("FUSE is not available: /dev/fuse is missing (load the fuse kernel module)")
    if not os.access("/dev/fuse", os.R_OK | os.W_OK) and os.geteuid() != 0:
        fusermount()  # unprivileged mounts go through the setuid helper
    try:
        import mfusepy
    except (OSError, ImportError) as exc:
        raise RefmountError(f"FUSE is not available: {exc} (install the fuse3 package)") from None
    return mfusepy


def fuse_hint() -> str:
    """Why an unprivileged mount may have failed, when ``/dev/fuse`` is the reason ("" otherwise)."""
    if os.geteuid() == 0 or os.access("/dev/fuse", os.R_OK | os.W_OK):
        return ""
    return (" (this user may not open /dev/fuse and the fusermount3 helper could not either: FUSE must be "
            "allowed for users here -- /dev/fuse mode 0666 or a group that has it; ask the site, see the "
            "README's 'HPC and containers')")


def unmount(path: str) -> str:
    """Unmount ``path``; a busy or dead mount is detached lazily. Returns what was done. Only
    refmount's mounts: another filesystem there is left alone."""
    path = os.path.abspath(path)
    other = foreign_mount(path)
    if other is not None:
        raise RefmountError(f"{path}: not a refmount mount ({other}); left mounted")
    try:
        os.stat(path)
        dead = is_mounted(path) and is_dead(path)
    except FileNotFoundError:
        raise RefmountError(f"{path}: does not exist") from None
    except OSError as exc:
        dead = exc.errno in DEAD_ERRNOS
    if not dead and not is_mounted(path):
        raise RefmountError(f"{path}: not mounted")
    if not dead:
        result = subprocess.run([fusermount(), "-u", path], capture_output=True, text=True)
        if result.returncode == 0:
            return "unmounted"
    result = lazy_unmount(path)
    if result.returncode != 0:
        raise RefmountError(f"{path}: cannot unmount: {result.stderr.strip() or 'fusermount3 failed'}")
    return "detached (lazy unmount: it was busy or dead)"


def set_read_ahead(mountpoint: str, size: int) -> None:
    """Raise the kernel's read-ahead for this FUSE mount (its backing device's ``read_ahead_kb``,
    what gcsfuse does), so sequential reads come up in ``size`` requests instead of 128 KiB ones.
    Only root may; otherwise, or where sysfs does not have it, the kernel's default stays."""
    if os.geteuid() != 0:
        return
    try:
        dev = os.stat(mountpoint).st_dev
        with open(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb", "w") as f:
            f.write(str(max(size // 1024, 4)))
    except OSError as exc:
        log.debug("read-ahead of %s left as it is: %s", mountpoint, exc)
