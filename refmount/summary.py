"""``refmount inspect``: what a reference set holds, without mounting it."""

from __future__ import annotations

import json
import math
from collections import Counter

from .index import Index, Inline, Range, Whole
from .order import grid_of


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


def summarize(tree: Index) -> dict:
    """Arrays and groups, reference kinds, origins and referenced bytes."""
    groups, arrays = [], {}
    kinds: Counter[str] = Counter()
    urls: set[str] = set()
    ranged_bytes = 0
    for key, ref in tree.items():
        parent, _, name = key.rpartition("/")
        if name == ".zgroup":
            groups.append(parent or "/")
        elif name == ".zarray":
            meta = _json(ref) or {}
            shape, chunks = meta.get("shape", []), meta.get("chunks", [])
            grid = math.prod(grid_of(shape, chunks))
            arrays[parent] = {
                "path": parent or "/",
                "shape": shape,
                "chunks": chunks,
                "dtype": meta.get("dtype"),
                "codecs": _codecs(meta),
                "grid_chunks": grid,
                "refs": Counter(),
            }
        if isinstance(ref, Inline):
            kind = "inline"
        elif isinstance(ref, Range):
            kind = "ranged"
            ranged_bytes += ref.length
            urls.add(ref.url)
        else:
            assert isinstance(ref, Whole)
            kind = "whole_file"
            urls.add(ref.url)
        kinds[kind] += 1
        array = arrays.get(parent)
        if array is not None and not name.startswith("."):
            array["refs"][kind] += 1
    for array in arrays.values():
        present = sum(array["refs"].values())
        array["refs"] = dict(array["refs"], missing=max(array["grid_chunks"] - present, 0))
    return {
        "groups": sorted(groups),
        "arrays": [arrays[k] for k in sorted(arrays)],
        "references": {"inline": kinds["inline"], "ranged": kinds["ranged"], "whole_file": kinds["whole_file"]},
        "missing_chunks": sum(a["refs"]["missing"] for a in arrays.values()),
        "origin_files": len(urls),
        "referenced_bytes": ranged_bytes,
    }


def render(summary: dict, title: str) -> str:
    lines = [title, ""]
    refs = summary["references"]
    lines.append(
        f"references: {refs['inline']} inline, {refs['ranged']} ranged, {refs['whole_file']} whole-file, "
        f"{summary['missing_chunks']} missing chunks"
    )
    lines.append(f"origin files: {summary['origin_files']}, referenced bytes: {summary['referenced_bytes']:,}")
    lines.append(f"groups: {', '.join(summary['groups']) or '-'}")
    lines.append("")
    header = ("array", "shape", "chunks", "dtype", "codecs", "inline", "ranged", "whole", "missing")
    rows = [
        (
            a["path"],
            "x".join(map(str, a["shape"])) or "()",
            "x".join(map(str, a["chunks"])) or "()",
            str(a["dtype"]),
            ",".join(a["codecs"]) or "-",
            *(str(a["refs"].get(k, 0)) for k in ("inline", "ranged", "whole_file", "missing")),
        )
        for a in summary["arrays"]
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


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
