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
