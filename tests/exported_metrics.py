"""Metric names the daemon exports, for checking dashboard and alert queries.

Source of truth: the registry of `edge.metrics` when that module exists and exposes one (a
module-level `CollectorRegistry`, or a class whose no-argument instance has `.registry`);
otherwise the contract list below (the shared edge contract, metric section). `source()`
says which one was used.
"""

from __future__ import annotations

import importlib
import re

from prometheus_client import CollectorRegistry

CONTRACT_FAMILIES: dict[str, str] = {
    "ssum_edge_tiles_received": "counter",
    "ssum_edge_tiles_converted": "counter",
    "ssum_edge_tiles_rejected": "counter",
    "ssum_edge_tiles_dropped": "counter",
    "ssum_edge_sequence_gaps": "counter",
    "ssum_edge_scans_completed": "counter",
    "ssum_edge_tile_latency_seconds": "histogram",
    "ssum_edge_stage_latency_seconds": "histogram",
    "ssum_edge_batch_size": "histogram",
    "ssum_edge_queue_depth": "gauge",
    "ssum_edge_queue_capacity": "gauge",
    "ssum_edge_model_info": "gauge",
    "ssum_edge_build_info": "gauge",
    "ssum_edge_gpu_utilization_ratio": "gauge",
    "ssum_edge_gpu_memory_used_bytes": "gauge",
    "ssum_edge_gpu_memory_total_bytes": "gauge",
}
# Exported only when NVML is importable and a GPU exists, so absent from a CPU-only registry.
NVML_ONLY = {
    "ssum_edge_gpu_utilization_ratio",
    "ssum_edge_gpu_memory_used_bytes",
    "ssum_edge_gpu_memory_total_bytes",
}
# Not the daemon's own: Prometheus adds `up`; prometheus-client's process collector the rest.
ALWAYS = {
    "up",
    "process_start_time_seconds",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
}
SUFFIXES = {
    "counter": ["_total", "_created"],
    "histogram": ["_bucket", "_count", "_sum", "_created"],
    "summary": ["", "_count", "_sum", "_created"],
    "gauge": [""],
    "info": ["_info"],
}


def _series_names(families: dict[str, str]) -> set[str]:
    return {name + suffix for name, kind in families.items() for suffix in SUFFIXES.get(kind, [""])}


def _daemon_registry() -> CollectorRegistry | None:
    try:
        module = importlib.import_module("edge.metrics")
    except ImportError:
        return None
    values = list(vars(module).values())
    for value in values:
        if isinstance(value, CollectorRegistry):
            return value
    for value in values:
        if isinstance(value, type) and getattr(value, "__module__", "") == module.__name__:
            try:
                registry = getattr(value(), "registry", None)
            except TypeError:
                continue
            if isinstance(registry, CollectorRegistry):
                return registry
    return None


def source() -> str:
    return "edge.metrics registry" if _daemon_registry() is not None else "contract list"


def exported_names() -> set[str]:
    registry = _daemon_registry()
    if registry is None:
        families = CONTRACT_FAMILIES
    else:
        families = {f.name: f.type for f in registry.collect()}
        families.update({n: CONTRACT_FAMILIES[n] for n in NVML_ONLY})
    return _series_names(families) | ALWAYS


_PROMQL_WORDS = """sum rate irate increase changes histogram_quantile by without max min avg
count le on ignoring group_left group_right and or unless topk bottomk clamp_min clamp_max abs
time vector scalar label_replace offset bool deriv delta resets avg_over_time max_over_time
min_over_time absent round"""
PROMQL_WORDS = frozenset(_PROMQL_WORDS.split())


def metric_names_in(expr: str) -> set[str]:
    """Metric names in a PromQL expression (identifiers not being functions/keywords/labels)."""
    expr = re.sub(r"\{[^}]*\}", "{}", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "[]", expr)  # ranges, $__rate_interval
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
    expr = re.sub(r'"[^"]*"', "", expr)
    names = set(
        re.findall(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?=\s*[{\[)\s/*+\-<>=,]|$)", expr)
    )
    return {n for n in names if n not in PROMQL_WORDS and not n.startswith("__")}
