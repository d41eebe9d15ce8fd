"""Training configurations: one dataclass, three named presets of the same architecture family."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, TypeVar

from edge.errors import UserError

MODELS = ("cyclegan", "pix2pix")
PAIRED_LOSSES = ("none", "l1", "shift-l1", "blur-l1")
Settings = TypeVar("Settings")


def from_record(cls: type[Settings], data: dict[str, Any]) -> Settings:
    """Frozen settings from their JSON record (`asdict`): JSON lists back to tuples, keys the
    class does not know (a newer record) left out."""
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class TrainConfig:
    model: str = "cyclegan"
    # architecture
    gen_maps: int = 64
    gen_blocks: int = 9
    dropout: float = 0.5
    disc_maps: int = 64
    disc_layers: int = 3
    # data
    crop: int = 256
    batch_size: int = 1
    val_fraction: float = 0.1
    scale_range: tuple[float, float] = (0.8, 1.25)
    rotations: tuple[float, ...] = (0.0, 30.0, 45.0, 60.0, 90.0)
    # optimisation
    epochs: int = 500
    decay_fraction: float = 0.5
    lr: float = 2e-4
    beta1: float = 0.5
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.5
    pool_size: int = 50
    paired_loss: str = "none"
    lambda_paired: float = 10.0
    shift_px: int = 3
    blur_sigma: float = 2.0
    pix2pix_l1: float = 100.0
    # bookkeeping
    seed: int = 0
    val_every: int = 5
    sample_every: int = 5
    pixel_size_nm: float = 10.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return from_record(cls, data)

    def validated(self) -> TrainConfig:
        if self.model not in MODELS:
            raise UserError(f"--model must be one of {MODELS}, got {self.model!r}")
        if self.paired_loss not in PAIRED_LOSSES:
            raise UserError(f"--paired-loss must be one of {PAIRED_LOSSES}")
        if self.crop < 16 or self.crop % 4:
            raise UserError(f"--crop must be a multiple of 4 and at least 16, got {self.crop}")
        if self.lr <= 0:
            raise UserError(f"--lr must be positive, not {self.lr:g}")
        for name in ("epochs", "batch_size", "gen_maps", "gen_blocks", "val_every"):
            if getattr(self, name) < 1:
                raise UserError(f"{name.replace('_', '-')} must be at least 1")
        return self


PRESETS: dict[str, TrainConfig] = {
    # Sun et al. 2025: 256x256 crops, batch 1, 500 epochs, 9 residual blocks of 64 maps.
    "paper": TrainConfig(),
    # The shipped model (models/default), trained on CPU: the paper's generator and
    # discriminators, 128 px crops, batch 4, fewer epochs, and the shift-tolerant paired term.
    "default": TrainConfig(crop=128, batch_size=4, epochs=36, paired_loss="shift-l1",
                           lambda_paired=50.0, val_every=4),
    # Tests: a few maps, one residual block, 32 px crops.
    "tiny": TrainConfig(gen_maps=8, gen_blocks=1, disc_maps=8, disc_layers=2, crop=32,
                        batch_size=2, epochs=2, pool_size=4, val_every=1, sample_every=1),
}


def preset(name: str, **overrides: Any) -> TrainConfig:
    """A preset with the given fields replaced (None values keep the preset's)."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
    changes = {k: v for k, v in overrides.items() if v is not None}
    return replace(PRESETS[name], **changes).validated()
