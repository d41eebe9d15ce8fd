"""The GPU path, for a CUDA machine: tiles/s of 512 px tiles and the fraction of the GPU's
measured matmul rate they reach.

PyTorch runs the bundle's torch.export program (generator.pt2) with fp16 or bf16 autocast (and
fp32, TF32 convolutions as cuDNN allows them), channels-last, one CUDA graph per fixed batch
shape, and pinned host buffers copied on a second stream while the previous batch computes
(two slots). For each dtype and batch size: tiles/s with the copies and without them (compute
alone), PSNR of one batch against fp32 eager, and GFLOP/s against a dense matmul of the same
dtype timed on the same GPU (this network is compute-bound: 13.8 GFLOP per 256 px patch on
a few MB of activations per tile). The project's own serving path (`Converter`, torch fp16,
then ONNX Runtime's CUDA provider when installed) is measured tile by tile for reference.

Without a CUDA device it prints its plan and exits with code 1 ("no CUDA device"). It has not
been run: no GPU was available to this work. Writes bench/results/gpu.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from report import write_report
from roofline import conv_flop_per_pixel
from run import relative

from edge.inference.bundle import Bundle, default_bundle_path, load_bundle
from edge.inference.converter import Converter, ConverterSettings
from trainer.evaluation.metrics import psnr

DTYPES = ("fp16", "bf16", "fp32")


@dataclass(frozen=True)
class Plan:
    tile: int
    tiles: int
    batches: tuple[int, ...]
    dtypes: tuple[str, ...]
    graphs: bool
    channels_last: bool
    flop_per_tile: float


def make_plan(args: argparse.Namespace, bundle: Bundle) -> Plan:
    multiple = int(bundle.io["spatial_multiple"])
    if args.tile < 8 or args.tile % multiple:
        raise ValueError(f"--tile must be a multiple of {multiple} of at least 8")
    batches = tuple(int(b) for b in args.batch.split(",") if b.isdigit())
    if len(batches) != len(args.batch.split(",")) or min(batches) < 1 or max(batches) > args.tiles:
        raise ValueError(f"--batch takes whole numbers from 1 to --tiles ({args.tiles})")
    dtypes = tuple(args.dtype.split(","))
    if not set(dtypes) <= set(DTYPES):
        raise ValueError(f"--dtype takes {', '.join(DTYPES)}")
    flop = conv_flop_per_pixel(bundle.model("onnx", "fp32").path) * args.tile**2
    return Plan(args.tile, args.tiles, batches, dtypes, not args.no_graphs,
                not args.no_channels_last, flop)


def describe(plan: Plan) -> str:
    return (f"plan: {plan.tiles} tiles of {plan.tile} px ({plan.flop_per_tile / 1e9:.1f} GFLOP "
            f"each), batches {', '.join(map(str, plan.batches))}, {', '.join(plan.dtypes)}; "
            f"CUDA graphs {'on' if plan.graphs else 'off'}, channels-last "
            f"{'on' if plan.channels_last else 'off'}, pinned copies on a second stream")


def simulated_tiles(plan: Plan, torch: Any) -> Any:
    """plan.tiles simulated camera tiles (8 distinct ones, repeated), float32, pinned."""
    from trainer.sim.pairs import make_pair

    distinct = [make_pair(7000 + i, size=plan.tile)[0] for i in range(min(8, plan.tiles))]
    stack = np.stack([distinct[i % len(distinct)] for i in range(plan.tiles)])[:, None]
    return torch.from_numpy(stack.astype(np.float32)).pin_memory()


def load_module(bundle: Bundle, channels_last: bool, torch: Any) -> Any:
    module = torch.export.load(str(bundle.model("torch_export", "fp32").path)).module()
    module = module.to("cuda")
    return module.to(memory_format=torch.channels_last) if channels_last else module


def forward_fn(module: Any, x: Any, dtype: str, graph: bool, torch: Any) -> Any:
    """A call that converts the batch held in x (fp32 out); replayed as a CUDA graph if asked."""
    cast = torch.bfloat16 if dtype == "bf16" else torch.float16

    def forward() -> Any:
        with torch.autocast("cuda", dtype=cast, enabled=dtype != "fp32", cache_enabled=False):
            return module(x).float().contiguous()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the capture: cuDNN picks its algorithms here
        for _ in range(3):
            forward()
    torch.cuda.current_stream().wait_stream(side)
    if not graph:
        return forward
    cuda_graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(cuda_graph):
        static_out = forward()

    def replay() -> Any:
        cuda_graph.replay()
        return static_out

    return replay


def pipelined(host: Any, out: Any, slots: list[Any], steps: list[Any], torch: Any) -> float:
    """Seconds for every batch: copy in (second stream) -> compute -> copy out, two slots, so
    batch k+1 is copied while batch k computes."""
    copy, compute = torch.cuda.Stream(), torch.cuda.current_stream()
    copied = [torch.cuda.Event() for _ in slots]
    computed = [torch.cuda.Event() for _ in slots]
    returned = [torch.cuda.Event() for _ in slots]
    torch.cuda.synchronize()
    start = time.perf_counter()
    for k in range(len(host)):
        s = k % len(slots)
        with torch.cuda.stream(copy):
            if k >= len(slots):
                copy.wait_event(computed[s])  # the slot's input has been read
            slots[s].copy_(host[k], non_blocking=True)
            copied[s].record(copy)
        compute.wait_event(copied[s])
        if k >= len(slots):
            compute.wait_event(returned[s])  # the slot's last output has reached the host
        result = steps[s]()
        computed[s].record(compute)
        with torch.cuda.stream(copy):
            copy.wait_event(computed[s])
            result.record_stream(copy)  # an eager result's memory is not reused before this copy
            out[k].copy_(result, non_blocking=True)
            returned[s].record(copy)
    torch.cuda.synchronize()
    return time.perf_counter() - start


def compute_only(steps: list[Any], batches: int, torch: Any) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    for k in range(batches):
        steps[k % len(steps)]()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def matmul_tflops(dtype: str, torch: Any, n: int = 8192, repeats: int = 20) -> float:
    """Dense matmul rate of this GPU in the dtype (fp32: with TF32 if cuDNN convs may use it)."""
    cast = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
    a, b = (torch.randn(n, n, device="cuda", dtype=cast) for _ in range(2))
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 2 * n**3 * repeats / (start.elapsed_time(end) / 1000) / 1e12


def measure_config(module: Any, tiles: Any, reference: Any, plan: Plan, dtype: str, batch: int,
                   torch: Any) -> dict[str, Any]:
    n = plan.tiles // batch
    host = tiles[: n * batch].view(n, batch, 1, plan.tile, plan.tile)
    out = torch.empty_like(host).pin_memory()
    fmt = torch.channels_last if plan.channels_last else torch.contiguous_format
    slots = [torch.empty((batch, 1, plan.tile, plan.tile), device="cuda", memory_format=fmt)
             for _ in range(2)]
    steps = [forward_fn(module, x, dtype, plan.graphs, torch) for x in slots]
    pipelined(host, out, slots, steps, torch)  # warm-up pass
    seconds = pipelined(host, out, slots, steps, torch)
    alone = compute_only(steps, n, torch)
    tiles_per_s = n * batch / seconds
    return {"dtype": dtype, "batch": batch, "tiles_per_s": tiles_per_s,
            "compute_only_tiles_per_s": n * batch / alone, "overlap_efficiency": alone / seconds,
            "tflops": tiles_per_s * plan.flop_per_tile / 1e12,
            "psnr_vs_fp32_db": psnr(out[0, 0, 0].numpy(), reference[0, 0].numpy())}


def serving_path(bundle: Bundle, tiles: Any, plan: Plan) -> list[dict[str, Any]]:
    """The project's Converter, tile by tile (no cross-tile batching): torch fp16, ORT CUDA."""
    import onnxruntime as ort

    rows = []
    choices = [("torch", "fp16")]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        choices.append(("onnxruntime", "fp32"))
    images = [tiles[i, 0].numpy() for i in range(min(plan.tiles, 16))]
    for backend, precision in choices:
        settings = ConverterSettings(backend=backend, precision=precision, device="cuda:0")
        with Converter.from_bundle(bundle, settings) as converter:
            converter.convert(images[0])
            start = time.perf_counter()
            for image in images:
                converter.convert(image)
            rows.append({"backend": converter.backend.name, "device": converter.backend.device,
                         "precision": converter.backend.precision,
                         "tiles_per_s": len(images) / (time.perf_counter() - start)})
    return rows


