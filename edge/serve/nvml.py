"""Optional GPU gauges from NVML (nvidia-ml-py): utilisation and memory, read at scrape time.

Nothing is exported unless pynvml imports and at least one GPU answers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)

GPU_FAMILIES = {
    "ssum_edge_gpu_utilization_ratio": "GPU busy fraction (0-1).",
    "ssum_edge_gpu_memory_used_bytes": "GPU memory in use.",
    "ssum_edge_gpu_memory_total_bytes": "GPU memory installed.",
}


class NvmlCollector:
    def __init__(self, nvml: Any, count: int) -> None:
        self._nvml = nvml
        self._count = count

    def collect(self) -> Iterator[GaugeMetricFamily]:
        util, used, total = (GaugeMetricFamily(name, text, labels=["gpu"])
                             for name, text in GPU_FAMILIES.items())
        nvml = self._nvml
        for index in range(self._count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                rates = nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            except Exception as exc:  # noqa: BLE001 - a GPU that fell off the bus must not break /metrics
                log.debug("NVML read of GPU %d failed: %s", index, exc)
                continue
            util.add_metric([str(index)], rates.gpu / 100.0)
            used.add_metric([str(index)], float(memory.used))
            total.add_metric([str(index)], float(memory.total))
        yield from (util, used, total)


def register_gpu_metrics(registry: CollectorRegistry) -> bool:
    """Add the GPU gauges to `registry` when NVML and a GPU are present; True if added."""
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        count = int(pynvml.nvmlDeviceGetCount())
    except Exception as exc:  # noqa: BLE001 - no package, no driver, no GPU: all mean "no GPU gauges"
        log.debug("NVML not available: %s", exc)
        return False
    if count == 0:
        return False
    registry.register(NvmlCollector(pynvml, count))
    log.info("exporting GPU gauges for %d GPU(s)", count)
    return True
