#!/usr/bin/env bash
# Download, here, the wheels benchmarks/gpu.sh needs on the GPU machine (Python 3.12 there, no
# network): packages convtrans imports that its image lacks. They land in .whl/ (git-ignored via
# .git/info/exclude); name .whl in the device tool's `carry`.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
mkdir -p .whl
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
    -d .whl sacremoses nltk sentencex
# rouge-score is published as a source distribution only: build its (pure Python) wheel here
python3 -m pip wheel -q --no-deps -w .whl rouge-score
ls -la .whl
