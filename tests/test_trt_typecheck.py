"""The TensorRT code type-checks against tensorrt-stubs (TensorRT itself cannot be installed here)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "trt_typecheck.sh"


@pytest.fixture(scope="module")
def checker():
    result = subprocess.run(["bash", str(SCRIPT)], cwd=REPO, capture_output=True, text=True,
                            timeout=600, check=False)
    mypy = REPO / ".venv-trtcheck" / "bin" / "mypy"
    if not mypy.exists():
        pytest.skip(f"could not create the check environment (no network?): {result.stderr[-300:]}")
    return result, mypy


def test_tensorrt_modules_pass_the_static_check(checker):
    result, _ = checker
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found in 4 source files" in result.stdout


def test_the_check_catches_apis_removed_in_tensorrt_10(checker, tmp_path):
    _, mypy = checker
    bad = tmp_path / "old_api.py"
    bad.write_text(
        "import tensorrt as trt\n"
        "def run(context: trt.IExecutionContext, builder: trt.Builder, net: trt.INetworkDefinition,\n"
        "        config: trt.IBuilderConfig) -> None:\n"
        "    builder.build_engine(net, config)\n"
        "    context.execute_async_v2([0, 0], 0)\n"
    )
    assert shutil.which("bash")
    result = subprocess.run([str(mypy), "--config-file", str(REPO / "tools/trt_mypy.ini"), str(bad)],
                            cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 1
    assert '"Builder" has no attribute "build_engine"' in result.stdout
    assert '"IExecutionContext" has no attribute "execute_async_v2"' in result.stdout
