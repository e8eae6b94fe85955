#!/usr/bin/env bash
# The zoo part of benchmarks/gpu.sh reads the study's data, prepared here (the GPU machine has no
# ../shared): Multi30k de-en preprocessed exactly as benchmarks/zoo.py does (joint 8k
# sentencepiece; train, valid, test binarized) into runs/gpu-data/data, and the raw test files
# for sacreBLEU into runs/gpu-data/raw. About 3 MB; name runs/gpu-data in the device tool's carry.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
mkdir -p runs/gpu-data/raw
cp ../shared/data/multi30k/test_2016_flickr.de.gz ../shared/data/multi30k/test_2016_flickr.en.gz runs/gpu-data/raw/
"$PY" -c "
import sys; sys.path.insert(0, 'benchmarks')
from pathlib import Path
import zoo
zoo.prepare_data(Path('runs/gpu-data'), zoo.DATA, 8000)
"
du -sh runs/gpu-data
