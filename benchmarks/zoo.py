"""The zoo study: every family of the zoo trained on Multi30k de→en with the same budget, then one
report (docs/zoo.md) with parameters, Mult-Adds, training speed, validation loss, test sacreBLEU
and decode speed, and the pictures.

    python benchmarks/zoo.py train  [--jobs 2]      # resumable: rerun to continue where it stopped
    python benchmarks/zoo.py report                 # evaluate, time, write the tables and plots
                                                    # (time only on a quiet machine: no training running)
    python benchmarks/zoo.py all                    # both

Budget: the same number of updates of the same batches for every run (`--updates` 240 of
`--max-tokens` 1,500, warm-up 150), not the same wall-clock. On a shared 2-core machine,
wall-clock depends on what else runs (the study's own jobs, tests, other work) and on which runs
happen to share the CPU, so equal time would not be an equal budget; equal updates of equal
batches are, and the per-update cost is reported separately as training tokens/s, measured side
by side in one timed run (`report`), not taken from the logs of jobs that shared the machine.
The default is sized so that the whole study (9 runs near 10M parameters, 2 near 3M) trains in
about 1.5 hours of a 2-core machine: a session here keeps no run directory for the next one, so
the study has to finish in one. Every run uses the inverse-sqrt schedule, which does not depend on
the total, so raising `--updates` later continues each run exactly as if it had been asked for
the larger budget from the start.

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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "multi30k"
DEFAULT_STUDY_DIR = REPO / "runs" / "zoo"
DEFAULT_UPDATES = 240
DEFAULT_MAX_TOKENS = 1500
DEFAULT_WARMUP = 150
VALIDATE_EVERY = 40  # points on the validation curves
SEED = 1


@dataclass(frozen=True)
class Run:
    """One row of the study: a preset, maybe with overrides, under a short name."""

    name: str
    preset: str
    label: str  # how tables and plots name it
    overrides: tuple[str, ...] = field(default=())


RUNS = (  # training order: the baseline pair, the rest, the cheap small pair last (fills the end)
    Run("dynamicconv", "dynamicconv_multi30k_de_en", "DynamicConv"),
    Run("transformer", "transformer_multi30k_de_en", "Transformer"),
    Run("lightconv", "lightconv_multi30k_de_en", "LightConv (DropConnect per head, tap)"),
    Run("lightconv_position", "lightconv_multi30k_de_en", "LightConv (DropConnect per position)",
        ("lightconv_dropconnect=position",)),
    Run("synth_random", "synthesizer_random_multi30k_de_en", "Synthesizer Random"),
    Run("synth_factorized_random", "synthesizer_factorized_random_multi30k_de_en", "Synthesizer Factorized Random"),
    Run("synth_dense", "synthesizer_dense_multi30k_de_en", "Synthesizer Dense"),
    Run("synth_random_vanilla", "synthesizer_random_vanilla_multi30k_de_en", "Synthesizer Random + dot-product"),
    Run("lite_transformer", "lite_transformer_multi30k_de_en", "Lite Transformer"),
    Run("lite_transformer_small", "lite_transformer_small_multi30k_de_en", "Lite Transformer (small)"),
    Run("transformer_small", "transformer_small_multi30k_de_en", "Transformer (small)"),
)


@dataclass(frozen=True)
class Budget:
    """What every run gets: the same updates of the same batches, the same warm-up."""

    updates: int = DEFAULT_UPDATES
    max_tokens: int = DEFAULT_MAX_TOKENS
    warmup_updates: int = DEFAULT_WARMUP


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


def train_run(run: Run, data_dir: Path, study_dir: Path, budget: Budget) -> str:
    """Train (or resume) one run to the budget's updates on one thread; returns a status line."""
    run_dir = study_dir / run.name
    updates = budget.updates
    if updates_done(run_dir) >= updates:
        return f"{run.name}: done ({updates} updates)"
    run_dir.mkdir(parents=True, exist_ok=True)
    args = ["train", str(data_dir), "--arch", run.preset, "--save-dir", str(run_dir), "--max-update", str(updates),
            "--max-tokens", str(budget.max_tokens), "--warmup-updates", str(budget.warmup_updates),
            "--validate-interval-updates", str(VALIDATE_EVERY), "--save-interval-updates", str(VALIDATE_EVERY),
            "--no-valid-bleu", "--seed", str(SEED), "--amp", "off", "--device", "cpu", "--keep-last", "3"]
    for override in run.overrides:
        args += ["--set", override]
    started = time.perf_counter()
    convtrans(*args, log=run_dir / "train.log")
    return f"{run.name}: trained to {updates} updates in {time.perf_counter() - started:.0f} s"


