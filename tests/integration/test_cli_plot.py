"""`convtrans plot`: validation curves from run directories, BLEU-vs-cost from a results table,
and one-line errors for what is not a run or not a table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convtrans.cli import app
from convtrans.plot import validation_curve

pytestmark = pytest.mark.integration


def test_curves_of_a_run_and_scatter_plots_from_results(trained_run: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    curve = validation_curve(trained_run)
    history = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert curve.updates == [r["update"] for r in history if r["type"] == "valid"] and len(curve.updates) >= 3
    assert curve.values == [r["loss"] for r in history if r["type"] == "valid"]
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"label": "a", "test_bleu": 30.0, "mult_adds": 2e8, "decode_tokens_per_s": 500},
                                   {"label": "b", "test_bleu": 28.0, "mult_adds": 6e7, "decode_tokens_per_s": None}]))
    result = CliRunner().invoke(app, ["plot", str(trained_run), "--out", str(tmp_path / "pics"), "--results", str(results)])
    assert result.exit_code == 0, result.stderr
    for name in ("validation_loss.png", "bleu_vs_mult_adds.png", "bleu_vs_decode_speed.png"):
        assert (tmp_path / "pics" / name).read_bytes().startswith(b"\x89PNG")


def test_what_is_not_a_run_is_refused_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["plot", str(tmp_path), "--out", str(tmp_path / "pics")])
    assert result.exit_code == 1 and "has no metrics.jsonl" in result.stderr and "Traceback" not in result.stderr
    (tmp_path / "metrics.jsonl").write_text('{"type": "valid", "update": 1, "loss": 2.0}\nnot json\n')
    result = CliRunner().invoke(app, ["plot", str(tmp_path), "--out", str(tmp_path / "pics")])
    assert result.exit_code == 1 and "metrics.jsonl:2: not a JSON line" in result.stderr
    result = CliRunner().invoke(app, ["plot", str(tmp_path), "--metric", "speed"])
    assert result.exit_code == 1 and "--metric must be" in result.stderr
    (tmp_path / "metrics.jsonl").write_text('{"type": "valid", "update": 1, "loss": 2.0}\n')
    (tmp_path / "results.json").write_text("[{")
    result = CliRunner().invoke(app, ["plot", str(tmp_path), "--out", str(tmp_path / "pics"), "--results",
                                      str(tmp_path / "results.json")])
    assert result.exit_code == 1 and "cannot read results" in result.stderr and "Traceback" not in result.stderr


def test_more_runs_than_colours_get_a_line_style_apiece(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The colour cycle has 10 colours; the 11th run (the zoo study has 11) must not look like the first."""
    plt = pytest.importorskip("matplotlib.pyplot")
    from convtrans.plot import Curve, plot_curves

    drawn: list[tuple[str, tuple[float, ...]]] = []
    monkeypatch.setattr(plt, "close", lambda figure: drawn.extend(
        (line.get_linestyle(), line.get_color()) for line in figure.axes[0].get_lines()))
    plot_curves([Curve(f"run {i}", [1, 2], [3.0, 2.0]) for i in range(11)], tmp_path / "curves.png")
    assert len(drawn) == 11 and len(set(drawn)) == 11
