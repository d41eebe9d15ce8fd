"""The paper's generator (Fig. 7) and the 70x70 PatchGAN discriminator.

Generator: shallow 7x7 conv, two stride-2 downsampling convs, residual blocks (two 3x3 convs,
BatchNorm, LeakyReLU, dropout), two sub-pixel (PixelShuffle x2) upsamplers, 7x7 output conv,
tanh. Only BatchNorm is used, so at inference (eval mode) every normalisation uses fixed running
statistics and a tile's output never depends on the tile's own statistics.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
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


@dataclass
class ConvNorm:
    """A convolution inside a Sequential and the BatchNorm that normalises its output, if any:
    right after it, or after a PixelShuffle (then each of the norm's channels covers `repeat`
    of the conv's output channels)."""

    name: str  # the conv's qualified module name
    seq: nn.Sequential
    index: int
    conv: nn.Conv2d
    norm: nn.BatchNorm2d | None = None
    norm_index: int = -1
    repeat: int = 1


def conv_norms(model: nn.Module) -> list[ConvNorm]:
    """Every Conv2d that sits in a Sequential, with its BatchNorm (see ConvNorm)."""
    found = []
    for prefix, seq in [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Sequential)]:
        items = list(seq)
        for i, conv in enumerate(items):
            if not isinstance(conv, nn.Conv2d):
                continue
            entry = ConvNorm(f"{prefix}.{i}" if prefix else str(i), seq, i, conv)
            nxt, after = (items + [None, None])[i + 1 : i + 3]
            if isinstance(nxt, nn.BatchNorm2d):
                entry.norm, entry.norm_index = nxt, i + 1
            elif isinstance(nxt, nn.PixelShuffle) and isinstance(after, nn.BatchNorm2d):
                entry.norm, entry.norm_index, entry.repeat = after, i + 2, nxt.upscale_factor ** 2
            found.append(entry)
    return found


def fold_batchnorm(generator: nn.Module) -> nn.Module:
    """Return an eval-mode copy with every Conv2d+BatchNorm2d pair fused into one Conv2d.

    In SubPixelUp the BatchNorm follows PixelShuffle; it is folded into the conv by repeating
    each channel's scale and shift over the 4 sub-pixel channels that shuffle into it.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = copy.deepcopy(generator).eval()
    for entry in conv_norms(model):
        if entry.norm is None:
            continue
        bn = entry.norm if entry.repeat == 1 else _repeat_bn(entry.norm, entry.repeat)
        entry.seq[entry.index] = fuse_conv_bn_eval(entry.conv, bn)
        entry.seq[entry.norm_index] = nn.Identity()
    return model


def _repeat_bn(bn: nn.BatchNorm2d, factor: int) -> nn.BatchNorm2d:
    out = nn.BatchNorm2d(bn.num_features * factor, eps=bn.eps).eval()
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(out, name).copy_(getattr(bn, name).repeat_interleave(factor))
    return out


def unfold_batchnorm(generator: nn.Module, folded: dict[str, torch.Tensor],
                     images: torch.Tensor, batch: int = 4) -> None:
    """Load the state of a folded generator (fold_batchnorm's, as in a bundle) into
    `generator`, whose BatchNorm layers are given the statistics of their inputs on `images`
    (N, 1, H, W in model range): each conv keeps the folded weight, and each norm gets
    mean = running_mean, scale = sqrt(var + eps) and shift = folded bias + mean. The eval-mode
    output is the folded model's (up to rounding), and the batch statistics that train-mode
    normalisation uses on similar images are close to the running ones, so training continues
    from the folded model's function instead of renormalising every layer.

    Raises ValueError when the folded state does not fit this generator."""
    entries = conv_norms(generator)
    expected = {f"{e.name}.{k}": _folded_shape(e, k) for e in entries for k in ("weight", "bias")}
    got = {k: tuple(v.shape) for k, v in folded.items()}
    if got != expected:
        wrong = sorted(k for k in expected.keys() | got.keys() if expected.get(k) != got.get(k))
        raise ValueError(f"the folded weights do not fit this generator ({len(wrong)} tensors "
                         f"differ, e.g. {wrong[0]}: {got.get(wrong[0])} vs {expected.get(wrong[0])})")
    shifts = {}
    with torch.no_grad():
        for e in entries:
            e.conv.weight.copy_(folded[f"{e.name}.weight"])
            bias = folded[f"{e.name}.bias"]
            if e.norm is None:
                assert e.conv.bias is not None
                e.conv.bias.copy_(bias)
                continue
            grouped = bias.view(e.norm.num_features, e.repeat)
            if not torch.equal(grouped, grouped[:, :1].expand_as(grouped)):
                raise ValueError(f"{e.name}: the folded bias differs within a sub-pixel group")
            shifts[e.name] = grouped[:, 0].clone()
            # pass-through plus the shift while the inputs' statistics are measured
            _set_norm(e.norm, torch.zeros_like(shifts[e.name]),
                      torch.full_like(shifts[e.name], 1.0 - e.norm.eps), shifts[e.name])
    norms = {e.name: e.norm for e in entries if e.norm is not None}
    moments = _norm_input_moments(generator, list(norms.values()), images, batch)
    with torch.no_grad():
        for name, norm in norms.items():
            mean, var = moments[id(norm)]
            _set_norm(norm, mean, var, shifts[name] + mean)


def _set_norm(norm: nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor,
              shift: torch.Tensor) -> None:
    """Running statistics (mean, var), scale sqrt(var + eps) and the given shift."""
    assert norm.running_mean is not None and norm.running_var is not None
    with torch.no_grad():
        norm.running_mean.copy_(mean)
        norm.running_var.copy_(var)
        norm.weight.copy_(torch.sqrt(var + norm.eps))
        norm.bias.copy_(shift)


def _folded_shape(entry: ConvNorm, key: str) -> tuple[int, ...]:
    return tuple(entry.conv.weight.shape) if key == "weight" else (entry.conv.out_channels,)


def _norm_input_moments(generator: nn.Module, norms: list[nn.BatchNorm2d], images: torch.Tensor,
                        batch: int) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Per norm, the per-channel mean and (biased) variance of its input over all images, from
    eval-mode forward passes."""
    sums: dict[int, list[torch.Tensor]] = {}

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0].double()
        part = [x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), torch.tensor(x.numel() / x.shape[1])]
        sums[id(module)] = [a + b for a, b in zip(sums[id(module)], part)] if id(module) in sums else part

    hooks = [n.register_forward_pre_hook(record) for n in norms]
    was_training, device = generator.training, next(generator.parameters()).device
    try:
        generator.eval()
        with torch.no_grad():
            for start in range(0, images.shape[0], batch):
                generator(images[start:start + batch].to(device))
    finally:
        for hook in hooks:
            hook.remove()
        generator.train(was_training)
    moments = {}
    for key, (total, squares, count) in sums.items():
        mean = total / count
        moments[key] = (mean.float(), (squares / count - mean * mean).clamp_min(0.0).float())
    return moments