def train_all(runs: list[Run], data_dir: Path, study_dir: Path, budget: Budget, jobs: int) -> None:
    """Train the runs `jobs` at a time, in order; after a failure no further run starts."""
    failed: list[str] = []

    def train_one(run: Run) -> None:
        if failed:
            return
        try:
            print(train_run(run, data_dir, study_dir, budget), flush=True)
        except subprocess.CalledProcessError as err:
            failed.append(run.name)
            print(f"{run.name}: convtrans train exited {err.returncode}; see {study_dir / run.name / 'train.log'}",
                  flush=True)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(train_one, runs))
    if failed:
        raise SystemExit(f"stopped: {', '.join(failed)} failed")


# ------------------------------------------------------------------------------------ report
def best_checkpoint(run_dir: Path) -> Path | None:
    path = run_dir / "checkpoint_best"
    return path if path.is_dir() else None


def corpus_file(data: Path, side: str, split: str = "test_2016_flickr") -> Path:
    plain = data / f"{split}.{side}"
    return plain if plain.is_file() else plain.with_name(plain.name + ".gz")


def evaluate_bleu(run_dir: Path, data: Path) -> dict[str, Any]:
    """Test sacreBLEU of checkpoint_best with its generation defaults (beam 5), cached in
    test.json next to the hypotheses until checkpoint_best changes."""
    from convtrans import checkpoint as ckpt
    from convtrans.data.corpus import read_lines
    from convtrans.scoring import ScoreOptions, score

    best = run_dir / "checkpoint_best"
    update = ckpt.read(best, verify=False).extra.get("update")
    cache = run_dir / "test.json"
    marker = (best / "model.safetensors").stat().st_mtime_ns
    if cache.is_file():
        cached = json.loads(cache.read_text(encoding="utf-8"))
        if cached.get("checkpoint_mtime_ns") == marker:
            return cached
    from convtrans.inference.translator import Translator

    sources = list(read_lines(corpus_file(data, "de")))
    references = list(read_lines(corpus_file(data, "en")))
    # the exact path: the study compares models, not int8's rounding (test sources are single sentences)
    hyps = Translator(best, device="cpu", split=False, precision="fp32").translate(sources)
    (run_dir / "test.hyp").write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
    bleu = score(hyps, [references], ScoreOptions(metrics=("bleu",)))[0]
    result = {"test_bleu": round(bleu.score, 2), "bleu_signature": bleu.signature, "checkpoint_mtime_ns": marker,
              "checkpoint_update": update}
    cache.write_text(json.dumps(result) + "\n", encoding="utf-8")
    return result


def run_record(run: Run, study_dir: Path) -> dict[str, Any]:
    """What the run's own files say: costs of its configuration, validation history."""
    from convtrans import checkpoint as ckpt
    from convtrans.costs import measure

    run_dir = study_dir / run.name
    config = ckpt.read(run_dir / "checkpoint_best", verify=False).model_config
    costs = measure(config)
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
               if line.strip()]
    valid = [r for r in history if r.get("type") == "valid"]
    best = min(valid, key=lambda r: r["loss"]) if valid else {}
    return {"name": run.name, "label": run.label, "preset": run.preset, "overrides": list(run.overrides),
            "parameters": costs.parameters, "non_embedding_parameters": costs.parameters - costs.embedding_parameters,
            "mult_adds": costs.mult_adds, "updates": updates_done(run_dir), "best_valid_loss": best.get("loss"),
            "best_valid_update": best.get("update")}


