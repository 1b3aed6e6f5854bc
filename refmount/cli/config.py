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
from refmount.options import OPTIONS, _table, _view, source_name, split_name


# config key -> (MountOptions field, converter, is a local path): derived from the one table
KEYS: dict[str, tuple[str, Callable[[Any], Any], bool]] = {
    name.replace("_", "-"): (name, f.metadata["convert"], f.metadata["kind"] == "path")
    for name, f in OPTIONS.items() if name not in ("sources", "views")
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
        if field in ("allow_origin", "authorize_virtual"):  # a relative directory prefix: relative to this file
            raw = [_local(x, base) if isinstance(x, str) and x and "://" not in x else x
                   for x in ([raw] if isinstance(raw, str) else raw if isinstance(raw, list) else [raw])]
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
