"""``refmount inspect``: what a reference set holds, without mounting it."""

from __future__ import annotations

import json
import math
from collections import Counter

from refmount.index import Index, Inline, Range, Unreadable, Whole
from refmount.grid import grid_of, runs_v3
from refmount.urls import split_protocol


def _json(ref) -> dict | None:
    if isinstance(ref, Inline):
        try:
            value = json.loads(ref.data)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None
    return None


def _codecs(meta: dict) -> list[str]:
    codecs = [f.get("id", "?") for f in meta.get("filters") or [] if isinstance(f, dict)]
    compressor = meta.get("compressor")
    if isinstance(compressor, dict):
        codecs.append(compressor.get("id", "?"))
    return codecs


def _v3(meta: dict) -> tuple[str | None, dict]:
    """A ``zarr.json``'s node type and its array fields in the ``.zarray`` vocabulary."""
    if meta.get("node_type") != "array":
        return meta.get("node_type"), {}
    codecs = [c.get("name", "?") for c in meta.get("codecs") or [] if isinstance(c, dict)]
    try:
        runs = runs_v3(meta)
    except (KeyError, TypeError, ValueError, AttributeError):
        runs = None
    regular = (meta.get("chunk_grid") or {}).get("name") == "regular"
    if runs is None:
        chunks, grid = [], [1]
    else:
        grid = [sum(n for _, n in r) for r in runs]
        if regular:  # one edge length per dimension
            chunks = [r[0][0] if r[0][1] else 0 for r in runs]
        else:  # rectilinear: every edge length of every dimension (as runs when there are many)
            chunks = [[length for length, n in r for _ in range(n)] if count <= 10_000 else [list(x) for x in r]
                      for r, count in zip(runs, grid)]
    return "array", {"shape": meta.get("shape", []), "chunks": chunks, "grid": grid, "dtype": meta.get("data_type"),
                     "codecs": codecs}


def _own(url: str, prefixes: list[str]) -> bool:
    return any(url.startswith(p) for p in prefixes)


def _owner(parent: str, arrays: dict) -> dict | None:
    """The array a chunk file belongs to: its directory (v2) or the nearest array above (v3)."""
    while True:
        if parent in arrays:
            return arrays[parent]
        if not parent:
            return None
        parent = parent.rpartition("/")[0]


def summarize(tree: Index) -> dict:
    """Arrays and groups, reference kinds, origins and referenced bytes (and, for an Icechunk
    repository, its refs, history and virtual chunk containers)."""
    groups, arrays = [], {}
    kinds: Counter[str] = Counter()
    urls: set[str] = set()
    ranged_bytes = 0
    own = [p if "://" in p else split_protocol(p)[1] for p in tree.own_urls()]
    entries = list(tree.items())
    for key, ref in entries:  # metadata first: v3 chunk files sort before their array's zarr.json
        parent, _, name = key.rpartition("/")
        fields = None
        if name == ".zgroup":
            groups.append(parent or "/")
        elif name == ".zarray":
            meta = _json(ref) or {}
            fields = {"shape": meta.get("shape", []), "chunks": meta.get("chunks", []), "dtype": meta.get("dtype"), "codecs": _codecs(meta)}
        elif name == "zarr.json":
            node_type, fields = _v3(_json(ref) or {})
            if node_type == "group":
                groups.append(parent or "/")
            fields = fields or None
        if fields is not None:
            grid = fields.pop("grid", None) or grid_of(fields["shape"], fields["chunks"])
            arrays[parent] = {"path": parent or "/", **fields, "grid": grid, "grid_chunks": math.prod(grid), "refs": Counter()}
    for key, ref in entries:
        parent, _, name = key.rpartition("/")
        if isinstance(ref, Inline):
            kind = "inline"
        elif isinstance(ref, Unreadable):
            kind = "unreadable"
        elif isinstance(ref, Range):
            kind = "native" if own and _own(ref.url, own) else "ranged"
            ranged_bytes += ref.length
            if kind == "ranged":
                urls.add(ref.url)
        else:
            assert isinstance(ref, Whole)
            kind = "whole_file"
            urls.add(ref.url)
        kinds[kind] += 1
        array = _owner(parent, arrays) if not name.startswith(".") and name != "zarr.json" else None
        if array is not None:
            array["refs"][kind] += 1
    for array in arrays.values():
        present = sum(array["refs"].values())
        array["refs"] = dict(array["refs"], missing=max(array["grid_chunks"] - present, 0))
    return {
        "groups": sorted(groups),
        "arrays": [arrays[k] for k in sorted(arrays)],
        "references": {"inline": kinds["inline"], "ranged": kinds["ranged"], "whole_file": kinds["whole_file"],
                       **{k: kinds[k] for k in ("native", "unreadable") if kinds[k]}},
        "missing_chunks": sum(a["refs"]["missing"] for a in arrays.values()),
        "origin_files": len(urls),
        "referenced_bytes": ranged_bytes,
        **({"repository": described} if (described := tree.describe()) is not None else {}),
    }


