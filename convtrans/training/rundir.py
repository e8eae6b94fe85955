"""A training run directory: its numbered checkpoints, and what a rerun of `train` does with them.

    runs/x/ checkpoint_u0000050/  checkpoint_u0000100/  ...   immutable, one per save
            checkpoint_last -> checkpoint_u0000100            newest save
            checkpoint_best -> checkpoint_u0000050            best validated save
            metrics.jsonl  .lock                              log; the writer's lock (locking.py)
            set-aside-20261201T230000/                        what a resume or --restart moved away

A rerun resumes from the newest numbered checkpoint that verifies (every file matches its
checksum, and it holds the resume state), whatever `checkpoint_last` says: a link left dangling
or a checkpoint damaged by a full disk must not send the run back to update 1 and overwrite the
intact checkpoints behind it. Newer checkpoints that fail to verify are moved into a set-aside
folder (never deleted) and the user is told which one was used and why. A directory with
checkpoints of which none verifies is refused unless `--restart`, which sets everything aside
and starts over.

Planning is read-only; the moves happen in the trainer once all processes of a torchrun job have
made the same plan.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from convtrans import checkpoint as ckpt
from convtrans.errors import UserError

LAST, BEST = "checkpoint_last", "checkpoint_best"
METRICS_FILE = "metrics.jsonl"
_NUMBERED = re.compile(r"checkpoint_u(\d{7,})")


def numbered_name(update: int) -> str:
    return f"checkpoint_u{update:07d}"


def numbered_checkpoints(run_dir: Path) -> list[Path]:
    """The numbered checkpoint directories of a run, oldest first."""
    found = [p for p in Path(run_dir).glob("checkpoint_u*") if _NUMBERED.fullmatch(p.name) and p.is_dir()]
    return sorted(found, key=lambda p: int(p.name[len("checkpoint_u"):]))


def _problem(path: Path) -> str | None:
    """Why `path` cannot be resumed from, or None when it verifies."""
    try:
        ckpt.read(path)
    except UserError as err:
        return str(err)
    if not (path / ckpt.TRAIN_STATE).is_file():
        return f"{path.name} holds no {ckpt.TRAIN_STATE}"
    return None


@dataclass
class RunPlan:
    """What `train` does with an existing run directory."""

    resume_from: Path | None = None  # the checkpoint to continue from (None: a new run)
    set_aside: list[Path] = field(default_factory=list)  # moved away before the first write
    notes: list[str] = field(default_factory=list)  # what the user is told (why not checkpoint_last)


def plan_run(run_dir: Path, restart: bool = False) -> RunPlan:
    """Decide, without changing anything, where a run continues from (see the module docstring)."""
    run_dir = Path(run_dir)
    last = run_dir / LAST
    candidates = numbered_checkpoints(run_dir)[::-1]
    if last.is_dir() and not last.is_symlink():  # a copy made with `cp -rL`: a real directory
        candidates.append(last)
    if restart:
        links = [run_dir / name for name in (LAST, BEST) if (run_dir / name).is_symlink()]
        previous = [p for p in [*candidates, *links, run_dir / METRICS_FILE] if p.exists() or p.is_symlink()]
        notes = [f"--restart: moving {len(previous)} entries of the previous run aside"] if previous else []
        return RunPlan(None, previous, notes)
    if not candidates:
        if last.is_symlink():
            raise UserError(f"{last} points to a missing checkpoint and {run_dir} holds no other; "
                            "rerun with --restart to start over")
        return RunPlan()
    skipped: list[tuple[Path, str]] = []
    for candidate in candidates:
        problem = _problem(candidate)
        if problem is None:
            notes = []
            if last.is_symlink() and not last.exists():
                notes.append(f"{LAST} points to the missing {last.readlink()}")
            notes += [problem for _, problem in skipped]
            target = last.resolve() if last.exists() else None
            if notes or (target is not None and target != candidate.resolve()):
                notes.insert(0, f"resuming from {candidate.name}, the newest checkpoint that verifies")
            return RunPlan(candidate, [path for path, _ in skipped], notes)
        skipped.append((candidate, problem))
    reasons = "; ".join(problem for _, problem in skipped[:3])
    raise UserError(f"{run_dir} holds checkpoints but none is intact ({reasons}); rerun with --restart to start over "
                    "(they are moved into a set-aside folder, not deleted)")


def set_aside(run_dir: Path, entries: list[Path]) -> Path:
    """Move `entries` of a run directory into a new `set-aside-<UTC time>` folder inside it."""
    folder = Path(run_dir) / time.strftime("set-aside-%Y%m%dT%H%M%S", time.gmtime())
    suffix = 1
    while folder.exists():
        folder, suffix = folder.with_name(f"{folder.name.split('.')[0]}.{suffix}"), suffix + 1
    folder.mkdir()
    for entry in entries:
        if entry.exists() or entry.is_symlink():
            entry.rename(folder / entry.name)
    return folder
