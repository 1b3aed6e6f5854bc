"""Mount options and the small parsers the CLI and the Python API share."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

from refmount.errors import RefmountError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", re.I)
_SOURCE_SUFFIXES = (".gz", ".zst", ".zstd", ".bz2", ".xz", ".json", ".parq", ".parquet")


def parse_size(text: str) -> int:
    """``512M``, ``2GiB``, ``1.5G`` -> bytes (binary multiples, as rclone and sshfs use)."""
    m = _SIZE.fullmatch(str(text))
    if not m:
        raise RefmountError(f"invalid size {text!r} (examples: 512M, 2GiB)")
    power = " kmgt".index(m.group(2).lower() or " ")
    return int(float(m.group(1)) * 1024**power)


def parse_storage_options(items: list[str]) -> dict[str, dict]:
    """``["s3.endpoint_url=http://h:9000", "s3.anon=true"]`` -> ``{"s3": {...}}``.

    Values that parse as JSON (``true``, ``3``, ``{"a": 1}``) are used as such, others as text;
    dotted keys nest (``s3.config_kwargs.read_timeout=5``).
    """
    options: dict[str, dict] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        parts = name.split(".")
        if not sep or len(parts) < 2 or not all(parts):
            raise RefmountError(f"invalid storage option {item!r} (expected PROTOCOL.KEY=VALUE)")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        target = options.setdefault(parts[0], {})
        for part in parts[1:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise RefmountError(f"storage option {item!r} conflicts with an earlier one")
        target[parts[-1]] = value
    return options


def source_name(source: str) -> str:
    if "|icechunk" in source:  # a URL pipeline: named after its repository
        source = source.partition("|")[0]
    base = source.rstrip("/").rpartition("/")[2]
    changed = True
    while changed:
        changed = False
        for suffix in _SOURCE_SUFFIXES:
            if base.lower().endswith(suffix) and len(base) > len(suffix):
                base, changed = base[: -len(suffix)], True
    return base


def split_name(arg: str) -> tuple[str | None, str]:
    """``NAME=SOURCE`` -> ``(NAME, SOURCE)``; a plain source (even with ``=`` in a URL) -> ``(None, arg)``."""
    name, sep, rest = arg.partition("=")
    if sep and name and "/" not in name and ":" not in name:
        return name, rest
    return None, arg


def split_sources(args: list[str]) -> list[tuple[str, str]]:
    """``NAME=SOURCE`` or ``SOURCE`` -> ``[(name, source)]``; names must be unique."""
    named = []
    for arg in args:
        name, source = split_name(arg)
        named.append((name or source_name(source), source))
    seen: set[str] = set()
    for name, source in named:
        if name in seen:
            raise RefmountError(f"two sources are named {name!r}; name them with NAME=SOURCE")
        seen.add(name)
    return named


def memory_limit() -> int:
    """This process's memory limit: its cgroup's (v2 or v1) where set, else physical memory."""
    limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return limit
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            candidates = [f"/sys/fs/cgroup{path}/memory.max"]
        elif "memory" in controllers.split(","):
            candidates = [f"/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"]
        else:
            continue
        for candidate in candidates:
            try:
                with open(candidate) as f:
                    text = f.read().strip()
            except OSError:
                continue
            if text.isdigit():
                limit = min(limit, int(text))
    return limit


def default_cache_size() -> int:
    """An eighth of the memory limit, between 64 MiB and 1 GiB: fits a shared login node."""
    return max(64 << 20, min(1 << 30, memory_limit() // 8))


def state_directory() -> str:
    """Where refmount keeps logs: ``$XDG_STATE_HOME/refmount`` (``~/.local/state/refmount``)."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "refmount")


def default_log_file(mountpoint: str) -> str:
    """Where a background daemon logs unless told otherwise: one file per mountpoint, named after
    its path (``/mnt/era5`` -> ``mnt-era5.log``; characters a shell would need quoted become ``_``)."""
    path = os.path.abspath(mountpoint).strip("/")
    name = "".join(c if c.isalnum() or c in "_.-" else "-" if c == "/" else "_" for c in path)
    return os.path.join(state_directory(), (name or "-") + ".log")


@dataclass
class MountOptions:
    sources: list[tuple[str, str]]
    mountpoint: str
    cache_size: int = field(default_factory=default_cache_size)
    storage_options: dict[str, dict] = field(default_factory=dict)
    allow_other: bool = False
    timeout: float = 30.0
    retries: int = 3
    attr_timeout: float = 3600.0
    parallel: int = 16
    prefetch: bool = True
    max_gap: int = 64 << 10
    max_request: int = 4 << 20
    log_file: str | None = None
    log_level: str = "INFO"
    cache_dir: str | None = None
    disk_cache_size: int | None = None
    allow_origin: list[str] = field(default_factory=list)
    xattrs: bool = True
    view: str = "raw"
    views: dict[str, str] = field(default_factory=dict)  # per source name, over ``view``
    authorize_virtual: list[str] = field(default_factory=list)  # Icechunk virtual chunk containers
    relocate: list[str] = field(default_factory=list)  # OLDPREFIX=NEWPREFIX
    allow_missing: bool = False  # mount although local originals are missing (their chunks: EIO)
    all_refs: bool = False
    refresh: float = 0.0  # seconds between polls of a followed branch; 0: pinned

    def source_settings(self) -> dict:
        """What sources need besides their location (``sources.open_source`` keywords)."""
        return {"storage_options": self.storage_options, "authorize_virtual": tuple(self.authorize_virtual),
                "relocate": tuple(parse_relocation(r) for r in self.relocate), "all_refs": self.all_refs}


def parse_relocation(text: str) -> tuple[str, str]:
    """``OLDPREFIX=NEWPREFIX`` -> both prefixes."""
    old, sep, new = text.partition("=")
    if not sep or not old or not new:
        raise RefmountError(f"invalid relocation {text!r} (expected OLDPREFIX=NEWPREFIX)")
    return old, new if "://" in new else "file://" + os.path.abspath(new)
