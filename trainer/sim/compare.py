"""Compare the simulator's SEM rendering with real SEM images (`ssum synth compare-real`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edge.errors import UserError
from edge.imaging.imageio import list_images, read_image
from trainer.sim.layout import LayoutParams, generate_layout
from trainer.sim.sem import SemParams, render_sem
from trainer.sim.stats import image_stats

# The project's test data lives in shared/ beside the checkout; $SSUM_REAL_SEM overrides it.
DEFAULT_REAL_DIR = Path(
    os.environ.get("SSUM_REAL_SEM", Path(__file__).resolve().parents[3] / "shared/data/real-sem")
)
# The real images' pixel size is unknown; their narrowest lines are ~10 px wide, so the simulator
# renders at the pixel size that makes its smallest feature (73 nm) 10 px wide.
MATCHED_PIXEL_SIZE_NM = 7.3


def _mean_stats(rows: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    keys = rows[0].keys()
    return {k: {"mean": float(np.mean([r[k] for r in rows])), "std": float(np.std([r[k] for r in rows]))} for k in keys}


def compare_real(
    real_dir: Path = DEFAULT_REAL_DIR,
    n_sim: int = 6,
    size: int = 480,
    pixel_size_nm: float = MATCHED_PIXEL_SIZE_NM,
    seed: int = 0,
    params: SemParams | None = None,
) -> dict:
    """Statistics of every real image and of `n_sim` simulated SEM images, with their means."""
    files = list_images(real_dir)
    if not files:
        raise UserError(f"{real_dir}: no images to compare with")
    real = {f.name: image_stats(read_image(f)) for f in files}
    sims = []
    for i in range(n_sim):
        layout_rng, noise_rng = (np.random.default_rng(s) for s in np.random.SeedSequence([seed, i]).spawn(2))
        layout = generate_layout(layout_rng, (size, size), pixel_size_nm, LayoutParams(tone="trenches"))
        sims.append(image_stats(render_sem(layout, noise_rng, params)))
    return {
        "real_dir": str(real_dir),
        "pixel_size_nm_sim": pixel_size_nm,
        "size_sim": size,
        "n_sim": n_sim,
        "seed": seed,
        "real": real,
        "sim": sims,
        "real_summary": _mean_stats(list(real.values())),
        "sim_summary": _mean_stats(sims),
    }


def format_table(report: dict) -> str:
    """Markdown table: statistic, real mean +- std, simulated mean +- std."""
    lines = ["| statistic | real SEM (mean ± std) | simulated SEM (mean ± std) |", "|---|---|---|"]
    for key, real in report["real_summary"].items():
        sim = report["sim_summary"][key]
        lines.append(f"| {key} | {real['mean']:.3g} ± {real['std']:.2g} | {sim['mean']:.3g} ± {sim['std']:.2g} |")
    return "\n".join(lines)
