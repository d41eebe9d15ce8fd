"""Metric names the daemon exports, for checking dashboard and alert queries: the families of
the daemon's own registry (`edge.serve.metrics.EdgeMetrics`), plus the NVML ones (exported only
where a GPU exists) and the series Prometheus and the process collector add."""

from __future__ import annotations

import re

from edge.serve.metrics import EdgeMetrics
from edge.serve.nvml import GPU_FAMILIES

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


def exported_names() -> set[str]:
    families = {f.name: f.type for f in EdgeMetrics().registry.collect()}
    families.update(dict.fromkeys(GPU_FAMILIES, "gauge"))
    return {name + suffix for name, kind in families.items()
            for suffix in SUFFIXES.get(kind, [""])} | ALWAYS


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
