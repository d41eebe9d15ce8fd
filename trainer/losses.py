"""GAN, cycle and paired losses, and the CycleGAN image pool."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def gan_loss(prediction: torch.Tensor, real: bool, mode: str = "lsgan") -> torch.Tensor:
    """LSGAN (mean squared error to 1/0) or vanilla (BCE with logits) adversarial loss."""
    target = torch.full_like(prediction, 1.0 if real else 0.0)
    if mode == "lsgan":
        return F.mse_loss(prediction, target)
    if mode == "vanilla":
        return F.binary_cross_entropy_with_logits(prediction, target)
    raise ValueError(f"unknown GAN mode {mode!r}")


def shift_l1(prediction: torch.Tensor, target: torch.Tensor, max_shift: int) -> torch.Tensor:
    """L1 at the best integer shift within +-max_shift px, chosen per sample.

    Both images are compared on the central region that every shift keeps inside the image, so
    a pair misregistered by up to max_shift px is not penalised for the misregistration.
    """
    k = max_shift
    if k == 0:
        return F.l1_loss(prediction, target)
    h, w = prediction.shape[-2:]
    core = prediction[..., k:h - k, k:w - k]
    losses = [
        (core - target[..., k + dy:h - k + dy, k + dx:w - k + dx]).abs().flatten(1).mean(1)
        for dy in range(-k, k + 1) for dx in range(-k, k + 1)
    ]
    return torch.stack(losses, 1).min(1).values.mean()


def _gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, round(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = (kernel / kernel.sum()).view(1, 1, 1, -1)
    padded = F.pad(images, (radius, radius, 0, 0), mode="reflect")
    out = F.conv2d(padded, kernel.expand(images.shape[1], 1, 1, -1), groups=images.shape[1])
    padded = F.pad(out, (0, 0, radius, radius), mode="reflect")
    kernel_t = kernel.transpose(-1, -2).expand(images.shape[1], 1, -1, 1)
    return F.conv2d(padded, kernel_t, groups=images.shape[1])


def blur_l1(prediction: torch.Tensor, target: torch.Tensor, sigma: float) -> torch.Tensor:
    """L1 between Gaussian-blurred images: small misregistrations cost little."""
    return F.l1_loss(_gaussian_blur(prediction, sigma), _gaussian_blur(target, sigma))


def paired_loss(name: str, prediction: torch.Tensor, target: torch.Tensor,
                shift_px: int = 3, blur_sigma: float = 2.0) -> torch.Tensor:
    """The paired (supervised) loss named on the command line: l1, shift-l1 or blur-l1."""
    if name == "l1":
        return F.l1_loss(prediction, target)
    if name == "shift-l1":
        return shift_l1(prediction, target, shift_px)
    if name == "blur-l1":
        return blur_l1(prediction, target, blur_sigma)
    raise ValueError(f"unknown paired loss {name!r}")


class ImagePool:
    """History of generated images shown to the discriminator (Shrivastava et al. 2017).

    Until full, images are stored and returned; afterwards each image is, with probability 0.5,
    swapped with a random stored one. Has its own random generator so that its state can be
    checkpointed.
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size = size
        self.images: list[torch.Tensor] = []
        self.rng = torch.Generator().manual_seed(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand(1, generator=self.rng).item() > 0.5:
                i = int(torch.randint(0, self.size, (1,), generator=self.rng).item())
                out.append(self.images[i].clone())
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, 0)

    def state_dict(self) -> dict[str, Any]:
        return {"images": [im.cpu() for im in self.images], "rng": self.rng.get_state()}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str = "cpu") -> None:
        self.images = [im.to(device) for im in state["images"]]
        self.rng.set_state(state["rng"])
