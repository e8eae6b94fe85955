"""The zoo study at a real budget on one GPU: the 11 runs of benchmarks/zoo.py trained at once.

    python benchmarks/gpu_zoo.py --data runs/gpu-data/data --raw runs/gpu-data/raw --out $OUT/zoo --seconds 200
    python benchmarks/gpu_zoo.py ... --device cpu --seconds 20 --max-update 6 --runs dynamicconv,transformer   # mechanics

Every run is a plain `convtrans train` process with its preset's own recipe (learning rate,
warm-up, 3,000-token batches: the shipped translator's), bf16 on CUDA, validated each epoch,
stopped by whichever comes first: `--seconds` of training (convtrans's --stop-time-hours, so a
stopped run still has its checkpoint_best), 40 epochs, or 4 validations without improvement.
All run at once on the one device (several processes; the models are ~10M parameters, far from
filling it). Then each run's checkpoint_best translates Multi30k test_2016_flickr at beam 5 (the
exact path) and sacreBLEU scores it, all runs at once again. Everything is time-boxed: a run
whose training or evaluation runs out of time still reports what it has.

Writes `--out`/results.json (one record per run: updates, epochs, best validation loss and its
update, test BLEU with signature, training seconds, parameters and Mult-Adds) and each run's
metrics.jsonl and test hypotheses; benchmarks/gpu_fold.py turns them into docs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from zoo import RUNS, Run, run_record  # noqa: E402

MAX_EPOCHS, PATIENCE, MAX_TOKENS = 40, 4, 3000


def start_training(run: Run, data: Path, study: Path, device: str, seconds: float, max_update: int) -> subprocess.Popen:
    run_dir = study / run.name
    run_dir.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "convtrans", "train", str(data), "--arch", run.preset, "--save-dir", str(run_dir),
            "--device", device, "--amp", "bf16" if device == "cuda" else "off", "--max-tokens", str(MAX_TOKENS),
            "--max-epoch", str(MAX_EPOCHS), "--patience", str(PATIENCE), "--stop-time-hours", f"{seconds / 3600:.6f}",
            "--no-valid-bleu", "--seed", "1", "--keep-last", "1"]
    if max_update:
        args += ["--max-update", str(max_update), "--validate-interval-updates", str(max(1, max_update // 2))]
    for override in run.overrides:
        args += ["--set", override]
    log = open(run_dir / "train.log", "w", encoding="utf-8")  # noqa: SIM115 - closed with the process
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)


def start_evaluation(run: Run, study: Path, raw: Path, device: str, sentences: int) -> subprocess.Popen | None:
    """translate + score of checkpoint_best, in one child (its JSON goes to test.json)."""
    run_dir = study / run.name
    if not (run_dir / "checkpoint_best").is_dir():
        return None
    code = f"""
import gzip, json, sys
from convtrans.inference.translator import Translator
from convtrans.scoring import ScoreOptions, score
read = lambda p: gzip.open(p, "rt", encoding="utf-8").read().splitlines()[:{sentences}]
sources, refs = read({str(raw / 'test_2016_flickr.de.gz')!r}), read({str(raw / 'test_2016_flickr.en.gz')!r})
hyps = Translator({str(run_dir / 'checkpoint_best')!r}, device={device!r}, split=False, precision="fp32").translate(sources)
open({str(run_dir / 'test.hyp')!r}, "w", encoding="utf-8").write("".join(h + "\\n" for h in hyps))
bleu = score(hyps, [refs], ScoreOptions(metrics=("bleu",)))[0]
json.dump({{"test_bleu": round(bleu.score, 2), "bleu_signature": bleu.signature, "test_sentences": len(hyps)}},
          open({str(run_dir / 'test.json')!r}, "w"))
"""
    log = open(run_dir / "test.log", "w", encoding="utf-8")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def wait_all(children: dict[str, subprocess.Popen | None], deadline: float) -> dict[str, str]:
    """Wait until all exit or the deadline passes; then SIGTERM (training saves on it), then kill."""
    status: dict[str, str] = {}
    for name, child in children.items():
        if child is None:
            status[name] = "skipped"
            continue
        try:
            status[name] = f"exit {child.wait(timeout=max(0.0, deadline - time.time()))}"
        except subprocess.TimeoutExpired:
            child.terminate()
            try:
                child.wait(timeout=30)
                status[name] = "stopped at the deadline"
            except subprocess.TimeoutExpired:
                child.kill()
                status[name] = "killed at the deadline"
    return status


def epochs(run_dir: Path) -> float | None:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
             if line.strip()] if (run_dir / "metrics.jsonl").is_file() else []
    values = [r.get("epoch") for r in lines if r.get("epoch") is not None]
    return max(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a convtrans data dir (benchmarks/zoo.py prepares it)")
    parser.add_argument("--raw", type=Path, required=True, help="folder with test_2016_flickr.de.gz / .en.gz")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=200, help="training time of every run (all at once)")
    parser.add_argument("--eval-seconds", type=float, default=90)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--runs", default="", help="comma-separated run names (default: all 11)")
    parser.add_argument("--max-update", type=int, default=0, help="also stop at this many updates (0: no limit)")
    parser.add_argument("--eval-sentences", type=int, default=1000)
    args = parser.parse_args()
    runs = [r for r in RUNS if not args.runs or r.name in args.runs.split(",")]
    study = args.out / "runs"
    started = time.time()
    children = {r.name: start_training(r, args.data, study, args.device, args.seconds, args.max_update) for r in runs}
    train_status = wait_all(children, started + args.seconds + 120)  # start-up, the last validation and save
    trained = time.time()
    evals = {r.name: start_evaluation(r, study, args.raw, args.device, args.eval_sentences) for r in runs}
    eval_status = wait_all(evals, trained + args.eval_seconds)
    records: list[dict[str, Any]] = []
    for run in runs:
        run_dir = study / run.name
        record: dict[str, Any] = {"name": run.name, "label": run.label, "train": train_status[run.name],
                                  "evaluation": eval_status[run.name], "epochs": epochs(run_dir)}
        if (run_dir / "checkpoint_best").is_dir():
            record.update(run_record(run, study))
        if (run_dir / "test.json").is_file():
            record.update(json.loads((run_dir / "test.json").read_text(encoding="utf-8")))
        records.append(record)
        print(json.dumps(record), flush=True)
    summary = {"device": args.device, "seconds": args.seconds, "wall_seconds": round(time.time() - started, 1),
               "max_tokens": MAX_TOKENS, "max_epochs": MAX_EPOCHS, "patience": PATIENCE, "records": records}
    (args.out / "results.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
