"""Fold what benchmarks/gpu.sh brought back into the docs.

    python benchmarks/gpu_fold.py FILES_DIR        # the folder the device tool copied $OUT into

Reads machine.txt, goals.md (the kernel goals, benchmarks/gpu_goals.py) and zoo_results.json
(benchmarks/gpu_zoo.py) and rewrites three generated blocks, each between its markers (added at
the end of the document the first time):
- README.md `gpu-figures`: the machine, the kernel goals table, the zoo's best test BLEU;
- docs/zoo.md `gpu-zoo`: every run at the GPU budget (updates, epochs, why it stopped, best
  validation loss, test sacreBLEU with signature), next to the CPU study's table above it;
- models/dynamicconv_multi30k_de_en/README.md `gpu-hardware`: what the same recipe reaches
  on a GPU in minutes, beside the shipped CPU-trained weights.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def replace_block(document: Path, name: str, body: str) -> None:
    """Put `body` between `<!-- name:start -->` and `<!-- name:end -->` (appended if absent)."""
    start, end = f"<!-- {name}:start (benchmarks/gpu_fold.py) -->", f"<!-- {name}:end -->"
    text = document.read_text(encoding="utf-8")
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    document.write_text(text, encoding="utf-8")


def stopped_by(record: dict[str, Any], summary: dict[str, Any]) -> str:
    log = record.get("train", "")
    if "deadline" in log:
        return "killed at the deadline"
    epochs = record.get("epochs") or 0
    if epochs >= summary["max_epochs"]:
        return f"{summary['max_epochs']} epochs"
    best, updates = record.get("best_valid_update"), record.get("updates")
    if best is not None and updates is not None and best < updates:
        return "time or patience"
    return "time"


def zoo_table(summary: dict[str, Any]) -> str:
    def number(value: Any, digits: int = 0, scale: float = 1.0) -> str:
        return "–" if value is None else f"{float(value) / scale:,.{digits}f}"

    lines = ["| model | parameters | updates | epochs | stopped by | best valid loss (update) | test BLEU |",
             "|---|---|---|---|---|---|---|"]
    for r in summary["records"]:
        lines.append(f"| {r['label']} | {number(r.get('parameters'), 2, 1e6)}M | {number(r.get('updates'))} "
                     f"| {number(r.get('epochs'), 1)} | {stopped_by(r, summary)} "
                     f"| {number(r.get('best_valid_loss'), 3)} ({r.get('best_valid_update', '–')}) "
                     f"| {number(r.get('test_bleu'), 2)} |")
    signatures = sorted({str(r["bleu_signature"]) for r in summary["records"] if r.get("bleu_signature")})
    return "\n".join(lines) + ("\n\nBLEU signature: " + "; ".join(f"`{s}`" for s in signatures) if signatures else "")


def best_run(summary: dict[str, Any]) -> dict[str, Any] | None:
    scored = [r for r in summary["records"] if r.get("test_bleu") is not None]
    return max(scored, key=lambda r: r["test_bleu"]) if scored else None


def fold(files: Path, repo: Path = REPO) -> None:
    machine = (files / "machine.txt").read_text(encoding="utf-8").strip() if (files / "machine.txt").is_file() else ""
    goals = (files / "goals.md").read_text(encoding="utf-8").strip() if (files / "goals.md").is_file() else ""
    summary = json.loads((files / "zoo_results.json").read_text(encoding="utf-8")) \
        if (files / "zoo_results.json").is_file() else None
    machine_line = " ".join(machine.splitlines()[1:]) if machine else "not recorded"
    command = ("`benchmarks/gpu.sh` through the device tool (carry `.whl`, `runs/gpu-data`), then "
               "`python benchmarks/gpu_fold.py FILES_DIR`")
    budget = (f"all {len(summary['records'])} runs at once for {summary['seconds']:.0f} s of training each "
              f"(bf16, {summary['max_tokens']:,}-token batches, at most {summary['max_epochs']} epochs, patience "
              f"{summary['patience']}), then test sacreBLEU of each checkpoint_best (beam 5, exact path)") if summary else ""
    if summary:
        replace_block(repo / "docs" / "zoo.md", "gpu-zoo",
                      f"## The study at a GPU budget\n\nMachine: {machine_line}. {budget}. Command: {command}.\n\n"
                      f"{zoo_table(summary)}\n")
    best = best_run(summary) if summary else None
    zoo_line = (f"Zoo at a GPU budget ({budget}): best test BLEU {best['test_bleu']:.2f} ({best['label']}); "
                "every run in docs/zoo.md." if best else "Zoo at a GPU budget: no run finished.")
    replace_block(repo / "README.md", "gpu-figures",
                  f"GPU figures, measured on {machine_line} ({command}):\n\n{goals or 'kernel goals: not measured'}"
                  f"\n\n{zoo_line}\n")
    card = repo / "models" / "dynamicconv_multi30k_de_en" / "README.md"
    dynamicconv = next((r for r in summary["records"] if r["name"] == "dynamicconv"), None) if summary else None
    if dynamicconv and card.is_file():
        replace_block(card, "gpu-hardware",
                      f"### Hardware\n\nThe shipped weights were trained on a 2-core CPU (above). The same preset and "
                      f"recipe on one GPU ({machine_line}), sharing it with the other 10 study runs: "
                      f"{dynamicconv.get('updates')} updates ({dynamicconv.get('epochs')} epochs) in "
                      f"{summary['seconds']:.0f} s, best valid loss {dynamicconv.get('best_valid_loss')}, test BLEU "
                      f"{dynamicconv.get('test_bleu')} (docs/zoo.md); those weights are not shipped.\n")


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        raise SystemExit("usage: python benchmarks/gpu_fold.py FILES_DIR (the folder gpu.sh's $OUT came back as)")
    fold(Path(sys.argv[1]))
