"""Fault matrix, training runs: checkpoint_best always validated, resume from the newest intact
checkpoint, one writer per run directory, exact resume after kill -9, SIGTERM saves and resumes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from convtrans.cli import app
from tests.conftest import one_line_error, train_args, train_command

pytestmark = pytest.mark.integration


def _records(run: Path, kind: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


def _train_losses(run: Path) -> dict[int, float]:
    return {r["update"]: r["loss"] for r in _records(run, "train")} if (run / "metrics.jsonl").exists() else {}


def _link(run: Path, name: str) -> str:
    return os.readlink(run / name)


def test_checkpoint_best_is_always_a_validated_checkpoint(data_dir: Path, tmp_path: Path) -> None:
    """Item 1: the last update falls on a save interval and no validation interval was set; the
    final weights are validated anyway and checkpoint_best never points at an unvalidated save."""
    run = tmp_path / "run"
    result = CliRunner().invoke(app, train_args(data_dir, run, "--max-update", "10", "--save-interval-updates", "5"))
    assert result.exit_code == 0, result.stderr
    validated = [r["update"] for r in _records(run, "valid")]
    assert validated == [10]  # the epoch is longer than 10 updates: only the final validation ran
    assert _link(run, "checkpoint_best") == "checkpoint_u0000010"
    best = _records(run, "valid")[-1]
    assert f"checkpoint_best is update 10 (valid loss {best['loss']:.3f})" in result.stderr


def test_a_sigterm_save_never_becomes_checkpoint_best(data_dir: Path, tmp_path: Path) -> None:
    """Saves without validation (interval saves, the save on SIGTERM) move checkpoint_last only:
    stopped before its first validation, a run has no checkpoint_best at all."""
    run = tmp_path / "run"
    args = train_args(data_dir, run, "--max-update", "100000", "--validate-interval-updates", "100000")
    proc = subprocess.Popen([sys.executable, "-m", "convtrans", *args], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and max(_train_losses(run), default=0) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted by SIGTERM: saved checkpoint_last at update" in err and "Traceback" not in err
    last = int(_link(run, "checkpoint_last").removeprefix("checkpoint_u"))
    assert last >= 3 and not (run / "checkpoint_best").exists() and not (run / "checkpoint_best").is_symlink()
    result = subprocess.run(train_command(data_dir, run, "--max-update", str(last + 1)), capture_output=True, text=True)
    assert result.returncode == 0 and f"resuming at update {last}" in result.stderr, result.stderr
    assert _link(run, "checkpoint_best") == f"checkpoint_u{last + 1:07d}"  # the final update is validated


def test_resume_after_sigkill_continues_bit_identically(data_dir: Path, tmp_path: Path) -> None:
    """Known good: kill -9 mid-run, rerun the same command: every loss and every weight equal an
    uninterrupted run's."""
    args = ("--max-update", "16", "--save-interval-updates", "3")
    subprocess.run(train_command(data_dir, tmp_path / "straight", *args), check=True, capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(train_command(data_dir, killed, *args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (max(_train_losses(killed), default=0) >= 7 and (killed / "checkpoint_last").exists()):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    interrupted_at = max(_train_losses(killed))
    assert 7 <= interrupted_at < 16, "the run must be killed mid-way"
    subprocess.run(train_command(data_dir, killed, *args), check=True, capture_output=True)
    assert _train_losses(killed) == _train_losses(tmp_path / "straight")
    straight = load_file(str(tmp_path / "straight" / "checkpoint_last" / "model.safetensors"))
    resumed = load_file(str(killed / "checkpoint_last" / "model.safetensors"))
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)


@pytest.fixture
def run_copy(trained_run: Path, tmp_path: Path) -> Path:
    """A copy of the session's run (saved every 25 updates up to 150), links kept as links."""
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy, symlinks=True)
    return copy


def test_dangling_checkpoint_last_resumes_from_the_newest_intact_checkpoint(data_dir: Path, run_copy: Path) -> None:
    """Item 2: checkpoint_last's folder is gone; the run resumes from update 125, says so, and
    keeps the older checkpoints and the log up to update 125 (it used to restart at update 1)."""
    shutil.rmtree(run_copy / "checkpoint_u0000150")
    lines = (run_copy / "metrics.jsonl").read_text().splitlines()
    before = [r for r in map(json.loads, lines) if r["update"] <= 125]
    result = CliRunner().invoke(app, train_args(data_dir, run_copy, "--max-update", "128"))
    assert result.exit_code == 0, result.stderr
    assert "resuming from checkpoint_u0000125, the newest checkpoint that verifies" in result.stderr
    assert "checkpoint_last points to the missing checkpoint_u0000150" in result.stderr
    assert "resuming at update 125" in result.stderr
    after = [json.loads(line) for line in (run_copy / "metrics.jsonl").read_text().splitlines()]
    assert after[: len(before)] == before and min(r["update"] for r in after[len(before):]) == 126
    assert (run_copy / "checkpoint_u0000050").is_dir() and _link(run_copy, "checkpoint_last") == "checkpoint_u0000128"


def test_a_corrupted_newest_checkpoint_is_set_aside_not_overwritten(data_dir: Path, run_copy: Path) -> None:
    with open(run_copy / "checkpoint_u0000150" / "model.safetensors", "ab") as handle:
        handle.write(b"garbage")
    result = CliRunner().invoke(app, train_args(data_dir, run_copy, "--max-update", "150"))
    assert result.exit_code == 0, result.stderr
    assert "checkpoint_u0000150 is corrupted: model.safetensors does not match its checksum" in result.stderr
    aside = list(run_copy.glob("set-aside-*/checkpoint_u0000150"))
    assert len(aside) == 1 and (aside[0] / "model.safetensors").read_bytes().endswith(b"garbage")
    assert _link(run_copy, "checkpoint_last") == "checkpoint_u0000150"  # rebuilt from update 125


def test_no_intact_checkpoint_is_refused_unless_restart(data_dir: Path, run_copy: Path) -> None:
    for path in run_copy.glob("checkpoint_u*/model.safetensors"):
        path.write_bytes(path.read_bytes()[:100])
    result = CliRunner().invoke(app, train_args(data_dir, run_copy, "--max-update", "3"))
    assert result.exit_code == 1
    line = one_line_error(result.stderr)
    assert "holds checkpoints but none is intact" in line and "--restart" in line
    result = CliRunner().invoke(app, train_args(data_dir, run_copy, "--max-update", "3", "--restart"))
    assert result.exit_code == 0, result.stderr
    aside = next(run_copy.glob("set-aside-*"))
    assert {p.name for p in aside.iterdir()} >= {"checkpoint_u0000125", "checkpoint_u0000150", "metrics.jsonl",
                                                 "checkpoint_last", "checkpoint_best"}
    assert [r["update"] for r in _records(run_copy, "train")] == [1, 2, 3]


def test_a_second_train_on_the_same_run_directory_is_refused(data_dir: Path, tmp_path: Path) -> None:
    """Item 3: a live `train` holds the run directory; a second one is told its PID, and nothing of
    the first run's log is duplicated."""
    run = tmp_path / "run"
    holder = subprocess.Popen(train_command(data_dir, run, "--max-update", "100000"), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not _train_losses(run):
            time.sleep(0.02)
        result = CliRunner().invoke(app, train_args(data_dir, run, "--max-update", "2"))
        assert result.exit_code == 1
        line = one_line_error(result.stderr)
        assert f"is in use by process {holder.pid} (convtrans train)" in line
    finally:
        holder.send_signal(signal.SIGTERM)
        holder.communicate(timeout=60)
    updates = [r["update"] for r in _records(run, "train")]
    assert updates == sorted(set(updates))  # one writer: no line twice
    assert not (run / ".lock").exists()  # released and removed on exit


def test_a_lock_left_by_a_killed_train_does_not_block(data_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").write_text("99999999 (convtrans train)\n")  # the file a kill -9 leaves; no process holds it
    result = CliRunner().invoke(app, train_args(data_dir, run, "--max-update", "1"))
    assert result.exit_code == 0, result.stderr


def test_lock_is_held_for_the_whole_run(data_dir: Path, tmp_path: Path) -> None:
    from convtrans.locking import run_dir_lock

    with run_dir_lock(tmp_path / "run"):
        result = CliRunner().invoke(app, train_args(data_dir, tmp_path / "run", "--max-update", "1"))
    assert result.exit_code == 1 and f"in use by process {os.getpid()}" in one_line_error(result.stderr)
