"""What the CLI shows people: rich progress, training logs and benchmark tables on stderr/stdout.

Library code never prints; it reports through callbacks (`progress(task, done, total)`,
`report(kind, record)`) and returns numbers, and this module renders them. stdout carries only
results (tables of `bench` and `--list-archs` are results).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

if TYPE_CHECKING:  # the benchmark modules import torch; the CLI imports this module for --help
    from convtrans.bench.decode import DecodeRow
    from convtrans.bench.kernels import KernelBenchReport

stderr = Console(stderr=True, highlight=False, soft_wrap=True)

ProgressCallback = Callable[..., None]  # report(task: str, done: int, total: int | None = None)


@contextmanager
def progress_callback() -> Iterator[ProgressCallback]:
    """A `report(task, done, total=None)` callback drawing one progress line per task on stderr.

    Tasks are sequential: a new task marks the previous one finished (its clock stops). Nothing is
    drawn when stderr is not a terminal, so pipes and log files stay clean.
    """
    with Progress(
        SpinnerColumn(finished_text="✓"), TextColumn("{task.description}"), MofNCompleteColumn(),
        TimeElapsedColumn(), console=stderr, disable=not stderr.is_terminal,
    ) as progress:
        tasks: dict[str, TaskID] = {}

        def report(task: str, done: int, total: int | None = None) -> None:
            if task not in tasks:
                for previous in tasks.values():
                    progress.update(previous, total=progress.tasks[previous].completed)
                tasks[task] = progress.add_task(task, total=total)
            progress.update(tasks[task], completed=done, total=total)

        yield report
        for task_id in tasks.values():
            progress.update(task_id, total=progress.tasks[task_id].completed)


class TrainDisplay:
    """Renders the trainer's reports: a rich progress bar in a terminal, plain log lines otherwise.

    Kinds: "start" (message, total updates), "message", "train" and "valid" (metrics.jsonl
    records), "warning" and "skip"."""

    def __init__(self) -> None:
        self.live = stderr.is_terminal
        self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.description}"), TimeRemainingColumn(), console=stderr,
                                 disable=not self.live)
        self.task = self.progress.add_task("", total=None)

    def __enter__(self) -> TrainDisplay:
        self.progress.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.progress.__exit__(exc_type, exc, traceback)

    def __call__(self, kind: str, record: dict[str, Any]) -> None:
        if kind == "start":
            self.progress.update(self.task, total=record.get("total"))
            stderr.print(record["message"])
        elif kind == "message":
            stderr.print(record["message"])
        elif kind == "train":
            text = (f"epoch {record['epoch']} | loss {record['loss']:.3f} | lr {record['lr']:.2e} | "
                    f"{record['tokens_per_s']:.0f} tok/s")
            self.progress.update(self.task, completed=record["update"], description=text)
            if not self.live:
                stderr.print(f"update {record['update']} | {text}")
        elif kind == "valid":
            metric = next((f" | {k} {record[k]:.2f}" for k in ("bleu", "rouge") if k in record), "")
            best = f"{record['best']:.4g}" if record["best"] is not None else "-"
            stderr.print(f"valid update {record['update']} | epoch {record['epoch']} | loss {record['loss']:.3f} | "
                         f"ppl {record['ppl']:.2f}{metric} | best {record['best_metric']} {best}")
        elif kind in ("warning", "skip"):
            at = f" (update {record['update']})" if "update" in record else ""
            stderr.print(f"warning: {record.get('message') or record.get('reason')}{at}")


# ---------------------------------------------------------------------- benchmark tables
def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def kernel_table(report: KernelBenchReport) -> Table:
    peak = f"peak {report.peak_gbs:.0f} GB/s" if report.peak_gbs else "peak bandwidth unknown (--peak-gbs)"
    table = Table(title=f"conv kernels on {report.device} ({report.options['dtype']}, {peak}; "
                        f"speedup = reference time / time)")
    for column in ("op", "B×T×C", "H", "K", "impl", "fwd ms", "fwd GB/s", "fwd %peak", "fwd ×",
                   "fwd+bwd ms", "f+b GB/s", "f+b %peak", "f+b ×"):
        table.add_column(column, justify="left" if column in ("op", "impl", "B×T×C") else "right")
    for r in report.rows:
        table.add_row(r.op, f"{r.batch}×{r.time}×{r.channels}", str(r.heads), str(r.kernel_size), r.impl,
                      _fmt(r.fwd_ms, ".3f"), _gbs(r.fwd_gbs), _percent(r.fwd_peak_frac), _fmt(r.fwd_speedup, ".2f", "×"),
                      _fmt(r.fwd_bwd_ms, ".3f"), _gbs(r.fwd_bwd_gbs), _percent(r.fwd_bwd_peak_frac),
                      _fmt(r.fwd_bwd_speedup, ".2f", "×"))
    return table


def layer_table(report: KernelBenchReport) -> Table:
    table = Table(title=f"one token mixer, equal width, on {report.device} ({report.options['dtype']}; "
                        f"speedup = attention time / time)")
    for column in ("B×T×C", "H", "layer", "K", "fwd ms", "fwd ×", "fwd+bwd ms", "f+b ×"):
        table.add_column(column, justify="left" if column in ("layer", "B×T×C") else "right")
    for r in report.layers:
        table.add_row(f"{r.batch}×{r.time}×{r.channels}", str(r.heads), r.impl, str(r.kernel_size or "-"),
                      _fmt(r.fwd_ms, ".3f"), _fmt(r.fwd_speedup, ".2f", "×"),
                      _fmt(r.fwd_bwd_ms, ".3f"), _fmt(r.fwd_bwd_speedup, ".2f", "×"))
    return table


def _gbs(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def _percent(fraction: float | None) -> str:
    return "n/a" if fraction is None else f"{100 * fraction:.0f}%"


def decode_table(rows: list[DecodeRow]) -> Table:
    table = Table(title="decode speed (wall clock, this machine)")
    for column in ("model", "params", "beam", "batch", "sentences/s", "tokens/s", "vs first model"):
        table.add_column(column, justify="left" if column == "model" else "right")
    first = {(r.beam, r.batch_size): r for r in rows if r.model == rows[0].model}
    for r in rows:
        ratio = r.sentences_per_s / first[(r.beam, r.batch_size)].sentences_per_s
        table.add_row(r.model, f"{r.parameters / 1e6:.2f}M", str(r.beam), str(r.batch_size), f"{r.sentences_per_s:.1f}",
                      f"{r.tokens_per_s:.0f}", f"{ratio:.2f}x")
    return table
