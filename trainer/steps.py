"""One optimisation step of CycleGAN or pix2pix: the loss arithmetic, nothing else."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainer.distributed import unwrap
from trainer.losses import ImagePool, gan_loss, paired_loss


def _set_requires_grad(modules: list[nn.Module], flag: bool) -> None:
    for module in modules:
        for p in module.parameters():
            p.requires_grad_(flag)


@contextmanager
def frozen_norm_statistics(*modules: nn.Module) -> Iterator[None]:
    """Forward passes inside leave every BatchNorm's running statistics as they are.

    Normalisation still uses the batch's own statistics (train mode), so losses and gradients
    are unchanged; only the statistics kept for inference are not updated.
    """
    norms = [m for module in modules for m in module.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum


def _paired(cfg: Any, name: str, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return paired_loss(name, prediction, target, cfg.shift_px, cfg.blur_sigma)


def cyclegan_step(nets: dict[str, nn.Module], optims: Mapping[str, torch.optim.Optimizer],
                  pools: dict[str, ImagePool], batch: dict[str, torch.Tensor],
                  cfg: Any) -> dict[str, float]:
    """A = OSR, B = SEM. g_ab: OSR -> SEM (the shipped generator), g_ba: SEM -> OSR.

    Each generator's BatchNorm running statistics are estimated only on its own domain's real
    images (g_ab on OSR, g_ba on SEM): the cycle and identity passes feed it generated images
    and images of the other domain, whose statistics would otherwise be mixed into the ones
    used at inference.
    """
    real_a, real_b = batch["osr"], batch["sem"]
    g_ab, g_ba, d_a, d_b = nets["g_ab"], nets["g_ba"], nets["d_a"], nets["d_b"]
    discriminators = [d_a, d_b]

    fake_b, fake_a = g_ab(real_a), g_ba(real_b)
    with frozen_norm_statistics(g_ab, g_ba):
        rec_a, rec_b = g_ba(fake_b), g_ab(fake_a)
    _set_requires_grad(discriminators, False)
    losses = {
        "g_gan_ab": gan_loss(unwrap(d_b)(fake_b), True),
        "g_gan_ba": gan_loss(unwrap(d_a)(fake_a), True),
        "cycle_a": F.l1_loss(rec_a, real_a) * cfg.lambda_cycle,
        "cycle_b": F.l1_loss(rec_b, real_b) * cfg.lambda_cycle,
    }
    if cfg.lambda_identity > 0:
        weight = cfg.lambda_cycle * cfg.lambda_identity
        with frozen_norm_statistics(g_ab, g_ba):
            losses["idt_a"] = F.l1_loss(g_ab(real_b), real_b) * weight
            losses["idt_b"] = F.l1_loss(g_ba(real_a), real_a) * weight
    if cfg.paired_loss != "none":
        losses["paired"] = _paired(cfg, cfg.paired_loss, fake_b, batch["sem_paired"]) \
            * cfg.lambda_paired
    optims["g"].zero_grad(set_to_none=True)
    g_total = sum(losses.values())
    g_total.backward()
    optims["g"].step()

    _set_requires_grad(discriminators, True)
    optims["d"].zero_grad(set_to_none=True)
    d_losses = {
        "d_a": _discriminator_loss(d_a, real_a, pools["a"].query(fake_a)),
        "d_b": _discriminator_loss(d_b, real_b, pools["b"].query(fake_b)),
    }
    (d_losses["d_a"] + d_losses["d_b"]).backward()
    optims["d"].step()
    return {k: float(v.detach()) for k, v in {**losses, **d_losses, "g_total": g_total}.items()}


def _discriminator_loss(d: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                        mode: str = "lsgan") -> torch.Tensor:
    both = d(torch.cat([real, fake.detach()], 0))
    pred_real, pred_fake = both[: real.shape[0]], both[real.shape[0]:]
    return 0.5 * (gan_loss(pred_real, True, mode) + gan_loss(pred_fake, False, mode))


def pix2pix_step(nets: dict[str, nn.Module], optims: Mapping[str, torch.optim.Optimizer],
                 pools: dict[str, ImagePool], batch: dict[str, torch.Tensor],
                 cfg: Any) -> dict[str, float]:
    """Paired: G(OSR) vs SEM by a paired loss (L1 unless chosen), conditional PatchGAN on
    (OSR, SEM) concatenated along channels, vanilla GAN loss as in the reference pix2pix."""
    real_a, real_b = batch["osr"], batch["sem_paired"]
    g, d = nets["g_ab"], nets["d_b"]
    fake_b = g(real_a)
    _set_requires_grad([d], False)
    name = "l1" if cfg.paired_loss == "none" else cfg.paired_loss
    losses = {
        "g_gan": gan_loss(unwrap(d)(torch.cat([real_a, fake_b], 1)), True, "vanilla"),
        "paired": _paired(cfg, name, fake_b, real_b) * cfg.pix2pix_l1,
    }
    optims["g"].zero_grad(set_to_none=True)
    g_total = sum(losses.values())
    g_total.backward()
    optims["g"].step()

    _set_requires_grad([d], True)
    optims["d"].zero_grad(set_to_none=True)
    d_loss = _discriminator_loss(d, torch.cat([real_a, real_b], 1),
                                 torch.cat([real_a, fake_b], 1), "vanilla")
    d_loss.backward()
    optims["d"].step()
    return {k: float(v.detach()) for k, v in {**losses, "d": d_loss, "g_total": g_total}.items()}
