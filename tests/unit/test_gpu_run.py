"""The prepared GPU run's mechanics on the CPU (issue 29): the zoo part trains, stops, evaluates
and reports at tiny shapes (slow), and the fold writes its blocks into the docs, idempotently."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

from gpu_fold import fold  # noqa: E402


def _summary() -> dict:
    record = {"name": "dynamicconv", "label": "DynamicConv", "train": "exit 0", "evaluation": "exit 0", "epochs": 12,
              "parameters": 10126336, "updates": 1800, "best_valid_loss": 2.81, "best_valid_update": 1750,
              "test_bleu": 38.5, "bleu_signature": "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"}
    stopped = {**record, "name": "transformer", "label": "Transformer", "train": "stopped at the deadline",
               "test_bleu": 30.0}
    return {"device": "cuda", "seconds": 150, "wall_seconds": 400, "max_tokens": 3000, "max_epochs": 40, "patience": 4,
            "records": [record, stopped]}


def test_fold_writes_each_block_once(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for name in ("README.md", "docs/zoo.md", "models/dynamicconv_multi30k_de_en/README.md"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / name, repo / name)
    files = tmp_path / "files"
    files.mkdir()
    (files / "machine.txt").write_text("Fri Dec 4\nNVIDIA H200, 143771 MiB, 570.00, 1980 MHz\n", encoding="utf-8")
    (files / "goals.md").write_text("| goal | measured | met |\n|---|---|---|\n| lightconv fwd | 71% | yes |\n")
    (files / "zoo_results.json").write_text(json.dumps(_summary()), encoding="utf-8")
    fold(files, repo)
    fold(files, repo)  # a second fold replaces its blocks
    zoo = (repo / "docs" / "zoo.md").read_text(encoding="utf-8")
    assert zoo.count("<!-- gpu-zoo:start") == 1
    assert "| DynamicConv | 10.13M | 1,800 | 12.0 | time or patience | 2.810 (1750) | 38.50 |" in zoo
    assert "| Transformer | 10.13M | 1,800 | 12.0 | killed at the deadline |" in zoo
    readme = (repo / "README.md").read_text(encoding="utf-8")
    assert readme.count("<!-- gpu-figures:start") == 1 and "| lightconv fwd | 71% | yes |" in readme
    assert "best test BLEU 38.50 (DynamicConv)" in readme and "NVIDIA H200" in readme
    card = (repo / "models" / "dynamicconv_multi30k_de_en" / "README.md").read_text(encoding="utf-8")
    assert card.count("<!-- gpu-hardware:start") == 1 and "1800 updates (12 epochs) in 150 s" in card


@pytest.mark.slow
def test_the_zoo_part_runs_trains_and_reports_on_the_cpu(tmp_path: Path, data_dir: Path) -> None:
    """Two study runs, a few updates each, through the same script the GPU run calls."""
    raw = tmp_path / "raw"
    raw.mkdir()
    import gzip

    for side, text in (("de", "Ein Mann fährt Fahrrad.\n"), ("en", "A man rides a bicycle.\n")):
        with gzip.open(raw / f"test_2016_flickr.{side}.gz", "wt", encoding="utf-8") as handle:
            handle.write(text * 3)
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_zoo.py"), "--data", str(data_dir),
                             "--raw", str(raw), "--out", str(tmp_path / "zoo"), "--device", "cpu", "--seconds", "60",
                             "--eval-seconds", "120", "--max-update", "4", "--runs", "dynamicconv,transformer_small",
                             "--eval-sentences", "3"], capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "zoo" / "results.json").read_text(encoding="utf-8"))
    assert [r["name"] for r in summary["records"]] == ["dynamicconv", "transformer_small"]
    for record in summary["records"]:
        assert record["train"] == "exit 0" and record["updates"] == 4 and record["test_sentences"] == 3
        assert record["bleu_signature"].startswith("nrefs:1")
