"""Loading the daemon's model: resolve, verify, check against memory, warm up."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from edge.errors import UserError
from edge.inference.bundle import load_bundle
from edge.inference.converter import Converter
from edge.serve.bounds import check_batch_memory, check_queue_memory
from edge.serve.config import EdgeConfig
from edge.serve.model_source import resolve_bundle

log = logging.getLogger(__name__)

Loader = Callable[..., Converter]  # (config, warm_shape=None) -> Converter


def load_converter(config: EdgeConfig, warm_shape: tuple[int, int] | None = None) -> Converter:
    """The converter of the bundle [model] names now (sha256 and signature verified), checked
    against this machine's memory and warmed up on patches of `warm_shape` (a hot swap: the
    shape being served; default: the bundle's fixed patch)."""
    check_queue_memory(config)
    trusted = Path(config.model.trusted_keys) if config.model.trusted_keys else None
    bundle = load_bundle(resolve_bundle(config.model), trusted_keys=trusted)
    converter = Converter.from_bundle(bundle, config.converter_settings())
    patch_size = int(getattr(converter.tiler, "patch_size", 0))
    try:
        check_batch_memory(config, bundle, patch_size, getattr(converter.tiler, "mode", "") == "fit",
                           converter.max_batch)
        converter.warm_up(warm_shape)
        if converter.judge is not None:
            log.info("%s: %s", bundle.path, converter.judge.describe())
        if config.model.invert_input:
            log.info("%s: every tile is inverted (1 - x) before conversion ([model] "
                     "invert_input)", bundle.path)
    except MemoryError as exc:
        converter.close()
        configured = config.batching.max_batch
        batch = f"{configured}" if configured else f"0 ({converter.max_batch} on this device)"
        raise UserError(f"{config.source}: [batching] max_batch = {batch}: "
                        f"the warm-up batch of {patch_size} px patches ran out of memory; lower "
                        "max_batch") from exc
    except BaseException:
        converter.close()
        raise
    return converter
