"""Pictures of training runs: validation curves from any run directories' metrics.jsonl, and
quality-vs-cost scatter plots from a results table (the zoo study's, or anyone's).

matplotlib is an optional extra (`pip install 'convtrans[plot]'`); nothing else imports this
module, so the toolkit runs without it. Files are PNG, written with the Agg backend (no display).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convtrans.errors import UserError


@dataclass
class Curve:
    label: str
    updates: list[int]
    values: list[float]


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise UserError("plotting needs matplotlib: pip install 'convtrans[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def validation_curve(run_dir: Path, label: str | None = None, metric: str = "loss") -> Curve:
    """`metric` (loss, nll, ppl, bleu, rouge) at each validation of a run, from its metrics.jsonl."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{run_dir} has no metrics.jsonl (is it a convtrans run directory?)")
    updates, values = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"{path}:{number}: not a JSON line") from None
        if record.get("type") == "valid" and record.get(metric) is not None:
            updates.append(int(record["update"]))
            values.append(float(record[metric]))
    return Curve(label or Path(run_dir).name, updates, values)


LINE_STYLES = ("-", "--", ":", "-.")


def plot_curves(curves: Sequence[Curve], out: Path, metric: str = "loss", title: str = "") -> Path:
    """One line per run: `metric` against updates."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 5))
    for index, curve in enumerate(curves):
        if curve.updates:  # past the 10 colours of the cycle, a new line style keeps every run apart
            axes.plot(curve.updates, curve.values, marker=".", label=curve.label,
                      linestyle=LINE_STYLES[index // 10 % len(LINE_STYLES)])
    axes.set_xlabel("update")
    axes.set_ylabel(f"validation {metric}")
    axes.set_title(title or f"validation {metric}")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out


def plot_scatter(rows: Sequence[dict[str, Any]], x: str, y: str, out: Path, x_label: str, y_label: str,
                 title: str = "", log_x: bool = False) -> Path:
    """One labelled point per row (`label`, `x`, `y` keys); rows missing either value are skipped."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 5))
    for row in rows:
        if row.get(x) is None or row.get(y) is None:
            continue
        axes.scatter(row[x], row[y])
        axes.annotate(row.get("label", ""), (row[x], row[y]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if log_x:
        axes.set_xscale("log")
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out


def plot_runs(run_dirs: Sequence[Path], out_dir: Path, metric: str = "loss",
              results: Path | None = None, labels: Sequence[str] | None = None) -> list[Path]:
    """What `convtrans plot` draws: the validation curves of the runs, and with a results JSON
    (a list of rows with label, test_bleu, mult_adds, decode_tokens_per_s) the two scatter plots.
    Curves are named by `labels`, else by the run directories' names."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(labels) if labels else [Path(run_dir).name for run_dir in run_dirs]
    curves = [validation_curve(run_dir, name, metric) for run_dir, name in zip(run_dirs, names)]
    written = [plot_curves(curves, out_dir / f"validation_{metric}.png", metric)] if run_dirs else []
    if results is not None:
        try:
            rows = json.loads(Path(results).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(f"cannot read results {results}: {err}") from None
        written.append(plot_scatter(rows, "mult_adds", "test_bleu", out_dir / "bleu_vs_mult_adds.png",
                                    "Mult-Adds per sentence pair (30+30 tokens)", "test BLEU", "BLEU vs Mult-Adds",
                                    log_x=True))
        written.append(plot_scatter(rows, "decode_tokens_per_s", "test_bleu", out_dir / "bleu_vs_decode_speed.png",
                                    "decode tokens/s (beam 5, batch 32, one thread)", "test BLEU",
                                    "BLEU vs decode speed"))
    return written
