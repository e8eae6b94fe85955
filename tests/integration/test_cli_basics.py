import subprocess
import sys

import pytest
from typer.testing import CliRunner

from convtrans.cli import app

SUBCOMMANDS = ("preprocess", "train", "translate", "summarize", "score", "export", "bench", "plot")
pytestmark = pytest.mark.integration


def test_help_lists_all_subcommands() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in SUBCOMMANDS:
        assert f" {name} " in result.stdout


def test_python_dash_m_entry_point_and_no_torch_for_help() -> None:
    out = subprocess.run([sys.executable, "-m", "convtrans", "--help"], capture_output=True, text=True, check=True)
    assert "preprocess" in out.stdout
    probe = "import sys, convtrans.cli; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"


def test_list_archs_prints_presets_with_costs(monkeypatch) -> None:
    """A few presets through the real command (measuring all 37 on the meta device takes ~20 s;
    tests/unit/test_costs.py checks the counts)."""
    from convtrans import config

    shown = ["tiny_transformer", "lite_transformer_wmt_en_de_200", "dynamicconv_wmt_en_de_big"]
    monkeypatch.setattr(config, "list_presets", lambda: shown)
    result = CliRunner().invoke(app, ["train", "--list-archs", "--vocab-size", "32768"])
    assert result.exit_code == 0, result.stderr
    rows = {name: next(line for line in result.stdout.splitlines() if f" {name} " in line) for name in shown}
    assert "90.7M" in rows["lite_transformer_wmt_en_de_200"]  # Mult-Adds of the 30+30-token pair (paper: about 90M)
    assert "213.2" in rows["dynamicconv_wmt_en_de_big"]  # parameters (paper: 213M)
