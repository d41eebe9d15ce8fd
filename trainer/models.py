"""The paper's generator (Fig. 7) and the 70x70 PatchGAN discriminator.

Generator: shallow 7x7 conv, two stride-2 downsampling convs, residual blocks (two 3x3 convs,
BatchNorm, LeakyReLU, dropout), two sub-pixel (PixelShuffle x2) upsamplers, 7x7 output conv,
tanh. Only BatchNorm is used, so at inference (eval mode) every normalisation uses fixed running
statistics and a tile's output never depends on the tile's own statistics.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

LEAK = 0.2


def _conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2,
                     padding_mode="reflect", bias=False)


def _conv_bn_act(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(_conv(cin, cout, kernel, stride), nn.BatchNorm2d(cout),
                         nn.LeakyReLU(LEAK))


class ResidualBlock(nn.Module):
    def __init__(self, maps: int, dropout: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(maps, maps, 3), nn.BatchNorm2d(maps), nn.LeakyReLU(LEAK), nn.Dropout(dropout),
            _conv(maps, maps, 3), nn.BatchNorm2d(maps),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SubPixelUp(nn.Sequential):
    """3x3 conv to 4x the maps, then PixelShuffle(2): doubles height and width."""

    def __init__(self, maps: int) -> None:
        super().__init__(_conv(maps, maps * 4, 3), nn.PixelShuffle(2), nn.BatchNorm2d(maps),
                         nn.LeakyReLU(LEAK))


class Generator(nn.Module):
    """Single-channel image in [-1, 1] -> single-channel image in [-1, 1], same size.

    Height and width must be multiples of 4 (two stride-2 downsamplings).
    """

    spatial_multiple = 4

    def __init__(self, maps: int = 64, blocks: int = 9, dropout: float = 0.5,
                 in_channels: int = 1, out_channels: int = 1) -> None:
        super().__init__()
        self.config = {"maps": maps, "blocks": blocks, "dropout": dropout,
                       "in_channels": in_channels, "out_channels": out_channels}
        self.head = _conv_bn_act(in_channels, maps, 7)
        self.down = nn.Sequential(_conv_bn_act(maps, maps, 3, 2), _conv_bn_act(maps, maps, 3, 2))
        self.blocks = nn.Sequential(*[ResidualBlock(maps, dropout) for _ in range(blocks)])
        self.up = nn.Sequential(SubPixelUp(maps), SubPixelUp(maps))
        self.tail = nn.Sequential(nn.Conv2d(maps, out_channels, 7, padding=3,
                                            padding_mode="reflect"), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.up(self.blocks(self.down(self.head(x)))))

    def describe(self) -> dict[str, Any]:
        return {"type": "ssum-resnet-subpixel", **self.config, "downsampling": 2,
                "upsampling": "pixelshuffle-x2 x2", "norm": "batchnorm",
                "activation": f"leakyrelu({LEAK})", "padding": "reflect", "output": "tanh",
                "parameters": sum(p.numel() for p in self.parameters())}


class PatchDiscriminator(nn.Module):
    """PatchGAN: 4x4 convs maps-2maps-4maps(s2)-8maps(s1)-1(s1); 70x70 receptive field at 3 layers."""

    def __init__(self, in_channels: int = 1, maps: int = 64, layers: int = 3) -> None:
        super().__init__()
        seq: list[nn.Module] = [nn.Conv2d(in_channels, maps, 4, 2, 1), nn.LeakyReLU(LEAK)]
        width = maps
        for i in range(1, layers + 1):
            stride = 2 if i < layers else 1
            nxt = maps * min(2 ** i, 8)
            seq += [nn.Conv2d(width, nxt, 4, stride, 1), nn.InstanceNorm2d(nxt), nn.LeakyReLU(LEAK)]
            width = nxt
        seq.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.net = nn.Sequential(*seq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """Conv weights N(0, std), norm scales N(1, std), biases 0 (as the reference CycleGAN)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)


def build_generator(cfg: Any) -> Generator:
    return Generator(maps=cfg.gen_maps, blocks=cfg.gen_blocks, dropout=cfg.dropout)


def build_discriminator(cfg: Any, in_channels: int = 1) -> PatchDiscriminator:
    return PatchDiscriminator(in_channels, cfg.disc_maps, cfg.disc_layers)


def fold_batchnorm(generator: nn.Module) -> nn.Module:
    """Return an eval-mode copy with every Conv2d+BatchNorm2d pair fused into one Conv2d.

    In SubPixelUp the BatchNorm follows PixelShuffle; it is folded into the conv by repeating
    each channel's scale and shift over the 4 sub-pixel channels that shuffle into it.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = copy.deepcopy(generator).eval()
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        items = list(seq)
        for i, conv in enumerate(items[:-1]):
            if not isinstance(conv, nn.Conv2d):
                continue
            nxt, after = items[i + 1], items[i + 2] if i + 2 < len(items) else None
            if isinstance(nxt, nn.BatchNorm2d):
                seq[i], seq[i + 1] = fuse_conv_bn_eval(conv, nxt), nn.Identity()
            elif isinstance(nxt, nn.PixelShuffle) and isinstance(after, nn.BatchNorm2d):
                bn = _repeat_bn(after, nxt.upscale_factor ** 2)
                seq[i], seq[i + 2] = fuse_conv_bn_eval(conv, bn), nn.Identity()
    return model


def _repeat_bn(bn: nn.BatchNorm2d, factor: int) -> nn.BatchNorm2d:
    out = nn.BatchNorm2d(bn.num_features * factor, eps=bn.eps).eval()
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(out, name).copy_(getattr(bn, name).repeat_interleave(factor))
    return out
