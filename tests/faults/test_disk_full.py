"""Fault matrix, disk full (item 5): preprocess, translate -o and train end with one line that says
no space is left, leave no temporary file behind, and a rerun continues. The fault is injected
where the bytes are written (OSError ENOSPC, or safetensors' own error type); one case fills a
real 3 MB tmpfs when the machine allows mounting one."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convtrans.cli import app
from tests.conftest import last_error_line, one_line_error, preprocess_args, run_cli, train_args

pytestmark = pytest.mark.integration
NO_SPACE = "No space left on device"


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def test_preprocess_on_a_full_disk(raw_corpus: Path, tmp_path: Path, monkeypatch) -> None:
    from convtrans.data import binarize

    monkeypatch.setattr(binarize.TokenArrayWriter, "add", _no_space)
    result = CliRunner().invoke(app, preprocess_args(raw_corpus, tmp_path / "bin"))
    assert result.exit_code == 1
    line = one_line_error(result.stderr)
    assert f"cannot write data directory {tmp_path / 'bin'}: {NO_SPACE}" in line
    assert not (tmp_path / "bin").exists() and _leftovers(tmp_path) == []


def test_translate_output_on_a_full_disk(model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from convtrans.inference import textio

    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, handle) -> None:
            self.handle = handle

        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def flush(self) -> None:
            self.handle.flush()

        def close(self) -> None:
            self.handle.close()

    # os.fdopen is patched for the whole process: an engine built now would fail on it, so this test
    # gets its own engine cache (and must not leave a failure record in the session's)
    monkeypatch.setenv("CONVTRANS_ENGINE_CACHE", str(tmp_path / "engines"))
    monkeypatch.setattr(textio.os, "fdopen", lambda *a, **k: FullDisk(real_fdopen(*a, **k)))
    out = tmp_path / "out.en"
    result = CliRunner().invoke(app, ["translate", "-m", str(model_dir), "--device", "cpu", "-o", str(out)],
                                input="Der mann läuft.\nEin hund.\n")
    assert result.exit_code == 1
    assert f"cannot write {out}: {NO_SPACE}" in one_line_error(result.stderr)
    assert not out.exists() and _leftovers(tmp_path) == []


def test_train_checkpoint_on_a_full_disk_then_resume(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    import safetensors.torch
    from safetensors import SafetensorError

    real_save, calls = safetensors.torch.save_model, {"n": 0}

    def full_on_second_save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise SafetensorError(f"Error while serializing: I/O error: {NO_SPACE} (os error 28)")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_model", full_on_second_save)
    run = tmp_path / "run"
    args = train_args(data_dir, run, "--max-update", "12", "--save-interval-updates", "4")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    line = last_error_line(result.stderr)
    assert f"cannot write checkpoint {run / 'checkpoint_u0000008'}: {NO_SPACE}" in line
    assert "rerunning the command resumes from update 4" in line
    assert _leftovers(run) == [] and os.readlink(run / "checkpoint_last") == "checkpoint_u0000004"
    monkeypatch.setattr(safetensors.torch, "save_model", real_save)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "resuming at update 4" in result.stderr, result.stderr


def test_train_log_on_a_full_disk(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from convtrans.training import trainer

    def full_log(path, mode="r", *args, **kwargs):
        if str(path).endswith("metrics.jsonl") and mode == "a":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(trainer, "open", full_log, raising=False)
    run = tmp_path / "run"
    result = CliRunner().invoke(app, train_args(data_dir, run, "--max-update", "3"))
    assert result.exit_code == 1
    assert f"cannot write {run / 'metrics.jsonl'}: {NO_SPACE}" in last_error_line(result.stderr)


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A real 3 MB tmpfs (needs root; skipped where mounting is not allowed)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.slow
def test_real_full_disk(tiny_disk: Path, raw_corpus: Path, data_dir: Path, model_dir: Path) -> None:
    """Bonus: the same three commands on a real, nearly full 3 MB file system."""
    (tiny_disk / "filler").write_bytes(b"\0" * (3 * 1024 * 1024 - 16 * 1024))
    many = "".join(f"Der mann läuft im park {i}.\n" for i in range(1500))
    result = run_cli("translate", "-m", str(model_dir), "--device", "cpu", "-o", str(tiny_disk / "out.en"), input=many)
    assert result.returncode == 1 and NO_SPACE in one_line_error(result.stderr)
    result = run_cli(*preprocess_args(raw_corpus, tiny_disk / "bin"))
    assert result.returncode == 1 and NO_SPACE in one_line_error(result.stderr)
    result = run_cli(*train_args(data_dir, tiny_disk / "run", "--max-update", "2"))
    assert result.returncode == 1 and NO_SPACE in last_error_line(result.stderr)
    assert _leftovers(tiny_disk) == [] and _leftovers(tiny_disk / "run") == []