def render(summary: dict, title: str) -> str:
    lines = [title, ""]
    lines += _render_repository(summary["repository"]) if "repository" in summary else []
    refs = summary["references"]
    extra = "".join(f", {refs[k]} {k}" for k in ("native", "unreadable") if refs.get(k))
    lines.append(
        f"references: {refs['inline']} inline, {refs['ranged']} ranged, {refs['whole_file']} whole-file{extra}, "
        f"{summary['missing_chunks']} missing chunks"
    )
    lines.append(f"origin files: {summary['origin_files']}, referenced bytes: {summary['referenced_bytes']:,}")
    unreadable = summary.get("unreadable_originals") or {}
    if unreadable:
        lines.append(f"originals missing or unreadable: {len(unreadable)} of {summary['origin_files']}")
        lines += [f"  {url}: {why}" for url, why in list(unreadable.items())[:20]]
        lines += [f"  ... and {len(unreadable) - 20} more"] if len(unreadable) > 20 else []
    lines.append(f"groups: {', '.join(summary['groups']) or '-'}")
    lines.append("")
    columns = ["inline", "ranged", "whole_file", "missing"]
    columns[1:1] = [k for k in ("native", "unreadable") if refs.get(k)]
    header = ("array", "shape", "chunks", "dtype", "codecs", *(c.replace("whole_file", "whole").replace("ranged", "virtual" if "repository" in summary else "ranged") for c in columns))
    rows = [
        (
            a["path"],
            "x".join(map(str, a["shape"])) or "()",
            "x".join(f"({','.join(map(str, c))})" if isinstance(c, list) else str(c) for c in a["chunks"]) or "()",
            str(a["dtype"]),
            ",".join(a["codecs"]) or "-",
            *(str(a["refs"].get(k, 0)) for k in columns),
        )
        for a in summary["arrays"]
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


def _render_repository(repo: dict) -> list[str]:
    lines = [f"icechunk repository (spec v{repo['spec']}), showing {repo['showing']}"]
    for kind in ("branches", "tags"):
        lines.append(f"{kind}: " + (", ".join(f"{n} -> {s}" for n, s in repo[kind].items()) or "-"))
    if repo["deleted_tags"]:
        lines.append(f"deleted tags: {', '.join(repo['deleted_tags'])}")
    lines.append("snapshots:")
    for snap in repo["history"]:
        lines.append(f"  {snap['id']}  {snap['time']}  parent {snap['parent'] or '-':20}  {snap['message']}")
    lines.append("virtual chunk containers: " + (", ".join(
        f"{c['prefix']} ({'authorised' if c['authorised'] else 'not authorised'})" for c in repo["virtual_containers"]) or "-"))
    return lines + [""]


__all__ = ["summarize", "render"]


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def render_stats(data: dict) -> str:
    """``refmount stats``: a running mount's counters, grouped."""
    g = lambda name: data.get(name, 0)  # noqa: E731
    hits, misses = g("cache_hits") + g("cache_inflight_waits"), g("cache_misses")
    ahead, used = g("prefetch_chunks"), g("prefetch_used")
    lines = [
        f"uptime            {g('uptime_s')} s",
        f"memory cache      {hits} hits, {misses} misses, {_mib(g('memory_cache_bytes'))} in {g('memory_cache_entries')} entries",
        f"disk cache        {g('disk_hits')} hits, {g('disk_misses')} misses, {_mib(g('disk_cache_bytes'))} in "
        f"{g('disk_cache_entries')} entries, {g('disk_corrupt')} discarded",
        f"origin requests   {g('origin_requests')} reads, {g('origin_info_requests')} size queries, "
        f"{_mib(g('origin_bytes'))}, {g('origin_errors')} errors, {g('origin_retries')} retries, {g('origin_refused')} refused",
        f"origin latency    p50 {g('origin_latency_p50_ms')} ms, p90 {g('origin_latency_p90_ms')} ms, "
        f"p99 {g('origin_latency_p99_ms')} ms, max {g('origin_latency_max_ms')} ms",
        f"in flight         {g('fetches_in_flight')} fetches, {g('origin_inflight')} origin requests",
        f"prefetch          {ahead} chunks in {g('prefetch_requests')} requests, {used} used"
        + (f" ({100 * used / ahead:.0f} %)" if ahead else "") + f", {g('prefetch_wasted')} evicted unused",
    ]
    return "\n".join(lines)
