"""stderr output for humans: rich progress and messages. stdout carries only results."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

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
        tasks: dict[str, int] = {}

        def report(task: str, done: int, total: int | None = None) -> None:
            if task not in tasks:
                for previous in tasks.values():
                    progress.update(previous, total=progress.tasks[previous].completed)
                tasks[task] = progress.add_task(task, total=total)
            progress.update(tasks[task], completed=done, total=total)

        yield report
        for task_id in tasks.values():
            progress.update(task_id, total=progress.tasks[task_id].completed)
