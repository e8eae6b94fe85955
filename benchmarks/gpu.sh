#!/usr/bin/env bash
# Issue 20: the Triton kernels measured on a GPU, in one prepared run of at most ~8 minutes.
#
# Run on a lent GPU machine through the device tool, from the repository root:
#     benchmarks/gpu.sh            (writes under $OUT, else ./gpu-out)
# The machine's image has PyTorch, Triton, typer, rich, sacrebleu, sentencepiece and safetensors;
# sacremoses and rouge-score (and nltk) are carried as wheels in .whl/ (benchmarks/gpu_wheels.sh
# downloads them here; name .whl in the tool's `carry`). convtrans runs from the checkout
# (PYTHONPATH), nothing is installed into the image.
#
# Steps, each with its own time limit so one slow step cannot eat the others:
#   1. the `gpu` tests: kernels vs reference, values and gradients, fp32/bf16/fp16, a zoo model
#   2. `convtrans bench kernels`: lightconv and dynamicconv, forward and forward+backward,
#      K in 3..31, T in 128..8192 (B 8, C 1024), bf16, JSON
#   3. the layer benchmark: a DynamicConv layer against self-attention of equal width
#   4. benchmarks/gpu_goals.py: the issue's goals judged from the JSON
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || echo "warning: carried wheels did not install" >&2
    export PYTHONPATH="/tmp/site:$PWD"
else
    export PYTHONPATH="$PWD"
fi

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    python3 -c "import sys, torch, triton; print('python', sys.version.split()[0], 'torch', torch.__version__, 'triton', triton.__version__)"
} 2>&1 | tee "$OUT/machine.txt"

echo "== gpu tests" | tee "$OUT/gpu.log"
timeout 240 python3 -m pytest -m gpu tests/gpu -q -p no:cacheprovider -o addopts="" 2>&1 | tee -a "$OUT/gpu.log"
tests_status=${PIPESTATUS[0]}

SHAPES="8x128x1024,8x512x1024,8x1024x1024,8x2048x1024,8x8192x1024"
echo "== bench kernels" | tee -a "$OUT/gpu.log"
timeout 150 python3 -m convtrans bench kernels --dtype bf16 --device cuda --shapes "$SHAPES" --kernels 3,7,15,31 \
    --json-out "$OUT/kernels_bf16.json" 2>&1 | tee -a "$OUT/gpu.log"
echo "== bench layers" | tee -a "$OUT/gpu.log"
timeout 90 python3 -m convtrans bench kernels --dtype bf16 --device cuda --shapes "8x512x1024,8x1024x1024,8x8192x1024" \
    --kernels 7,31 --ops dynamicconv --layers --json-out "$OUT/layers_bf16.json" 2>&1 | tee -a "$OUT/gpu.log"

python3 benchmarks/gpu_goals.py "$OUT"/kernels_bf16.json "$OUT"/layers_bf16.json 2>&1 | tee "$OUT/goals.md"
echo "gpu tests exit status: $tests_status" | tee -a "$OUT/gpu.log"
exit "$tests_status"
