"""Mount options and the small parsers the CLI and the Python API share."""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field, fields
from typing import Any, Callable

from refmount.errors import RefmountError
from refmount.io.cache import memory_limit
from refmount.views import VIEWS

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


# -- value kinds: how a config value (TOML) or a command-line value becomes an option's value --
def _size(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        return parse_size(value)
    raise RefmountError("expected a size such as \"2GiB\" or a number of bytes")


def _number(minimum: float, integer: bool = False) -> Callable[[Any], float]:
    def check(value: Any):
        if isinstance(value, str):  # from the command line
            try:
                value = int(value) if integer else float(value)
            except ValueError:
                pass
        ok = isinstance(value, int) if integer else isinstance(value, (int, float)) and math.isfinite(value)
        if not ok or isinstance(value, bool) or value < minimum:  # (nan passed every comparison)
            kind = "an integer" if integer else "a finite number"
            raise RefmountError(f"expected {kind} >= {minimum:g}")
        return value

    return check


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise RefmountError("expected true or false")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise RefmountError("expected a non-empty string")
    return value


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RefmountError("expected a string or a list of strings")
    if not all(v.strip() for v in value):  # "$PREFIX" unset: an empty prefix would allow everything
        raise RefmountError("an empty value (an unset variable?)")
    return list(value)


def _prefixes(value: Any) -> list[str]:
    """URL or directory prefixes; a directory made absolute here, where the user is (a daemon's
    working directory is /: ``data`` would have meant ``/data``)."""
    return [p if "://" in p else os.path.abspath(os.path.expanduser(p)) for p in _texts(value)]


def _level(value: Any) -> str:
    if not isinstance(value, str) or value.upper() not in LOG_LEVELS:
        raise RefmountError(f"expected one of {', '.join(LOG_LEVELS)}")
    return value.upper()


def _view(value: Any) -> str:
    if value not in VIEWS:
        raise RefmountError(f"expected one of {', '.join(VIEWS)}")
    return value


def _address(value: Any) -> str:
    text = str(value)
    port = text.rpartition(":")[2]
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise RefmountError("expected [HOST:]PORT, e.g. 127.0.0.1:9750")
    return text


def _table(value: Any) -> dict:
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise RefmountError("expected a table of tables, one per protocol ([storage-options.s3])")
    return value


def option(default: Any = None, *, help: str, convert: Callable[[Any], Any] = _text, kind: str = "value",
           reloadable: bool = False, metavar: str | None = None, factory: Callable[[], Any] | None = None,
           cli: bool = True) -> Any:
    """One option, declared once: its default, help, how a value is checked (``convert``, the
    same for config files and the command line), its command-line form (``kind``: ``value``,
    ``size``, ``path``, ``flag`` (true when given), ``no-flag`` (``--no-NAME`` sets false),
    ``list`` (repeatable), ``storage``), whether a reload applies it, and whether it has a flag."""
    meta = {"help": help, "convert": convert, "kind": kind, "reloadable": reloadable, "metavar": metavar, "cli": cli}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class MountOptions:
    """Every option of a mount or an engine. The command line (``--NAME``), config files
    (``NAME = ...``), the daemon hand-off and the Python API are all derived from this table."""

    sources: list[tuple[str, str]] = option(factory=list, help="(name, location) of each source", cli=False)
    mountpoint: str = option("", help="where the tree is mounted", kind="path", cli=False)
    cache_size: int = option(help="memory cache bound, e.g. 2GiB (default: 1/8 of the memory limit, at most 1 GiB)",
                             factory=default_cache_size, convert=_size, kind="size")
    cache_dir: str | None = option(help="persistent disk cache directory ('auto': under $XDG_CACHE_HOME; default: none)",
                                   kind="path")
    shared_cache: bool = option(False, convert=_bool, kind="flag",
                                help="the --cache-dir is shared by several daemons, on this machine or many (NFS, Lustre, "
                                "GPFS): no lock, entries published atomically and verified, one fetch per entry for all")
    metrics_addr: str | None = option(metavar="[HOST:]PORT", convert=_address,
                                      help="serve Prometheus/OpenMetrics metrics here (HOST defaults to 127.0.0.1)")
    disk_cache_size: int | None = option(help="disk cache bound (default: 10GiB, at most half the free space)",
                                         convert=_size, kind="size")
    storage_options: dict[str, dict] = option(factory=dict, convert=_table, kind="storage", metavar="PROTOCOL.KEY=VALUE",
                                              help="fsspec option for an origin protocol, e.g. "
                                              "s3.endpoint_url=http://127.0.0.1:9000 (repeatable)")
    allow_origin: list[str] = option(factory=list, convert=_prefixes, kind="list", reloadable=True, metavar="PREFIX",
                                     help="read originals only under this URL or directory prefix (repeatable; needed for "
                                     "local files and private addresses when other users can read the mount)")
    authorize_virtual: list[str] = option(factory=list, convert=_prefixes, kind="list", reloadable=True, metavar="PREFIX",
                                          help="Icechunk: read virtual chunks from this container prefix (repeatable; "
                                          "none are read otherwise)")
    relocate: list[str] = option(factory=list, convert=_texts, kind="list", reloadable=True, metavar="OLD=NEW",
                                 help="Icechunk: read virtual chunks declared under prefix OLD from prefix NEW instead "
                                 "(data that moved; authorises OLD; repeatable)")
    all_refs: bool = option(False, convert=_bool, kind="flag", reloadable=True,
                            help="Icechunk: show every branch, tag and snapshot side by side (branches/NAME/, tags/NAME/, "
                            "snapshots/ID/)")
    refresh: float = option(0.0, convert=_number(0), metavar="SECONDS",
                            help="Icechunk: poll the branch head this often and show new commits (default: pinned at mount)")
    allow_missing: bool = option(False, convert=_bool, kind="flag", reloadable=True,
                                 help="mount even when local originals are missing or unreadable (their chunks fail with EIO)")
    allow_other: bool = option(False, convert=_bool, kind="flag", help="let other users read the mount (needs user_allow_other)")
    allow_non_empty: bool = option(False, convert=_bool, kind="flag",
                                   help="mount on a directory that is not empty (its files are hidden while mounted)")
    timeout: float = option(30.0, convert=_number(0.001), help="seconds before an origin request fails (default 30)")
    retries: int = option(3, convert=_number(1, integer=True), help="attempts per origin request on transient errors (default 3)")
    failed_ttl: float = option(30.0, convert=_number(0), metavar="SECONDS",
                               help="how long a failed remote read is remembered: readers, the kernel's retries and "
                               "fetch-ahead meanwhile fail at once instead of asking again (default 30; 0: never)")
    concat_dim: str | None = option(metavar="NAME", help="direct mounts of several netCDF/HDF5 files: the dimension "
                                    "to concatenate them along (default: their unlimited one)")
    file_timeout: float = option(300.0, convert=_number(0.001), metavar="SECONDS",
                                 help="direct mounts of archives: a file whose scan reads nothing for this long (a "
                                 "damaged file can hang the HDF5 library) fails the mount, named (default 300)")
    parallel: int = option(16, convert=_number(1, integer=True), help="origin requests in flight for fetching ahead (default 16)")
    prefetch: bool = option(True, convert=_bool, kind="no-flag", help="fetch only what is read")
    xattrs: bool = option(True, convert=_bool, kind="no-flag",
                          help="no extended attributes (faster 'ls -l' of huge directories; 'refmount stats' needs them)")
    view: str = option("raw", convert=_view, reloadable=True,
                       help="raw (default): the references as they are; v2: Zarr v3 parts shown as Zarr v2; decoded: v2 "
                       "with every chunk decoded, for netCDF-C, GDAL and other readers with fixed codec support")
    views: dict[str, str] = option(factory=dict, reloadable=True, cli=False, help="per source name, over view")
    max_gap: int = option(64 << 10, convert=_size, kind="size",
                          help="merge ranges of one original this close into one request (default 64KiB)")
    max_request: int = option(4 << 20, convert=_size, kind="size", help="largest merged request (default 4MiB)")
    read_ahead: int = option(1 << 20, convert=_size, kind="size",
                             help="the kernel's read-ahead on this mount, when running as root (default 1MiB; the "
                             "kernel's own for FUSE is 128KiB; 0: leave it)")
    attr_timeout: float = option(3600.0, convert=_number(0),
                                 help="seconds the kernel may cache names and attributes (default 3600)")
    log_file: str | None = option(kind="path", help="log here (default in the background: "
                                  "$XDG_STATE_HOME/refmount/MOUNTPOINT.log)")
    log_level: str = option("INFO", convert=_level, help="DEBUG, INFO (default), WARNING or ERROR")

    def source_settings(self) -> dict:
        """What sources need besides their location and origins (``sources.open_source`` keywords)."""
        return {"authorize_virtual": tuple(self.authorize_virtual),
                "relocate": tuple(parse_relocation(r) for r in self.relocate), "all_refs": self.all_refs}

    # -- the daemon hand-off: every field, exactly (the Python API never goes through flags) --
    def to_json(self) -> str:
        return json.dumps({f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def from_json(cls, text: str) -> "MountOptions":
        values = json.loads(text)
        values["sources"] = [tuple(pair) for pair in values["sources"]]
        return cls(**values)

    @classmethod
    def create(cls, **values) -> "MountOptions":
        """Options from Python values, each checked as a config value is (``cache_size="2GiB"``)."""
        known = {f.name: f for f in fields(cls)}
        for name, value in values.items():
            if name not in known:
                raise RefmountError(f"unknown option {name!r}")
            convert = known[name].metadata["convert"]
            if value is not None and name not in ("sources", "views", "mountpoint"):
                try:
                    values[name] = convert(value)
                except RefmountError as exc:
                    raise RefmountError(f"{name}: {exc}") from None
        return cls(**values)


OPTIONS = {f.name: f for f in fields(MountOptions)}
RELOADABLE = frozenset(name for name, f in OPTIONS.items() if f.metadata["reloadable"]) | {"sources"}


def parse_relocation(text: str) -> tuple[str, str]:
    """``OLDPREFIX=NEWPREFIX`` -> both prefixes."""
    old, sep, new = text.partition("=")
    if not sep or not old or not new:
        raise RefmountError(f"invalid relocation {text!r} (expected OLDPREFIX=NEWPREFIX)")
    return old, new if "://" in new else "file://" + os.path.abspath(new)