def require_quiet(study_dir: Path) -> None:
    """Timing while a study run trains measures the load, not the models: refuse, naming the run.
    (Briefly taking each run directory's lock is how to ask; a training that starts meanwhile is
    told the directory is busy, as it would be for any second writer.)"""
    from convtrans.errors import UserError
    from convtrans.locking import run_dir_lock

    for run_dir in sorted(p for p in study_dir.iterdir() if (p / "metrics.jsonl").is_file()):
        try:
            with run_dir_lock(run_dir):
                pass
        except UserError as err:
            raise SystemExit(f"timing needs a quiet machine: {err} (or run report with --no-timing)") from None


def time_runs(records: list[dict[str, Any]], study_dir: Path, data: Path, data_dir: Path, rounds: int,
              max_tokens: int) -> None:
    """Training tokens/s (the same batches of the study's size, one process, rotating order) and decode tokens/s at
    beam 5, batch 32, 20-subword outputs (rotating order, `rounds` rounds, medians), one thread."""
    import statistics

    import torch

    from convtrans import checkpoint as ckpt
    from convtrans.bench.decode import run_decode_bench
    from convtrans.bench.train_speed import fixed_batches, time_training
    from convtrans.config import preset_recipe
    from convtrans.data.corpus import read_lines

    torch.set_num_threads(1)
    names = [str(r["name"]) for r in records]
    configs = {name: ckpt.read(study_dir / name / "checkpoint_best", verify=False).model_config for name in names}
    train_cfg, _ = preset_recipe(str(records[0]["preset"]))
    batches = fixed_batches(data_dir, max_tokens, count=2)
    train_speed = time_training(configs, batches, train_cfg, rounds=rounds)
    lines = list(read_lines(corpus_file(data, "de")))[:96]
    decode: dict[str, list[float]] = {name: [] for name in names}
    for round_no in range(rounds):
        order = names[round_no % len(names):] + names[: round_no % len(names)]
        for name in order:
            row = run_decode_bench([str(study_dir / name / "checkpoint_best")], lines, [5], [32], output_length=20)[0]
            decode[name].append(row.tokens_per_s)
    for record in records:
        record["train_tokens_per_s"] = round(train_speed[str(record["name"])], 1)
        record["decode_tokens_per_s"] = round(statistics.median(decode[str(record["name"])]), 1)


def report(runs: list[Run], study_dir: Path, data: Path, data_dir: Path, out_dir: Path, timing: bool,
           rounds: int, max_tokens: int = DEFAULT_MAX_TOKENS) -> list[dict[str, Any]]:
    """Evaluate every run that has a checkpoint_best, time them (unless `timing` is off: keep the
    previous timings), and write results.json, the runs' metrics and the pictures to `out_dir`."""
    from convtrans.plot import plot_runs

    if timing:
        require_quiet(study_dir)  # before the evaluation, not after it
    out_dir.mkdir(parents=True, exist_ok=True)
    previous = {}
    if (out_dir / "results.json").is_file():
        previous = {r["name"]: r for r in json.loads((out_dir / "results.json").read_text(encoding="utf-8"))}
    records = []
    for run in runs:
        if best_checkpoint(study_dir / run.name) is None:
            continue
        record = run_record(run, study_dir)
        record.update(evaluate_bleu(study_dir / run.name, data))
        for key in ("train_tokens_per_s", "decode_tokens_per_s"):
            record[key] = previous.get(run.name, {}).get(key)
        records.append(record)
        print(f"{run.name}: {record['updates']} updates, valid loss {record['best_valid_loss']}, "
              f"test BLEU {record['test_bleu']}", flush=True)
    if timing and records:
        time_runs(records, study_dir, data, data_dir, rounds, max_tokens)
    (out_dir / "results.json").write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
    metrics_dir = out_dir / "metrics"
    metrics_dir.mkdir(exist_ok=True)
    for record in records:
        source = study_dir / str(record["name"]) / "metrics.jsonl"
        (metrics_dir / f"{record['name']}.jsonl").write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
    plot_runs([study_dir / str(r["name"]) for r in records], out_dir, "loss", out_dir / "results.json",
              labels=[str(r["label"]) for r in records])
    write_table(records, out_dir.parent / "zoo.md")
    return records


