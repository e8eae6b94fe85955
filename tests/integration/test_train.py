"""`convtrans train` end to end on a toy corpus: checkpoints, two-process DDP equal to update_freq 2,
non-finite losses, --init-from. Resume after kill -9 and SIGTERM: tests/faults/test_runs.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from convtrans.cli import app
from tests.conftest import make_pairs, write_split

pytestmark = pytest.mark.integration


def _cmd(data_dir: Path, run: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "convtrans", "train", str(data_dir), "--arch", "tiny_dynamicconv", "--save-dir", str(run),
            "--device", "cpu", "--no-valid-bleu", "--log-interval", "1", "--max-tokens", "512", *extra]


def _train_losses(run: Path) -> dict[int, float]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["update"]: r["loss"] for r in lines if r["type"] == "train"}


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoint_last" / "model.safetensors"))


def test_train_writes_checkpoints_metrics_and_keeps_stdout_quiet(data_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", str(data_dir), "--arch", "tiny_transformer", "--save-dir", str(tmp_path / "run"),
                                      "--max-update", "12", "--validate-interval-updates", "4", "--keep-last", "2",
                                      "--no-valid-bleu", "--device", "cpu", "--max-tokens", "512"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert "parameters" in result.stderr and "done: 12 updates" in result.stderr
    run = tmp_path / "run"
    assert (run / "checkpoint_last").resolve().name == "checkpoint_u0000012"
    kept = {p.name for p in run.glob("checkpoint_u*")}
    assert kept == {"checkpoint_u0000008", "checkpoint_u0000012", (run / "checkpoint_best").resolve().name}
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if r["type"] == "valid"]
    assert [r["update"] for r in valid] == [4, 8, 12]
    assert valid[-1]["loss"] < valid[0]["loss"]  # it learns
    best = min(valid, key=lambda r: r["loss"])["update"]
    assert (run / "checkpoint_best").resolve().name == f"checkpoint_u{best:07d}"


def test_two_process_gloo_equals_one_process_with_update_freq_two(data_dir: Path, tmp_path: Path) -> None:
    common = ["--arch", "tiny_transformer", "--max-update", "5", "--dropout", "0", "--device", "cpu", "--no-valid-bleu",
              "--max-tokens", "256", "--seed", "3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "convtrans",
                    "train", str(data_dir), "--save-dir", str(tmp_path / "ddp"), *common], check=True, capture_output=True,
                   env=env, timeout=300)
    subprocess.run([sys.executable, "-m", "convtrans", "train", str(data_dir), "--save-dir", str(tmp_path / "single"),
                    "--update-freq", "2", *common], check=True, capture_output=True, env=env, timeout=300)
    ddp, single = _weights(tmp_path / "ddp"), _weights(tmp_path / "single")
    assert set(ddp) == set(single)
    for name in ddp:
        torch.testing.assert_close(ddp[name], single[name], rtol=1e-4, atol=1e-5)
    assert _train_losses(tmp_path / "ddp") == pytest.approx(_train_losses(tmp_path / "single"), rel=1e-5)


def test_nonfinite_losses_skip_updates_then_stop_without_a_checkpoint(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from convtrans.training import trainer as trainer_module

    real = trainer_module.label_smoothed_nll
    calls = {"n": 0}

    def sometimes_nan(logits, target, eps, pad):
        calls["n"] += 1
        loss, nll = real(logits, target, eps, pad)
        return (loss * float("nan"), nll) if calls["n"] in (2,) or calls["n"] >= 6 else (loss, nll)

    monkeypatch.setattr(trainer_module, "label_smoothed_nll", sometimes_nan)
    result = CliRunner().invoke(app, ["train", str(data_dir), "--arch", "tiny_transformer", "--save-dir", str(tmp_path / "run"),
                                      "--max-update", "50", "--no-valid-bleu", "--device", "cpu", "--max-tokens", "512"])
    assert result.exit_code == 1
    assert "training diverged: 10 consecutive updates had a non-finite loss (last good update 4)" in result.stderr
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in records if r["type"] == "skip"][:2] == [1, 4]
    assert not (tmp_path / "run" / "checkpoint_last").exists()


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_tracks_fp32(data_dir: Path, tmp_path: Path, amp: str) -> None:
    """The same 8 updates in fp32 and in mixed precision: the per-update losses agree to within
    the precision's rounding (bf16 keeps ~3 significant digits; fp16's loss scaler skips its first
    overflowing steps, which shifts later updates to other batches, hence the wider bound), and
    the fp16 loss scaler is saved."""
    runs = {}
    for precision in ("off", amp):
        run = tmp_path / precision
        result = CliRunner().invoke(app, ["train", str(data_dir), "--arch", "tiny_lightconv", "--save-dir", str(run),
                                          "--max-update", "8", "--amp", precision, "--no-valid-bleu", "--device", "cpu",
                                          "--max-tokens", "512", "--log-interval", "1", "--dropout", "0"])
        assert result.exit_code == 0, result.stderr
        runs[precision] = _train_losses(run)
    fp32, mixed = runs["off"], runs[amp]
    assert sorted(mixed) == sorted(fp32) == list(range(1, 9))
    assert max(abs(mixed[u] - fp32[u]) / fp32[u] for u in fp32) < {"bf16": 0.02, "fp16": 0.1}[amp]
    state = torch.load(tmp_path / amp / "checkpoint_last" / "train_state.pt", weights_only=True)
    assert bool(state["scaler"]) == (amp == "fp16")  # the fp16 loss scaler is saved for resuming


def _valid_losses(run: Path) -> list[float]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in lines if r["type"] == "valid"]


def test_init_from_starts_a_new_run_from_trained_weights(data_dir: Path, tmp_path: Path) -> None:
    """The new run has fresh counters but the source run's model: with a negligible learning rate
    its first validation equals the source's last one, far below a fresh model's."""
    runner = CliRunner()
    source = tmp_path / "source"
    result = runner.invoke(app, ["train", str(data_dir), "--arch", "tiny_dynamicconv", "--save-dir", str(source),
                                 "--max-update", "30", "--lr", "3e-3", "--warmup-updates", "5", "--no-valid-bleu",
                                 "--validate-interval-updates", "30", "--device", "cpu", "--max-tokens", "512"])
    assert result.exit_code == 0, result.stderr
    frozen = ["--max-update", "1", "--lr", "1e-12", "--lr-scheduler", "fixed", "--warmup-updates", "0", "--no-valid-bleu",
              "--validate-interval-updates", "1", "--device", "cpu", "--max-tokens", "512"]
    result = runner.invoke(app, ["train", str(data_dir), "--init-from", str(source / "checkpoint_last"),
                                 "--save-dir", str(tmp_path / "tuned"), "--dropout", "0.0", *frozen])
    assert result.exit_code == 0, result.stderr
    assert "weights from" in result.stderr and "done: 1 updates" in result.stderr
    fresh = runner.invoke(app, ["train", str(data_dir), "--arch", "tiny_dynamicconv", "--save-dir", str(tmp_path / "fresh"), *frozen])
    assert fresh.exit_code == 0, fresh.stderr
    trained, tuned, untrained = _valid_losses(source)[-1], _valid_losses(tmp_path / "tuned")[0], _valid_losses(tmp_path / "fresh")[0]
    assert abs(tuned - trained) < 1e-3 < untrained - trained
    config = json.loads((tmp_path / "tuned" / "checkpoint_last" / "config.json").read_text())
    assert config["model"]["dropout"] == 0.0 and config["extra"]["update"] == 1


def test_init_from_refuses_another_vocabulary_and_an_arch(data_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    source = tmp_path / "source"
    result = runner.invoke(app, ["train", str(data_dir), "--arch", "tiny_dynamicconv", "--save-dir", str(source),
                                 "--max-update", "1", "--no-valid-bleu", "--device", "cpu", "--max-tokens", "512"])
    assert result.exit_code == 0, result.stderr
    root = tmp_path / "other"
    write_split(root / "raw" / "train", make_pairs(300, seed=5))
    write_split(root / "raw" / "valid", make_pairs(20, seed=6))
    result = runner.invoke(app, ["preprocess", "-s", "de", "-t", "en", "--trainpref", str(root / "raw" / "train"),
                                 "--validpref", str(root / "raw" / "valid"), "--destdir", str(root / "bin"), "--vocab-size", "48"])
    assert result.exit_code == 0, result.stderr
    init = ["--init-from", str(source / "checkpoint_last"), "--max-update", "1", "--device", "cpu"]
    result = runner.invoke(app, ["train", str(root / "bin"), "--save-dir", str(tmp_path / "a"), *init])
    assert result.exit_code != 0 and "different de vocabulary" in result.stderr and "Traceback" not in result.stderr
    result = runner.invoke(app, ["train", str(data_dir), "--arch", "tiny_transformer", "--save-dir", str(tmp_path / "b"), *init])
    assert result.exit_code != 0 and "leave out --arch" in result.stderr
