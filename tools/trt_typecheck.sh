#!/usr/bin/env bash
# Static check of the TensorRT code against tensorrt-stubs, without TensorRT.
# The stubs go into a check-only folder (.venv-trtcheck), never into the runtime .venv: they
# make `import tensorrt` look available. Known defects of the stubs are patched there.
set -euo pipefail
cd "$(dirname "$0")/.."
STUBS_VERSION=10.13.0.35.1
CHECK=.venv-trtcheck
STAMP=$CHECK/.ready-$STUBS_VERSION
PY=${PYTHON:-python3}
MODULES=(edge/inference/engine_cache.py edge/inference/backends/tensorrt_build.py edge/inference/backends/tensorrt_backend.py ssum/commands/edge.py)

if [[ ! -f $STAMP ]]; then
    rm -rf "$CHECK"
    "$PY" -m venv "$CHECK"
    "$CHECK/bin/python" -m pip install --quiet mypy numpy
    "$CHECK/bin/python" -m pip install --quiet --no-deps "tensorrt-stubs==$STUBS_VERSION"
    SITE=$("$CHECK/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    # Make mypy use the stubs as an installed typed package (py.typed sits in tensorrt_stubs/
    # only), drop the import of tensorrt_libs (absent without TensorRT), and fix two syntax
    # errors: a parameter named `in` (a keyword), and a parameter without a default after
    # parameters with defaults in add_scale_nd.
    touch "$SITE/tensorrt/py.typed" "$SITE/tensorrt_bindings/py.typed"
    sed -i '/^import tensorrt_libs/d' "$SITE/tensorrt/__init__.pyi" "$SITE/tensorrt_bindings/__init__.pyi"
    sed -i -E 's/\bin: (list\[)/in_: \1/g; s/(power: Weights = None, channel_axis: int)\)/\1 = ...)/' \
        "$SITE/tensorrt_bindings/tensorrt.pyi"
    touch "$STAMP"
fi
"$CHECK/bin/mypy" --config-file tools/trt_mypy.ini "${MODULES[@]}"
