"""Memory a configuration implies, against the memory the machine has.

The activations of one patch are estimated from the ONNX graph itself: shapes inferred at a
small size, tensors kept alive from the node that makes them to the last node that reads them,
the largest total over the graph. That is a lower bound of what a runtime allocates (ONNX
Runtime uses about three times as much on the CPU), so a configuration it refuses cannot run.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import shape_inference

PROBE_PX = 64


def activation_bytes_per_pixel(onnx_path: Path) -> float:
    """Peak bytes of live float32 activations per input pixel of the network."""
    model = onnx.load(str(onnx_path))
    for dim, value in zip(model.graph.input[0].type.tensor_type.shape.dim,
                          (1, 1, PROBE_PX, PROBE_PX)):
        dim.ClearField("dim_param")
        dim.dim_value = value
    graph = shape_inference.infer_shapes(model, data_prop=True).graph
    sizes = {}
    for info in [*graph.value_info, *graph.output, *graph.input]:
        dims = [d.dim_value for d in info.type.tensor_type.shape.dim]
        sizes[info.name] = int(np.prod(dims)) if dims else 0
    last_use = {name: i for i, node in enumerate(graph.node) for name in node.input}
    outputs = {o.name for o in graph.output}
    alive = {graph.input[0].name: sizes.get(graph.input[0].name, 0)}
    peak = 0
    for i, node in enumerate(graph.node):
        alive.update({name: sizes.get(name, 0) for name in node.output})
        peak = max(peak, sum(alive.values()))
        for name in node.input:
            if last_use.get(name) == i and name not in outputs:
                alive.pop(name, None)
    return 4.0 * peak / PROBE_PX**2


def available_bytes() -> int:
    """Memory available to new allocations (Linux MemAvailable; else the physical memory)."""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return physical_bytes()


def physical_bytes() -> int:
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GiB"


def return_freed_memory() -> bool:
    """Hand the heap pages freed by a closed model back to the system (glibc's malloc_trim,
    every arena): without it the allocator keeps them for later and the process's resident
    memory stays at its peak across model versions. False where there is no glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    gc.collect()  # the model's last references may sit in a reference cycle
    return bool(trim(0))
