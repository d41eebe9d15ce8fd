"""Start-up checks of what [batching], [queues] and [limits] imply for this machine's memory."""

from __future__ import annotations

from edge.errors import UserError
from edge.inference.bundle import Bundle
from edge.inference.memory import activation_bytes_per_pixel, available_bytes, gib, physical_bytes
from edge.serve.config import EdgeConfig


def check_queue_memory(config: EdgeConfig) -> None:
    """A full input queue of the largest tiles [limits] admits must fit in physical memory."""
    capacity, largest = config.queues.capacity, config.limits.max_bytes
    needed, total = capacity * largest, physical_bytes()
    if needed > total:
        raise UserError(
            f"{config.source}: [queues] capacity = {capacity} with [limits] max_bytes = "
            f"{largest}: a full input queue of the largest tiles allowed holds {gib(needed)}, "
            f"this machine has {gib(total)}; lower one of them")


def check_batch_memory(config: EdgeConfig, bundle: Bundle, patch_size: int, fit: bool,
                       batch: int) -> None:
    """One inference call's activations (a lower bound, from the ONNX graph) must fit in what
    is free. A call holds at most [tiling] max_pixels input pixels (at least one patch); with
    fixed patches also at most `batch` of them (the converter's, [batching] max_batch or the
    device's)."""
    per_pixel = activation_bytes_per_pixel(bundle.model("onnx", "fp32").path)
    bound = config.tiling.max_pixels
    pixels = bound if fit else min(batch * patch_size**2, max(bound, patch_size**2))
    needed, free = pixels * per_pixel, available_bytes()
    if needed > free:
        keys = (f"[tiling] max_pixels = {bound}" if fit or pixels == bound else
                f"[batching] max_batch = {batch}")
        raise UserError(
            f"{config.source}: {keys}: one inference call of {pixels} px needs at least "
            f"{gib(needed)} of activations, {gib(free)} of memory is available; lower it")
