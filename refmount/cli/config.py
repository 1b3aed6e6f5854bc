"""Config files (TOML). Every long command-line option is a key of the same name::

    mountpoint = "/mnt/era5"
    cache-size = "2GiB"
    cache-dir = "/var/cache/refmount/era5"
    allow-origin = ["s3://era5/"]
    allow-other = true

    [storage-options.s3]
    anon = true

    [sources.era5]                 # or: sources = ["refs.json", "more=other.json"]
    url = "s3://era5/refs.json"
    storage-options = { s3 = { anon = true } }

Relative paths (mountpoint, cache-dir, log-file, local sources) are relative to the file's
directory. ``load`` reports every problem it finds, not just the first.
"""

from __future__ import annotations

import os
import tomllib
from typing import Any, Callable

from refmount.errors import RefmountError
from refmount.views import VIEWS
from refmount.options import LOG_LEVELS, parse_size, source_name, split_name


def _size(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        return parse_size(value)
    raise RefmountError("expected a size such as \"2GiB\" or a number of bytes")


def _number(minimum: float, integer: bool = False) -> Callable[[Any], float]:
    def check(value: Any):
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        if not ok or isinstance(value, bool) or value < minimum:
            kind = "an integer" if integer else "a number"
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
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RefmountError("expected a string or a list of strings")
    return list(value)


def _level(value: Any) -> str:
    if not isinstance(value, str) or value.upper() not in LOG_LEVELS:
        raise RefmountError(f"expected one of {', '.join(LOG_LEVELS)}")
    return value.upper()


def _view(value: Any) -> str:
    if value not in VIEWS:
        raise RefmountError(f"expected one of {', '.join(VIEWS)}")
    return value


def _table(value: Any) -> dict:
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise RefmountError("expected a table of tables, one per protocol ([storage-options.s3])")
    return value


# config key -> (MountOptions field, converter, is a local path)
KEYS: dict[str, tuple[str, Callable[[Any], Any], bool]] = {
    "mountpoint": ("mountpoint", _text, True),
    "cache-size": ("cache_size", _size, False),
    "cache-dir": ("cache_dir", _text, True),
    "disk-cache-size": ("disk_cache_size", _size, False),
    "allow-origin": ("allow_origin", _texts, False),
    "allow-other": ("allow_other", _bool, False),
    "timeout": ("timeout", _number(0.001), False),
    "retries": ("retries", _number(1, integer=True), False),
    "parallel": ("parallel", _number(1, integer=True), False),
    "prefetch": ("prefetch", _bool, False),
    "xattrs": ("xattrs", _bool, False),
    "view": ("view", _view, False),
    "max-gap": ("max_gap", _size, False),
    "max-request": ("max_request", _size, False),
    "attr-timeout": ("attr_timeout", _number(0), False),
    "log-file": ("log_file", _text, True),
    "log-level": ("log_level", _level, False),
    "storage-options": ("storage_options", _table, False),
    "authorize-virtual": ("authorize_virtual", _texts, False),
    "relocate": ("relocate", _texts, False),
    "all-refs": ("all_refs", _bool, False),
    "allow-missing": ("allow_missing", _bool, False),
    "refresh": ("refresh", _number(0), False),
}


def _relocation(item: str, base: str) -> str:
    old, sep, new = item.partition("=")
    return f"{old}={_local(new, base)}" if sep and new and "://" not in new else item


def _local(path: str, base: str) -> str:
    return os.path.normpath(os.path.join(base, os.path.expanduser(path)))


def _source_location(source: str, base: str) -> str:
    if "|icechunk" in source:  # a URL pipeline: only its base is a location
        location, _, rest = source.partition("|")
        return f"{_source_location(location, base)}|{rest}"
    return source if "://" in source else _local(source, base)


def _sources(value: Any, base: str, problems: list[str], options: dict, views: dict) -> list[tuple[str, str]]:
    """``sources`` as a list of ``[NAME=]SOURCE`` strings or a table of ``{url, storage-options}``."""
    named: list[tuple[str, str]] = []
    if isinstance(value, list) and all(isinstance(v, str) and v for v in value):
        for item in value:
            name, source = split_name(item)
            named.append((name or source_name(source), _source_location(source, base)))
    elif isinstance(value, dict):
        for name, entry in value.items():
            if isinstance(entry, str):
                entry = {"url": entry}
            if not isinstance(entry, dict) or not isinstance(entry.get("url"), str) or not entry["url"]:
                problems.append(f"sources.{name}: expected a table with a url")
                continue
            unknown = set(entry) - {"url", "storage-options", "view"}
            if unknown:
                problems.append(f"sources.{name}: unknown key {sorted(unknown)[0]!r} (known: url, storage-options, view)")
            if "view" in entry:
                try:
                    views[name] = _view(entry["view"])
                except RefmountError as exc:
                    problems.append(f"sources.{name}.view: {exc}")
            if "/" in name or not name:
                problems.append(f"sources.{name}: a source name cannot contain '/'")
                continue
            named.append((name, _source_location(entry["url"], base)))
            try:
                extra = _table(entry.get("storage-options", {}))
            except RefmountError as exc:
                problems.append(f"sources.{name}.storage-options: {exc}")
                continue
            _merge_storage(options, extra, f"sources.{name}", problems)
    else:
        problems.append("sources: expected a list of paths/URLs or a table of [sources.NAME]")
    seen: set[str] = set()
    for name, _ in named:
        if name in seen:
            problems.append(f"sources: two sources are named {name!r}")
        seen.add(name)
    return named


def _merge_storage(into: dict, extra: dict, where: str, problems: list[str]) -> None:
    """Origins use one set of options per protocol: sources may add to it, not contradict it."""
    for protocol, values in extra.items():
        target = into.setdefault(protocol, {})
        for key, value in values.items():
            if key in target and target[key] != value:
                problems.append(
                    f"{where}.storage-options.{protocol}.{key}: conflicts with another setting "
                    "(one set of options per protocol applies to every source)"
                )
            target[key] = value


def load(path: str) -> tuple[dict[str, Any], list[str]]:
    """Read a config file: ``(MountOptions field values, problems)``."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise RefmountError(f"config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise RefmountError(f"config {path}: not valid TOML: {exc}") from None
    base = os.path.dirname(os.path.abspath(path))
    values: dict[str, Any] = {}
    problems: list[str] = []
    for key, raw in data.items():
        if key == "sources":
            continue
        if key not in KEYS:
            problems.append(f"{key}: unknown key (known: sources, {', '.join(KEYS)})")
            continue
        field, convert, is_path = KEYS[key]
        try:
            value = convert(raw)
        except RefmountError as exc:
            problems.append(f"{key}: {exc}")
            continue
        values[field] = _local(value, base) if is_path and value != "auto" else value  # cache-dir = "auto"
        if field == "relocate":  # OLD=NEW: a NEW directory is relative to this file
            values[field] = [_relocation(item, base) for item in value]
    storage = {p: dict(v) for p, v in values.get("storage_options", {}).items()}
    views: dict[str, str] = {}
    if "sources" in data:
        values["sources"] = _sources(data["sources"], base, problems, storage, views)
    if views:
        values["views"] = views
    if storage:
        values["storage_options"] = storage
    return values, [f"config {path}: {p}" for p in problems]