TABLE_START, TABLE_END = "<!-- results:start (benchmarks/zoo.py report) -->", "<!-- results:end -->"


def results_table(records: list[dict[str, Any]]) -> str:
    def number(value: Any, digits: int = 0, scale: float = 1.0) -> str:
        return "–" if value is None else f"{float(value) / scale:,.{digits}f}"

    lines = ["| model | parameters (non-embedding) | Mult-Adds | updates | best valid loss (update) | test BLEU "
             "| train tokens/s | decode tokens/s, beam 5 |", "|---|---|---|---|---|---|---|---|"]
    for r in records:
        sizes = f"{number(r['parameters'], 2, 1e6)}M ({number(r['non_embedding_parameters'], 2, 1e6)}M)"
        lines.append(f"| {r['label']} | {sizes} "
                     f"| {number(r['mult_adds'], 1, 1e6)}M | {r['updates']} "
                     f"| {number(r['best_valid_loss'], 3)} ({r['best_valid_update']}) | {number(r['test_bleu'], 2)} "
                     f"| {number(r['train_tokens_per_s'])} | {number(r['decode_tokens_per_s'])} |")
    signatures = sorted({str(r["bleu_signature"]) for r in records})
    return "\n".join(lines) + "\n\nBLEU signature: " + "; ".join(f"`{s}`" for s in signatures) + "\n"


def write_table(records: list[dict[str, Any]], document: Path) -> None:
    """Replace the generated block of `document` (docs/zoo.md) with the table, if it has one."""
    if not document.is_file() or not records:
        return
    text = document.read_text(encoding="utf-8")
    if TABLE_START not in text or TABLE_END not in text:
        return
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    document.write_text(f"{head}{TABLE_START}\n{results_table(records)}{TABLE_END}{tail}", encoding="utf-8")


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer no smaller than `minimum`, else argparse's one-line usage error
    (before any data is prepared or any run is started)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum} (got {value})")
        return value

    return parse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("train", "report", "all"))
    parser.add_argument("--study-dir", type=Path, default=DEFAULT_STUDY_DIR)
    parser.add_argument("--data", type=Path, default=DATA, help="folder with train/val/test_2016_flickr .de/.en(.gz)")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--updates", type=at_least(1), default=DEFAULT_UPDATES, help="the budget of every run")
    parser.add_argument("--max-tokens", type=at_least(1), default=DEFAULT_MAX_TOKENS, help="tokens per batch, every run")
    parser.add_argument("--warmup-updates", type=at_least(0), default=DEFAULT_WARMUP,
                        help="warm-up of every run's schedule")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once (one thread each)")
    parser.add_argument("--runs", default="", help="comma-separated run names (default: all)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "zoo", help="where report writes")
    parser.add_argument("--no-timing", dest="timing", action="store_false",
                        help="report without timing (keeps earlier timings): for a machine that is busy")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds (medians)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, stop_children)
    signal.signal(signal.SIGINT, stop_children)
    wanted = [name for name in args.runs.split(",") if name]
    unknown = sorted(set(wanted) - {r.name for r in RUNS})
    if unknown:
        parser.error(f"unknown run {', '.join(unknown)}; the study's runs: {', '.join(r.name for r in RUNS)}")
    chosen = [r for r in RUNS if not wanted or r.name in wanted]
    data_dir = prepare_data(args.study_dir, args.data, args.vocab_size)
    if args.step in ("train", "all"):
        train_all(chosen, data_dir, args.study_dir, Budget(args.updates, args.max_tokens, args.warmup_updates), args.jobs)
    if args.step in ("report", "all"):
        report(chosen, args.study_dir, args.data, data_dir, args.out, args.timing, args.rounds, args.max_tokens)


if __name__ == "__main__":
    main()
