"""bench/bench_gpu.py where there is no CUDA device: it checks its arguments, prints its plan
and says that it measured nothing (it measures on a GPU only; it has not been run on one)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_gpu.py"


@pytest.fixture(autouse=True)
def no_cuda() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here: run bench/bench_gpu.py itself")


def run_bench(bundle: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH), "--bundle", str(bundle), *args],
                          capture_output=True, text=True, timeout=300, check=False)


def test_without_cuda_it_prints_its_plan_and_says_no_cuda_device(tiny_bundle_source):
    done = run_bench(tiny_bundle_source, "--tiles", "16", "--batch", "1,8", "--dtype", "bf16")
    assert done.returncode == 1, done.stderr
    assert "no CUDA device" in done.stderr and "Traceback" not in done.stderr
    plan = done.stdout.strip().splitlines()[-1]
    assert plan.startswith("plan: 16 tiles of 512 px (") and "GFLOP each" in plan
    assert "batches 1, 8, bf16" in plan and "CUDA graphs on" in plan


@pytest.mark.parametrize("args, message", [
    (("--tile", "510"), "--tile must be a multiple of 4"),
    (("--batch", "0"), "--batch takes whole numbers"),
    (("--batch", "32", "--tiles", "16"), "--batch takes whole numbers from 1 to --tiles (16)"),
    (("--batch", "4,x"), "--batch takes whole numbers"),
    (("--dtype", "fp8"), "--dtype takes fp16, bf16, fp32"),
])
def test_bad_arguments_are_refused_in_one_line(tiny_bundle_source, args, message):
    done = run_bench(tiny_bundle_source, *args)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
