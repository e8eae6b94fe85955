#!/usr/bin/env bash
# Issues 20 and 29: the Triton kernels measured, and the zoo trained at a real budget, on a GPU,
# in one prepared run of at most ~7 minutes.
#
# Run on a lent GPU machine through the device tool, from the repository root:
#     benchmarks/gpu.sh            (writes under $OUT, else ./gpu-out)
# The machine's image has PyTorch, Triton, typer, rich, sacrebleu, sentencepiece and safetensors;
# sacremoses and rouge-score (and nltk) are carried as wheels in .whl/ (benchmarks/gpu_wheels.sh
# downloads them here; name .whl in the tool's `carry`). convtrans runs from the checkout
# (PYTHONPATH), nothing is installed into the image.
#
# The zoo part needs the study's data dir, made here and carried (runs/ is git-ignored):
#     benchmarks/gpu_zoo_data.sh      (runs/gpu-data: Multi30k preprocessed as the study does, 3 MB)
# and the device tool's carry = [".whl", "runs/gpu-data"].
#
# Steps, each with its own time limit so one slow step cannot eat the others:
#   1. the zoo (benchmarks/gpu_zoo.py): all 11 study runs trained at once for ZOO_SECONDS (bf16,
#      the shipped recipe's batches, at most 40 epochs, patience 4), then test sacreBLEU of each
#      checkpoint_best; meanwhile the `gpu` tests (kernels vs reference, values and gradients,
#      fp32/bf16/fp16, a zoo model), which time nothing
#   2. `convtrans bench kernels`: lightconv and dynamicconv, forward and forward+backward,
#      K in 3..31, T in 128..8192 (B 8, C 1024), bf16, JSON (on the then idle GPU)
#   3. the layer benchmark: a DynamicConv layer against self-attention of equal width
#   4. benchmarks/gpu_goals.py: the issue's goals judged from the JSON
# Then benchmarks/gpu_fold.py FILES_DIR, here, writes the results into docs/.
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

ZOO_SECONDS="${ZOO_SECONDS:-150}"
echo "== zoo: 11 runs for ${ZOO_SECONDS} s each, at once" | tee "$OUT/zoo.log"
timeout $((ZOO_SECONDS + 200)) python3 benchmarks/gpu_zoo.py --data runs/gpu-data/data --raw runs/gpu-data/raw \
    --out "$OUT/zoo" --seconds "$ZOO_SECONDS" --eval-seconds 60 >> "$OUT/zoo.log" 2>&1 &
zoo_pid=$!
echo "== gpu tests" | tee "$OUT/gpu.log"
timeout 150 python3 -m pytest -m gpu tests/gpu -q -p no:cacheprovider -o addopts="" 2>&1 | tee -a "$OUT/gpu.log"
tests_status=${PIPESTATUS[0]}
wait "$zoo_pid"
echo "zoo exit status: $?" | tee -a "$OUT/zoo.log"
# what comes back: at most 8 files; the runs' logs, metrics, hypotheses and results in one archive
# (no checkpoints: 11 x 40 MB would not come back)
if [ -d "$OUT/zoo" ]; then
    cp "$OUT/zoo/results.json" "$OUT/zoo_results.json" 2>/dev/null
    tar -czf "$OUT/zoo.tar.gz" -C "$OUT" --exclude='checkpoint_*' --exclude='*.safetensors' --exclude='train_state.pt' zoo \
        && rm -rf "$OUT/zoo"
fi

SHAPES="8x128x1024,8x512x1024,8x1024x1024,8x2048x1024,8x8192x1024"
echo "== bench kernels" | tee -a "$OUT/gpu.log"
timeout 100 python3 -m convtrans bench kernels --dtype bf16 --device cuda --shapes "$SHAPES" --kernels 3,7,15,31 \
    --json-out "$OUT/kernels_bf16.json" 2>&1 | tee -a "$OUT/gpu.log"
echo "== bench layers" | tee -a "$OUT/gpu.log"
timeout 60 python3 -m convtrans bench kernels --dtype bf16 --device cuda --shapes "8x512x1024,8x1024x1024,8x8192x1024" \
    --kernels 7,31 --ops dynamicconv --layers --json-out "$OUT/layers_bf16.json" 2>&1 | tee -a "$OUT/gpu.log"

python3 benchmarks/gpu_goals.py "$OUT"/kernels_bf16.json "$OUT"/layers_bf16.json 2>&1 | tee "$OUT/goals.md"
echo "gpu tests exit status: $tests_status" | tee -a "$OUT/gpu.log"
exit "$tests_status"
