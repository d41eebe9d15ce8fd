"""Human-readable evaluation report: PNG pages and an index.html that embeds them."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from trainer.evaluation import metrics
from trainer.evaluation.frc import block_frc_map

SUMMARY_KEYS = ["psnr", "psnr_gain", "ssim", "epi", "frc_1_7_nm", "frc_halfbit_nm",
                "histogram_distance"]
MIN_BLOCK_PX = 32


def summary_rows(result: dict[str, Any]) -> list[list[str]]:
    """Header and one row per method of mean metrics, formatted for printing."""
    rows = [["method", *SUMMARY_KEYS]]
    for name, method in result["methods"].items():
        mean = method["mean"]
        rows.append([name, *(f"{mean.get(k, float('nan')):.4g}" for k in SUMMARY_KEYS)])
    return rows


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows)


def _panels(sample: Any) -> list[tuple[str, np.ndarray]]:
    return [("input", sample.inp), *sample.outputs.items()]


def _feature_row(ref: np.ndarray) -> int:
    """The row of the reference with the most intensity variation (crosses most features)."""
    return int(np.argmax(ref.std(axis=1)))


def _images_page(sample: Any, pixel_size_nm: float, path: Path) -> None:
    panels = _panels(sample)
    n = len(panels) + 1
    blocks = max(1, min(10, min(sample.ref.shape) // MIN_BLOCK_PX))
    fig, axes = plt.subplots(3, n, figsize=(3 * n, 9), squeeze=False)
    row = _feature_row(sample.ref)
    for col, (name, img) in enumerate([*panels, ("reference", sample.ref)]):
        axes[0, col].imshow(img, cmap="gray", vmin=0, vmax=1)
        axes[0, col].axhline(row, color="y", lw=0.6)
        axes[0, col].set_title(name)
    for col, (name, img) in enumerate(panels):
        err = axes[1, col].imshow(metrics.error_map(img, sample.ref), cmap="RdBu_r", vmin=-0.5, vmax=0.5)
        axes[1, col].set_title(f"{name} - reference")
        frc = block_frc_map(img, sample.ref, pixel_size_nm, blocks_per_axis=blocks)
        im = axes[2, col].imshow(frc, cmap="viridis_r")
        axes[2, col].set_title(f"{name}: block FRC (nm)")
        fig.colorbar(im, ax=axes[2, col], fraction=0.046)
    fig.colorbar(err, ax=axes[1, n - 2], fraction=0.046)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in (axes[1, n - 1], axes[2, n - 1]):
        ax.axis("off")
    fig.suptitle(f"{sample.name}: images, error maps, block FRC vs reference")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _analysis_page(sample: Any, pixel_size_nm: float, path: Path) -> None:
    series = [*_panels(sample), ("reference", sample.ref)]
    fig, (ax_h, ax_s, ax_p) = plt.subplots(1, 3, figsize=(16, 4.5))
    row = _feature_row(sample.ref)
    width = sample.ref.shape[1]
    for name, img in series:
        centres, density = metrics.histogram(img, bins=128)
        ax_h.plot(centres, density, label=name)
        freqs, power = metrics.radial_power_spectrum(img)
        ax_s.semilogy(freqs[1:] / pixel_size_nm, power[1:] + 1e-12, label=name)
        profile = metrics.line_profile(img, (row, 0), (row, width - 1))
        ax_p.plot(np.arange(profile.size) * pixel_size_nm, profile, label=name)
    ax_h.set(title="intensity histograms", xlabel="intensity", ylabel="fraction of pixels")
    ax_s.set(title="radial power spectra", xlabel="spatial frequency (cycles/nm)", ylabel="power")
    ax_p.set(title=f"line profile along row {row}", xlabel="position (nm)", ylabel="intensity")
    ax_h.legend(fontsize=7)
    fig.suptitle(sample.name)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _html_table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f"<table border=1 cellpadding=4><tr>{head}</tr>{body}</table>"


def write_report(result: dict[str, Any], samples: Sequence[Any], out_dir: Path) -> Path:
    """Write out_dir/index.html and its PNG pages; returns the index path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pixel = result["pixel_size_nm"]
    intro = (f"<h1>SSUM evaluation</h1><p>{len(result['images'])} image(s), pixel size "
             f"{pixel:g} nm, input {html.escape(result['input_dir'])}, reference "
             f"{html.escape(result['ref_dir'])}. Means over images with a finite value; FRC figures "
             "are the resolution of agreement with the SEM reference (smaller is better). "
             "See docs/evaluation.md.</p>")
    parts = [intro, _html_table(summary_rows(result))]
    for sample in samples:
        for kind, page in (("images", _images_page), ("analysis", _analysis_page)):
            name = f"{sample.name}_{kind}.png"
            page(sample, pixel, out_dir / name)
            parts.append(f"<h2>{html.escape(sample.name)}: {kind}</h2><img src=\"{html.escape(name)}\">")
    index = out_dir / "index.html"
    index.write_text("<!doctype html><html><head><meta charset=utf-8><title>SSUM evaluation</title>"
                     "</head><body>" + "\n".join(parts) + "</body></html>\n")
    return index
