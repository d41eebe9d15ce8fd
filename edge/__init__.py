"""ssum-edge runtime: protocol, tiling, backends, pipeline, daemon, metrics.

Nothing here imports torch, trainer or calibration at module level.
"""

__version__ = "0.1.0"
