#!/usr/bin/env bash
# The whole GPU benchmark in one command, for a machine with a GPU, PyTorch and JAX but neither
# Keras nor TensorFlow, and no network (the lent H200):
#
#   benchmarks/gpu/run.sh OUTDIR [python -m benchmarks.gpu options]
#
# 1. installs the carried wheels of benchmarks/gpu/wheels/ (benchmarks/gpu/wheels.sh fetches them:
#    Keras and what that machine lacks of its needs) into a folder of its own, never into the
#    system's packages, and checks that Keras loads on JAX;
# 2. runs python -m benchmarks.gpu, which writes OUTDIR/gpu.md (the table) and OUTDIR/gpu.json
#    (every figure); its output is also in OUTDIR/log.txt, the GPU's description in
#    OUTDIR/nvidia-smi.txt.
# Each step has its time limit, and the whole run ends within GPU_RUN_SECONDS (default 470):
# the rows that do not fit are listed as not run. PYTHON picks the interpreter (default python3);
# GPU_RUN_SITE the folder the wheels go to (default /tmp/keras-resnet-gpu-site, emptied first).
# Exit status: the benchmark's (0 at least one row measured, 1 none, 2 a usage error), or 2 for
# a missing OUTDIR or wheel folder, 1 when the wheels do not install or Keras does not load.
set -euo pipefail

if [[ $# -lt 1 || $1 == -* ]]; then
    echo "usage: benchmarks/gpu/run.sh OUTDIR [python -m benchmarks.gpu options]" >&2
    exit 2
fi
out=$(mkdir -p "$1" && cd "$1" && pwd)
shift
repo=$(cd "$(dirname "$0")/../.." && pwd)
wheels=$repo/benchmarks/gpu/wheels
python=${PYTHON:-python3}
site=${GPU_RUN_SITE:-/tmp/keras-resnet-gpu-site}
limit=${GPU_RUN_SECONDS:-470}
if ! compgen -G "$wheels/keras-*.whl" >/dev/null; then
    echo "run.sh: error: no Keras wheel in $wheels; run benchmarks/gpu/wheels.sh first" >&2
    exit 2
fi

run() {
    echo "run.sh: $(date -u +%Y-%m-%dT%H:%M:%SZ), $("$python" --version 2>&1), limit ${limit} s"
    { nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv \
        && nvidia-smi; } >"$out/nvidia-smi.txt" 2>&1 || echo "no nvidia-smi" >"$out/nvidia-smi.txt"

    rm -rf "$site"
    timeout 90 "$python" -m pip install --quiet --no-index --find-links "$wheels" --no-deps \
        --no-compile --no-cache-dir --target "$site" keras==3.15.1 namex==0.1.0 optree==0.20.0 || {
        echo "run.sh: the carried wheels did not install (exit $?)"; return 1; }
    export PYTHONPATH="$site:$repo${PYTHONPATH:+:$PYTHONPATH}"
    cd "$repo"
    # Loads every module Keras needs, on the CPU so that this check holds no GPU memory.
    timeout 90 env KERAS_BACKEND=jax JAX_PLATFORMS=cpu "$python" -c \
        'import sys, keras; assert "tensorflow" not in sys.modules; print("keras", keras.__version__, keras.backend.backend())' || {
        echo "run.sh: Keras does not load on JAX here (exit $?)"; return 1; }

    left=$((limit - SECONDS))
    if ((left < 60)); then
        echo "run.sh: ${left} s left of GPU_RUN_SECONDS=${limit}: too little to run a row"
        return 1
    fi
    # The budget leaves the hard limit room for the last row's stop and the table's writing.
    status=0
    timeout --kill-after=10 "$left" "$python" -m benchmarks.gpu --out "$out" \
        --budget $((left - 30 > 30 ? left - 30 : 30)) "$@" || status=$?
    echo "run.sh: exit $status after ${SECONDS} s; $(du -sh "$wheels" | cut -f1) of wheels carried"
    return "$status"
}

set +e
run "$@" 2>&1 | tee "$out/log.txt"
exit "${PIPESTATUS[0]}"
