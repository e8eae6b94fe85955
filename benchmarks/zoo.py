"""The zoo study: every family of the zoo trained on Multi30k de→en with the same budget, then one
report (docs/zoo.md) with parameters, Mult-Adds, training speed, validation loss, test sacreBLEU
and decode speed, and the pictures.

    python benchmarks/zoo.py train  [--jobs 2]      # resumable: rerun to continue where it stopped
    python benchmarks/zoo.py report                 # evaluate, time, write the tables and plots
    python benchmarks/zoo.py all                    # both

Budget: the same number of updates for every run (`--updates`, 1,000 by default), not the same
wall-clock. On a shared 2-core machine, wall-clock depends on what else runs (the study's own
jobs, tests, other work) and on which runs happen to share the CPU, so equal time would not be
an equal budget; equal updates of equal batches (3,000 tokens) are, and the per-update cost is
reported separately as training tokens/s, measured side by side in one timed run (`report`), not
taken from the logs of jobs that shared the machine. Every run uses the inverse-sqrt schedule,
which does not depend on the total, so raising `--updates` later continues each run exactly as
if it had been asked for the larger budget from the start.

Each run is a plain `convtrans train` run directory under `--study-dir` (default runs/zoo), one
thread each; the study only decides the order and how many run at once. Killing the study and
starting it again resumes every run from its newest intact checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "multi30k"
DEFAULT_STUDY_DIR = REPO / "runs" / "zoo"
DEFAULT_UPDATES = 1000
VALIDATE_EVERY = 100  # points on the validation curves
SEED = 1


@dataclass(frozen=True)
class Run:
    """One row of the study: a preset, maybe with overrides, under a short name."""

    name: str
    preset: str
    label: str  # how tables and plots name it
    overrides: tuple[str, ...] = field(default=())


RUNS = (
    Run("dynamicconv", "dynamicconv_multi30k_de_en", "DynamicConv"),
    Run("transformer", "transformer_multi30k_de_en", "Transformer"),
    Run("lightconv", "lightconv_multi30k_de_en", "LightConv (DropConnect per head, tap)"),
    Run("lightconv_position", "lightconv_multi30k_de_en", "LightConv (DropConnect per position)",
        ("lightconv_dropconnect=position",)),
    Run("synth_dense", "synthesizer_dense_multi30k_de_en", "Synthesizer Dense"),
    Run("synth_random", "synthesizer_random_multi30k_de_en", "Synthesizer Random"),
    Run("synth_factorized_random", "synthesizer_factorized_random_multi30k_de_en", "Synthesizer Factorized Random"),
    Run("synth_random_vanilla", "synthesizer_random_vanilla_multi30k_de_en", "Synthesizer Random + dot-product"),
    Run("lite_transformer", "lite_transformer_multi30k_de_en", "Lite Transformer"),
    Run("lite_transformer_small", "lite_transformer_small_multi30k_de_en", "Lite Transformer (small)"),
    Run("transformer_small", "transformer_small_multi30k_de_en", "Transformer (small)"),
)
SMALL_BUDGET_PAIR = ("lite_transformer_small", "transformer_small")


CHILDREN: set[subprocess.Popen[bytes]] = set()  # running convtrans processes, stopped with the study


def convtrans(*args: str, threads: int = 1, log: Path | None = None) -> None:
    """Run the convtrans CLI in a child process on `threads` threads (its output appended to
    `log`); raises CalledProcessError when it fails."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "convtrans", *args]
    with open(log or os.devnull, "a", encoding="utf-8") as handle:
        handle.write(f"$ {' '.join(command)}\n")
        handle.flush()
        child = subprocess.Popen(command, env=env, stdout=handle if log else None, stderr=subprocess.STDOUT if log else None)
        CHILDREN.add(child)
        try:
            code = child.wait()
        finally:
            CHILDREN.discard(child)
    if code:
        raise subprocess.CalledProcessError(code, command)


def stop_children(signum: int, frame: object) -> None:  # noqa: ARG001 - signal handler signature
    """SIGTERM / Ctrl-C: each training saves its checkpoint on SIGTERM; wait for them, then exit."""
    for child in list(CHILDREN):
        child.terminate()
    for child in list(CHILDREN):
        child.wait()
    os._exit(128 + signum)


def prepare_data(study_dir: Path, data: Path, vocab_size: int) -> Path:
    """The shipped translator's preprocessing: joint 8k sentencepiece on train, val and test binarized."""
    destdir = study_dir / "data"
    if (destdir / "manifest.json").is_file():
        return destdir
    study_dir.mkdir(parents=True, exist_ok=True)
    convtrans("preprocess", "--source-lang", "de", "--target-lang", "en",
              "--trainpref", str(data / "train"), "--validpref", str(data / "val"),
              "--testpref", str(data / "test_2016_flickr"), "--destdir", str(destdir),
              "--vocab-size", str(vocab_size))
    return destdir


def updates_done(run_dir: Path) -> int:
    """The last update a run logged (0 before its first log line)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return 0
    done = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            done = max(done, int(json.loads(line).get("update", 0)))
    return done


def train_run(run: Run, data_dir: Path, study_dir: Path, updates: int) -> str:
    """Train (or resume) one run to `updates` updates on one thread; returns a status line."""
    run_dir = study_dir / run.name
    if updates_done(run_dir) >= updates:
        return f"{run.name}: done ({updates} updates)"
    run_dir.mkdir(parents=True, exist_ok=True)
    args = ["train", str(data_dir), "--arch", run.preset, "--save-dir", str(run_dir), "--max-update", str(updates),
            "--validate-interval-updates", str(VALIDATE_EVERY), "--save-interval-updates", str(VALIDATE_EVERY),
            "--no-valid-bleu", "--seed", str(SEED), "--amp", "off", "--device", "cpu", "--keep-last", "3"]
    for override in run.overrides:
        args += ["--set", override]
    started = time.perf_counter()
    convtrans(*args, log=run_dir / "train.log")
    return f"{run.name}: trained to {updates} updates in {time.perf_counter() - started:.0f} s"


def train_all(runs: list[Run], data_dir: Path, study_dir: Path, updates: int, jobs: int) -> None:
    """Train the runs `jobs` at a time, in order; after a failure no further run starts."""
    failed: list[str] = []

    def train_one(run: Run) -> None:
        if failed:
            return
        try:
            print(train_run(run, data_dir, study_dir, updates), flush=True)
        except subprocess.CalledProcessError as err:
            failed.append(run.name)
            print(f"{run.name}: convtrans train exited {err.returncode}; see {study_dir / run.name / 'train.log'}",
                  flush=True)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(train_one, runs))
    if failed:
        raise SystemExit(f"stopped: {', '.join(failed)} failed")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("train", "report", "all"))
    parser.add_argument("--study-dir", type=Path, default=DEFAULT_STUDY_DIR)
    parser.add_argument("--data", type=Path, default=DATA, help="folder with train/val/test_2016_flickr .de/.en(.gz)")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--updates", type=int, default=DEFAULT_UPDATES, help="the budget of every run")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once (one thread each)")
    parser.add_argument("--runs", default="", help="comma-separated run names (default: all)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, stop_children)
    signal.signal(signal.SIGINT, stop_children)
    chosen = [r for r in RUNS if not args.runs or r.name in args.runs.split(",")]
    data_dir = prepare_data(args.study_dir, args.data, args.vocab_size)
    if args.step in ("train", "all"):
        train_all(chosen, data_dir, args.study_dir, args.updates, args.jobs)


if __name__ == "__main__":
    main()
