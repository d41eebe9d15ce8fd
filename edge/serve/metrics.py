"""Prometheus metrics of one daemon instance, on a registry of its own (see docs/metrics.md).

Each `EdgeMetrics` owns a `CollectorRegistry` (with the process collector), so several daemons
can run in one Python process, as the tests do. Metric names follow the shared edge contract.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
)

from edge import __version__
from edge.inspection.classify import CLASSES
from edge.protocol import ErrorCode
from edge.serve.stacks import INCOMPLETE_REASONS

log = logging.getLogger(__name__)

PREFIX = "ssum_edge_"
LATENCY_BUCKETS = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
STAGES = ("preprocess", "queue", "infer", "blend", "trust", "publish")
QUEUES = ("decode", "patches", "blend", "publish")
DENSITY_BUCKETS = (0, 1e9, 1e10, 3e10, 1e11, 3e11, 1e12, 3e12)  # defects per m^2; 1e12 = 1 per um^2
DROP_REASONS = ("queue_full", "shutdown", "send_failed")
LOST_KINDS = ("error", "scan-end", "height", "defect", "trust")
TRUST_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
RELOAD_RESULTS = ("ok", "unchanged", "failed")


class EdgeMetrics:
    """The daemon's counters, histograms and gauges on a dedicated registry."""

    def __init__(self, registry: CollectorRegistry | None = None, process: bool = True) -> None:
        self.registry = registry or CollectorRegistry()
        if process:
            ProcessCollector(registry=self.registry)
        reg = self.registry
        self.received = Counter(
            PREFIX + "tiles_received", "Input messages received, valid or not.", registry=reg
        )
        self.converted = Counter(
            PREFIX + "tiles_converted", "Tiles converted by the model.", registry=reg
        )
        self.published = Counter(
            PREFIX + "tiles_published", "Converted tiles handed to the output socket.",
            registry=reg,
        )
        self.rejected = Counter(
            PREFIX + "tiles_rejected", "Input messages answered with an error, by error code.",
            ["reason"], registry=reg,
        )
        self.dropped = Counter(
            PREFIX + "tiles_dropped", "Valid tiles dropped without conversion, by reason.",
            ["reason"], registry=reg,
        )
        self.gaps = Counter(
            PREFIX + "sequence_gaps", "Missing tile sequence numbers, summed over scans.",
            registry=reg,
        )
        self.scans_completed = Counter(
            PREFIX + "scans_completed", "Scan-end messages forwarded.", registry=reg
        )
        self.lost = Counter(
            PREFIX + "messages_lost", "Error answers and scan-ends not published, by reason.",
            ["kind", "reason"], registry=reg,
        )
        self.open_scans = Gauge(
            PREFIX + "open_scans", "Scans with tiles seen and no scan-end yet.", registry=reg
        )
        self.stacks_fused = Counter(
            PREFIX + "stacks_fused", "Z-stacks fused into one tile (complete or not).",
            registry=reg,
        )
        self.stacks_incomplete = Counter(
            PREFIX + "stacks_incomplete", "Z-stacks closed before all their planes came, by reason.",
            ["reason"], registry=reg,
        )
        self.open_stacks = Gauge(
            PREFIX + "open_stacks", "Z-stacks waiting for more planes.", registry=reg
        )
        self.tile_latency = Histogram(
            PREFIX + "tile_latency_seconds", "Per tile, receive to publish.",
            buckets=LATENCY_BUCKETS, registry=reg,
        )
        self.stage_latency = Histogram(
            PREFIX + "stage_latency_seconds", "Per tile, time spent in each pipeline stage.",
            ["stage"], buckets=LATENCY_BUCKETS, registry=reg,
        )
        self.batch_size = Histogram(
            PREFIX + "batch_size", "Patches per inference call.", buckets=BATCH_BUCKETS,
            registry=reg,
        )
        self.queue_depth = Gauge(
            PREFIX + "queue_depth", "Items waiting in each pipeline queue.", ["queue"],
            registry=reg,
        )
        self.queue_capacity = Gauge(
            PREFIX + "queue_capacity", "Capacity of each pipeline queue.", ["queue"], registry=reg
        )
        self.model_info = Gauge(
            PREFIX + "model_info", "The model being served (value 1).",
            ["name", "sha256", "backend", "precision", "device"], registry=reg,
        )
        self.reloads = Counter(
            PREFIX + "model_reloads", "Model reloads (hot swaps) by result: ok, unchanged, failed.",
            ["result"], registry=reg,
        )
        self.model_loaded = Gauge(
            PREFIX + "model_loaded_timestamp_seconds", "When the model being served was loaded.",
            registry=reg,
        )
        self.defects = Counter(
            PREFIX + "defects", "Defects found by inspection (merged per scan), by rough class.",
            ["class"], registry=reg,
        )
        self.inspected_tiles = Counter(
            PREFIX + "inspected_tiles", "Converted tiles inspected for defects.", registry=reg
        )
        self.inspection_errors = Counter(
            PREFIX + "inspection_errors",
            "Tiles whose inspection failed (logged; the tile is published all the same).",
            registry=reg,
        )
        self.detections_unconfirmed = Counter(
            PREFIX + "detections_unconfirmed",
            "Detections on converted tiles left out because the raw tile did not confirm them.",
            registry=reg,
        )
        self.inspected_area = Counter(
            PREFIX + "inspected_area_square_meters", "Sample area judged by inspection.",
            registry=reg,
        )
        self.scan_defect_density = Histogram(
            PREFIX + "scan_defect_density_per_square_meter",
            "Per inspected scan, its defects per square metre of judged area.",
            buckets=DENSITY_BUCKETS, registry=reg,
        )
        self.inspection_latency = Histogram(
            PREFIX + "inspection_seconds", "Per tile, the time its inspection took.",
            buckets=LATENCY_BUCKETS, registry=reg,
        )
        self.trust_score = Histogram(
            PREFIX + "trust_score", "Per judged tile, its trust score (0-1, higher = more "
            "trustworthy).", buckets=TRUST_BUCKETS, registry=reg,
        )
        self.build_info = Gauge(
            PREFIX + "build_info", "ssum-edge version (value 1).", ["version"], registry=reg
        )
        self.build_info.labels(version=__version__).set(1)
        self._initialise_labels()

    def _initialise_labels(self) -> None:
        """Export every known label value from the start, so rate() sees the first increment."""
        for code in ErrorCode:
            self.rejected.labels(reason=code.value)
        for reason in DROP_REASONS:
            self.dropped.labels(reason=reason)
            for kind in LOST_KINDS:
                self.lost.labels(kind=kind, reason=reason)
        for stage in STAGES:
            self.stage_latency.labels(stage=stage)
        for result in RELOAD_RESULTS:
            self.reloads.labels(result=result)
        for name in CLASSES:
            self.defects.labels(name)
        for reason in INCOMPLETE_REASONS:
            self.stacks_incomplete.labels(reason=reason)

    def watch_queue(self, name: str, depth: Callable[[], float], capacity: int) -> None:
        """Report a queue's depth at every scrape, and its capacity."""
        self.queue_depth.labels(queue=name).set_function(depth)
        self.queue_capacity.labels(queue=name).set(capacity)

    def set_model(self, name: str, sha256: str, backend: str, precision: str, device: str) -> None:
        """The model now served (the previous one's info series ends)."""
        self.model_loaded.set_to_current_time()
        self.model_info.clear()
        self.model_info.labels(
            name=name, sha256=sha256, backend=backend, precision=precision, device=device
        ).set(1)

    def observe_stages(self, stages_s: dict[str, float]) -> None:
        for stage, seconds in stages_s.items():
            self.stage_latency.labels(stage=stage).observe(max(seconds, 0.0))

    def counter_value(self, name: str, **labels: str) -> float:
        """Current value of a counter sample (summed over labels not given); for status lines."""
        total = 0.0
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name == PREFIX + name + "_total" and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += sample.value
        return total