def measure(plan: Plan, bundle: Bundle, torch: Any) -> dict[str, Any]:
    torch.backends.cudnn.benchmark = True
    tiles = simulated_tiles(plan, torch)
    module = load_module(bundle, plan.channels_last, torch)
    with torch.inference_mode():
        reference = module(tiles[:1].cuda()).float().cpu()
        peaks = {dtype: matmul_tflops(dtype, torch) for dtype in plan.dtypes}
        configs = [measure_config(module, tiles, reference, plan, dtype, batch, torch)
                   for dtype in plan.dtypes for batch in plan.batches]
    for row in configs:
        row["matmul_tflops"] = peaks[row["dtype"]]
        row["fraction_of_matmul"] = row["tflops"] / peaks[row["dtype"]]
        print(f"{row['dtype']} batch {row['batch']:3}: {row['tiles_per_s']:8.1f} tiles/s "
              f"(compute alone {row['compute_only_tiles_per_s']:.1f}), {row['tflops']:.1f} "
              f"TFLOP/s = {100 * row['fraction_of_matmul']:.0f} % of its matmul rate, "
              f"PSNR vs fp32 {row['psnr_vs_fp32_db']:.1f} dB")
    return {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "configs": configs,
            "serving_path": serving_path(bundle, tiles, plan)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--tile", type=int, default=512, help="tile side in px")
    parser.add_argument("--tiles", type=int, default=256, help="tiles per timed pass")
    parser.add_argument("--batch", default="1,4,8,16,32", help="batch sizes, comma-separated")
    parser.add_argument("--dtype", default="fp16,bf16,fp32", help="autocast dtypes, comma-separated")
    parser.add_argument("--no-graphs", action="store_true", help="eager calls, no CUDA graphs")
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/gpu.json")
    args = parser.parse_args(argv)

    bundle = load_bundle(args.bundle or default_bundle_path())
    try:
        plan = make_plan(args, bundle)
    except ValueError as exc:
        parser.error(str(exc))
    print(describe(plan))
    try:
        import torch
    except ImportError:
        torch = None
    if torch is None or not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here (PyTorch sees none): nothing measured",
              file=sys.stderr)
        return 1
    results = measure(plan, bundle, torch)
    write_report(args.out, "gpu", argv, {"bundle": relative(bundle.path), "plan": asdict(plan),
                                         **results})
    return 0

if __name__ == "__main__":
    sys.exit(main())
