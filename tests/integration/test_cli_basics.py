import subprocess
import sys

import pytest
from typer.testing import CliRunner

from convtrans.cli import app

SUBCOMMANDS = ("preprocess", "train", "translate", "summarize", "score", "export")
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


def test_list_archs_prints_every_preset_with_costs() -> None:
    from convtrans.config import list_presets

    result = CliRunner().invoke(app, ["train", "--list-archs", "--vocab-size", "32768"])
    assert result.exit_code == 0, result.stderr
    for name in list_presets():
        assert name in result.stdout
    row = next(line for line in result.stdout.splitlines() if "lite_transformer_wmt_en_de_200" in line)
    assert "90.7M" in row  # Mult-Adds of the 30+30-token pair (paper: about 90M)
