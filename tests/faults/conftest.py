"""Fixtures of the fault matrix: one toy data directory and one briefly trained tiny model per
session, shared by every case (the faults need a real model, not a good one)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convtrans.cli import app
from tests.conftest import make_pairs, write_split


@pytest.fixture(scope="session")
def raw_corpus(tmp_path_factory) -> Path:
    """raw/train.{de,en} (600 pairs) and raw/valid.{de,en} (40)."""
    root = tmp_path_factory.mktemp("faults_raw")
    write_split(root / "train", make_pairs(600, seed=1))
    write_split(root / "valid", make_pairs(40, seed=2))
    return root


def preprocess_args(raw: Path, dest: Path, *extra: str) -> list[str]:
    return ["preprocess", "-s", "de", "-t", "en", "--trainpref", str(raw / "train"), "--validpref", str(raw / "valid"),
            "--destdir", str(dest), "--vocab-size", "64", *extra]


@pytest.fixture(scope="session")
def data_dir(raw_corpus: Path, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("faults_data") / "bin"
    result = CliRunner().invoke(app, preprocess_args(raw_corpus, dest))
    assert result.exit_code == 0, result.stderr
    return dest


def train_args(data: Path, run: Path, *extra: str) -> list[str]:
    """`convtrans train` arguments for a tiny DynamicConv on the toy data (cheap, CPU, no BLEU)."""
    return ["train", str(data), "--arch", "tiny_dynamicconv", "--save-dir", str(run), "--device", "cpu",
            "--no-valid-bleu", "--log-interval", "1", "--max-tokens", "512", *extra]


def train_command(data: Path, run: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "convtrans", *train_args(data, run, *extra)]


@pytest.fixture(scope="session")
def trained_run(data_dir: Path, tmp_path_factory) -> Path:
    """A run directory after 12 updates (saves at 4, 8, 12; validated at 12)."""
    run = tmp_path_factory.mktemp("faults_run") / "run"
    result = CliRunner().invoke(app, train_args(data_dir, run, "--max-update", "12", "--save-interval-updates", "4"))
    assert result.exit_code == 0, result.stderr
    return run


@pytest.fixture(scope="session")
def model_dir(trained_run: Path) -> Path:
    """The tiny model's last checkpoint; tests must not modify it (copy it: `model_copy`)."""
    return trained_run / "checkpoint_last"


@pytest.fixture
def model_copy(model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny model's checkpoint, for tests that tamper with it."""
    copy = tmp_path / "model"
    shutil.copytree(model_dir.resolve(), copy)
    return copy


def run_cli(*args: str, input: str | bytes | None = None, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """The real `convtrans` in a subprocess (for signals, pipes and exit statuses)."""
    return subprocess.run([sys.executable, "-m", "convtrans", *args], input=input, capture_output=True,
                          timeout=timeout, text=not isinstance(input, bytes), **kwargs)


def one_line_error(stderr: str) -> str:
    """The single `error: ...` line a failing command must print (no traceback)."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


def last_error_line(stderr: str) -> str:
    """For commands that report progress first (train): no traceback, and the last line is the error."""
    lines = [line for line in stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert lines and "Traceback" not in stderr, stderr
    assert lines[-1].startswith("error: "), stderr
    return lines[-1]
