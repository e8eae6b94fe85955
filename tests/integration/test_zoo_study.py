"""The zoo study command end to end on a tiny budget (benchmarks/zoo.py): data to report, and a
second invocation resumes instead of starting over."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_pairs, write_split

pytestmark = pytest.mark.integration
ZOO = Path(__file__).resolve().parents[2] / "benchmarks" / "zoo.py"


def study(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ZOO), *args, "--study-dir", str(tmp_path / "study"), "--data",
                           str(tmp_path / "raw"), "--vocab-size", "64", "--out", str(tmp_path / "report"),
                           "--runs", "transformer_small", "--rounds", "1"],
                          capture_output=True, text=True, timeout=900)


def test_tiny_study_trains_resumes_and_reports(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    write_split(tmp_path / "raw" / "train", make_pairs(300, seed=1))
    write_split(tmp_path / "raw" / "val", make_pairs(30, seed=2))
    write_split(tmp_path / "raw" / "test_2016_flickr", make_pairs(20, seed=3))
    first = study(tmp_path, "train", "--updates", "1")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "transformer_small: trained to 1 updates" in first.stdout
    second = study(tmp_path, "all", "--updates", "2", "--no-timing")  # one more update, from its checkpoint
    assert second.returncode == 0, second.stdout + second.stderr
    log = (tmp_path / "study" / "transformer_small" / "train.log").read_text(encoding="utf-8")
    assert "(resuming at update 1 from checkpoint_u0000001)" in log, log
    rows = json.loads((tmp_path / "report" / "results.json").read_text(encoding="utf-8"))
    assert [r["name"] for r in rows] == ["transformer_small"]
    for row in rows:
        assert row["updates"] == 2 and row["best_valid_loss"] > 0 and row["parameters"] > 0 and row["mult_adds"] > 0
        assert 0 <= row["test_bleu"] <= 100 and "nrefs:1" in row["bleu_signature"]
        assert row["train_tokens_per_s"] is None and row["decode_tokens_per_s"] is None  # timing is tested below
    for picture in ("validation_loss.png", "bleu_vs_mult_adds.png", "bleu_vs_decode_speed.png"):
        assert (tmp_path / "report" / picture).read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "report" / "metrics" / "transformer_small.jsonl").is_file()


def test_training_speed_is_timed_side_by_side_on_the_same_batches(data_dir: Path) -> None:
    from convtrans.bench.train_speed import fixed_batches, time_training
    from convtrans.config import TrainConfig, load_preset

    batches = fixed_batches(data_dir, 200, count=2)
    assert len(batches) == 2 and all(0 < b.n_tokens <= 200 for b in batches)
    assert [b.ids.tolist() for b in batches] == [b.ids.tolist() for b in fixed_batches(data_dir, 200, count=2)]
    vocab = {"src_vocab_size": 64, "tgt_vocab_size": 64}
    speeds = time_training({"t": load_preset("tiny_transformer", **vocab), "d": load_preset("tiny_dynamicconv", **vocab)},
                           batches, TrainConfig(), rounds=2)
    assert set(speeds) == {"t", "d"} and all(speed > 0 for speed in speeds.values())


def test_report_refuses_to_time_while_a_study_run_trains(tmp_path: Path) -> None:
    """Timings taken while a study run trains would measure the load: report names the busy run."""
    import importlib.util

    from convtrans.locking import run_dir_lock

    spec = importlib.util.spec_from_file_location("zoo_study", ZOO)
    assert spec is not None and spec.loader is not None
    zoo = importlib.util.module_from_spec(spec)
    sys.modules["zoo_study"] = zoo  # its dataclasses look their module up there
    spec.loader.exec_module(zoo)
    for name in ("quiet", "busy"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.jsonl").write_text("")
    zoo.require_quiet(tmp_path)  # nothing training
    with run_dir_lock(tmp_path / "busy"), pytest.raises(SystemExit, match=r"timing needs a quiet machine: .*busy is in use"):
        zoo.require_quiet(tmp_path)
    zoo.require_quiet(tmp_path)  # the lock is gone again


def test_an_unknown_run_name_is_refused_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(ZOO), "train", "--runs", "transformer,transfomer",
                             "--study-dir", str(tmp_path / "study")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "unknown run transfomer; the study's runs: dynamicconv" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "study").exists()


@pytest.mark.parametrize(("option", "value", "message"), [("--max-tokens", "0", "must be at least 1 (got 0)"),
                                                        ("--warmup-updates", "-1", "must be at least 0 (got -1)"),
                                                        ("--updates", "ten", "not an integer: 'ten'")])
def test_a_bad_budget_is_refused_in_one_line(tmp_path: Path, option: str, value: str, message: str) -> None:
    result = subprocess.run([sys.executable, str(ZOO), "train", option, value, "--study-dir", str(tmp_path / "study")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and f"argument {option}: {message}" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "study").exists()
