"""The counters of ``refmount stats`` as Prometheus/OpenMetrics metrics (prometheus_client),
served on ``--metrics-addr`` -- read from the same snapshot, so both always agree."""

from __future__ import annotations

from typing import Callable

from refmount.io.stats import COUNTERS

# snapshot names that are levels, not totals
GAUGES = {
    "memory_cache_bytes": "bytes in the memory cache", "memory_cache_entries": "entries in the memory cache",
    "memory_cache_limit": "memory cache bound in bytes", "disk_cache_bytes": "bytes in the disk cache",
    "disk_cache_entries": "entries in the disk cache", "fetches_in_flight": "fetches under way",
    "origin_inflight": "origin requests under way", "uptime_s": "seconds since the mount started",
}


class _Collector:
    def __init__(self, snapshot: Callable[[], dict]):
        self.snapshot = snapshot

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        data = self.snapshot()
        for name in COUNTERS:
            if name in GAUGES or name == "origin_inflight":
                continue
            counter = CounterMetricFamily(f"refmount_{name}", name.replace("_", " "))
            counter.add_metric([], float(data.get(name, 0)))
            yield counter
        for name, help_text in GAUGES.items():
            if name in data:
                yield GaugeMetricFamily(f"refmount_{name}", help_text, value=float(data[name]))
        for name in ("origin_requests", "origin_bytes", "origin_errors", "origin_retries"):
            family = CounterMetricFamily(f"refmount_{name}_by_host", f"{name.replace('_', ' ')} per origin host",
                                         labels=["host"])
            for host, counts in sorted((data.get("by_host") or {}).items()):
                family.add_metric([host], float(counts.get(name, 0)))
            yield family
        latency = GaugeMetricFamily("refmount_origin_latency_seconds", "origin request latency of the last 4096 "
                                    "requests", labels=["quantile"])
        for label, key in (("0.5", "p50"), ("0.9", "p90"), ("0.99", "p99"), ("1", "max")):
            latency.add_metric([label], data.get(f"origin_latency_{key}_ms", 0) / 1000)
        yield latency
        served = data.get("cache_hits", 0) + data.get("cache_misses", 0)
        yield GaugeMetricFamily("refmount_fetched_per_served_read", "origin reads per read served (over-read ratio)",
                                value=data.get("origin_requests", 0) / served if served else 0.0)


def serve_metrics(address: str, snapshot: Callable[[], dict]):
    """Start the endpoint on ``[HOST:]PORT`` (127.0.0.1 unless a host is given); returns the server."""
    from prometheus_client import CollectorRegistry, start_http_server

    host, _, port = address.rpartition(":")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(snapshot))
    server, _ = start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1", registry=registry)
    return server
