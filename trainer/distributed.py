"""torchrun / DistributedDataParallel helpers: process group, device, wrapping, buffer sync."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from edge.errors import UserError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: str) -> DistInfo:
    """Join the process group that torchrun describes in the environment (gloo on CPU, nccl on
    CUDA); a plain single process when WORLD_SIZE is unset or 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is available")
    torch_device = torch.device(f"cuda:{local}" if device == "cuda" else "cpu")
    if device == "cuda":
        torch.cuda.set_device(torch_device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return DistInfo(rank, world, local, torch_device)


def wrap(module: nn.Module, info: DistInfo) -> nn.Module:
    if not info.enabled:
        return module
    ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, DistributedDataParallel) else module


def average_buffers(modules: list[nn.Module], info: DistInfo) -> None:
    """Average BatchNorm running statistics over ranks, so every rank holds the same model."""
    if not info.enabled:
        return
    for module in modules:
        for buffer in unwrap(module).buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer)
                buffer /= info.world_size


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def teardown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
