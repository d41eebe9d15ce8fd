"""What focus-stack fusion buys the conversion (`ssum eval --stacks`): on simulated multilayer
z-stacks, scored against the SEM after registration, (a) the best single plane converted,
(b) the fused tile converted and (c) the fused tile alone; and the height map's error against
the simulated surface.

"Best plane" is taken two ways: the plane whose conversion scores best against the SEM (an
oracle no user has) and the plane with the most focus energy (what one would pick without a
reference). Every image is registered to the SEM with one transform estimated from its input
(`align_to_reference`), so the planes' drift does not count against any of them.

The planes may be converted by another model than the fused tile (`convert_planes`): a model
fine-tuned on fused tiles meets single planes as strangers, so the fair comparison gives each
arm the model trained on its own kind of input from the same scenes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from edge.imaging.focus import FocusSettings, FusedStack, focus_measure, fuse_stack
from trainer.evaluation.frc import frc_resolution
from trainer.evaluation.harness import align_to_reference, evaluate_arrays, finite_mean
from trainer.evaluation.metrics import affine_intensity_fit, psnr
from trainer.sim.zstack import StackParams, StackScene, simulate_stack_scene

Convert = Callable[[np.ndarray], np.ndarray]
ARMS = ("best_plane_oracle", "sharpest_plane", "fused")
NEAR_STEP_PX = 4  # where depth from focus has texture to work on: a height step within 4 px
KEPT = ("psnr", "psnr_input", "ssim", "frc_1_7_nm", "frc_1_7_nm_input", "psnr_gain")


@dataclass(frozen=True)
class StackEvalSettings:
    size: int = 256
    pixel_size_nm: float = 10.0
    stack: StackParams = field(default_factory=StackParams)
    focus: FocusSettings = field(default_factory=FocusSettings)


def scene_for(seed: int, settings: StackEvalSettings) -> StackScene:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 19]))
    return simulate_stack_scene(rng, settings.size, settings.stack,
                                pixel_size_nm=settings.pixel_size_nm)


def _scored(inp: np.ndarray, pred: np.ndarray, sem: np.ndarray, pixel_size_nm: float,
            ) -> dict[str, float]:
    aligned, _ = align_to_reference({"input": inp, "pred": pred, "ref": sem})
    row = evaluate_arrays(aligned["pred"], aligned["input"], aligned["ref"], pixel_size_nm)
    a, b = affine_intensity_fit(aligned["input"], aligned["ref"])
    row["psnr_input_affine"] = psnr(np.clip(a * aligned["input"] + b, 0, 1), aligned["ref"])
    return {k: row[k] for k in (*KEPT, "psnr_input_affine")}


def _shift(image: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """image seen from a frame moved by (dy, dx): out(y, x) = image(y + dy, x + dx)."""
    matrix = np.array([[1, 0, dx], [0, 1, dy]], np.float32)
    return cv2.warpAffine(image, matrix, (image.shape[1], image.shape[0]),
                          flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def height_errors(fused: FusedStack, scene: StackScene) -> dict[str, float]:
    """The height map against the true surface, in the fused tile's frame (that of its
    reference plane), away from the border the drift uncovers: everywhere, and near the
    height steps (within NEAR_STEP_PX), the only places a flat layer shows its focus."""
    dy, dx = scene.drift_px[fused.reference]
    truth = _shift(scene.height_nm, float(dy), float(dx))
    border = int(np.ceil(np.abs(scene.drift_px).max())) + 4
    inner = np.s_[border:-border, border:-border]
    error = np.abs(fused.height_nm - truth)[inner]
    steps = cv2.dilate((cv2.morphologyEx(truth, cv2.MORPH_GRADIENT, np.ones((3, 3))) > 0)
                       .astype(np.uint8), np.ones((2 * NEAR_STEP_PX + 1,) * 2))[inner] > 0
    step = float(np.median(np.diff(sorted(scene.z_nm))))
    levels = np.unique(truth[inner])
    found = {float(lv): float(np.median(fused.height_nm[inner][truth[inner] == lv]))
             for lv in levels}
    apart = [(a, b) for a in found for b in found if b - a >= step]  # resolvable by the planes
    ordered = [found[a] < found[b] for a, b in apart]
    return {"mae_nm": float(error.mean()), "median_error_nm": float(np.median(error)),
            "mae_near_steps_nm": float(error[steps].mean()), "near_steps": float(steps.mean()),
            "within_half_step": float((error <= step / 2).mean()), "plane_step_nm": step,
            "layers": len(levels), "level_pairs_apart": len(apart),
            "level_pairs_ordered": float(np.mean(ordered)) if ordered else float("nan")}


def evaluate_scene(scene: StackScene, convert: Convert, settings: StackEvalSettings,
                   convert_planes: Convert | None = None) -> dict[str, Any]:
    px, plane_model = settings.pixel_size_nm, convert_planes or convert
    planes = [_scored(p, plane_model(p), scene.sem, px) for p in scene.planes]
    energy = [float(focus_measure(p, settings.focus.smooth_sigma_px,
                                  settings.focus.window_sigma_px).mean()) for p in scene.planes]
    fused = fuse_stack(scene.planes, scene.z_nm, settings.focus)
    fused_row = _scored(fused.image, convert(fused.image), scene.sem, px)
    oracle = int(np.argmax([row["psnr"] for row in planes]))
    sharpest = int(np.argmax(energy))
    return {"best_plane_oracle": planes[oracle] | {"plane": oracle},
            "sharpest_plane": planes[sharpest] | {"plane": sharpest},
            "fused": fused_row, "height": height_errors(fused, scene),
            "fused_alone_frc_vs_in_focus_nm": frc_resolution(fused.image, scene.osr_in_focus, px)}


def evaluate_stacks(seeds: Sequence[int], convert: Convert,
                    settings: StackEvalSettings = StackEvalSettings(),
                    convert_planes: Convert | None = None) -> dict[str, Any]:
    """`convert` converts the fused tiles, `convert_planes` the single planes (default: the
    same)."""
    scenes = [evaluate_scene(scene_for(seed, settings), convert, settings, convert_planes)
              for seed in seeds]
    summary: dict[str, Any] = {arm: finite_mean([{k: v for k, v in s[arm].items()
                                                  if k != "plane"} for s in scenes])
                               for arm in ARMS}
    summary["height"] = finite_mean([s["height"] for s in scenes])
    fused, oracle = summary["fused"], summary["best_plane_oracle"]
    summary["fused_minus_best_plane_db"] = fused["psnr"] - oracle["psnr"]
    summary["frc_finer_than_best_plane"] = fused["frc_1_7_nm"] < oracle["frc_1_7_nm"]
    return {"seeds": list(seeds), "size_px": settings.size, "planes": settings.stack.planes,
            "pixel_size_nm": settings.pixel_size_nm, "summary": summary, "scenes": scenes}


def format_table(report: dict[str, Any]) -> str:
    s = report["summary"]
    lines = ["| | PSNR vs SEM (dB) | SSIM | FRC vs SEM (nm, 1/7) |", "|---|---|---|---|"]
    names = {"best_plane_oracle": "(a) best single plane, converted (oracle pick)",
             "sharpest_plane": "(a') sharpest plane, converted",
             "fused": "(b) fused tile, converted"}
    for arm, name in names.items():
        row = s[arm]
        lines.append(f"| {name} | {row['psnr']:.2f} | {row['ssim']:.3f} | {row['frc_1_7_nm']:.1f} |")
    f = s["fused"]
    lines.append(f"| (c) fused tile alone (affine remap: {f['psnr_input_affine']:.2f} dB) | "
                 f"{f['psnr_input']:.2f} | | {f['frc_1_7_nm_input']:.1f} |")
    h = s["height"]
    lines.append("")
    lines.append(f"height map: mean error {h['mae_nm']:.0f} nm ({h['mae_near_steps_nm']:.0f} nm "
                 f"within {NEAR_STEP_PX} px of a height step, {100 * h['near_steps']:.0f} % of the "
                 f"area), median {h['median_error_nm']:.0f} nm, "
                 f"{100 * h['within_half_step']:.0f} % of pixels within half a plane step "
                 f"({h['plane_step_nm']:.0f} nm); of the pairs of layers at least a plane step apart, "
                 f"{100 * h['level_pairs_ordered']:.0f} % in the right order")
    return "\n".join(lines)


def write_figure(scene: StackScene, convert: Convert, path: Any,
                 settings: StackEvalSettings = StackEvalSettings(),
                 convert_planes: Convert | None = None) -> Any:
    """One multilayer position side by side: the lowest and highest planes, the fused tile,
    the best plane converted, the fused tile converted, the SEM, and the height maps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fused = fuse_stack(scene.planes, scene.z_nm, settings.focus)
    outputs = [np.clip((convert_planes or convert)(p), 0, 1) for p in scene.planes]
    best = int(np.argmax([_scored(p, out, scene.sem, settings.pixel_size_nm)["psnr"]
                          for p, out in zip(scene.planes, outputs, strict=True)]))
    dy, dx = scene.drift_px[fused.reference]
    panels = [
        (scene.planes[0], f"plane z = {scene.z_nm[0]:.0f} nm", "gray"),
        (scene.planes[-1], f"plane z = {scene.z_nm[-1]:.0f} nm", "gray"),
        (fused.image, f"fused ({len(scene.planes)} planes)", "gray"),
        (fused.height_nm, "height from focus (nm)", "viridis"),
        (outputs[best], f"best plane ({best}) converted", "gray"),
        (np.clip(convert(fused.image), 0, 1), "fused, converted", "gray"),
        (scene.sem, "SEM", "gray"),
        (_shift(scene.height_nm, float(dy), float(dx)), "true height (nm)", "viridis"),
    ]
    figure, axes = plt.subplots(2, 4, figsize=(13, 6.8))
    vmax = float(max(scene.z_nm))
    for ax, (image, title, cmap) in zip(axes.ravel(), panels, strict=True):
        limits = {"vmin": 0.0, "vmax": vmax} if cmap == "viridis" else {"vmin": 0, "vmax": 1}
        ax.imshow(image, cmap=cmap, **limits)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
