"""`convtrans bench kernels` on CPU: reference and conv1d timed, Triton columns n/a, JSON out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from convtrans.bench import kernels as bench
from convtrans.cli import app
from convtrans.ops.dynamicconv import traffic_bytes as dynamicconv_traffic
from convtrans.ops.lightconv import traffic_bytes as lightconv_traffic

QUICK = ["bench", "kernels", "--shapes", "2x16x8", "--kernels", "3", "--repeats", "1", "--warmup", "0",
         "--device", "cpu", "--dtype", "fp32"]


def test_bench_kernels_on_cpu_writes_table_and_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, [*QUICK, "--layers", "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    assert "conv kernels on cpu" in result.output and "one token mixer" in result.output
    report = json.loads(out.read_text())
    rows = {(r["op"], r["impl"]): r for r in report["rows"]}
    assert set(rows) == {("lightconv", "triton"), ("lightconv", "reference"), ("lightconv", "conv1d"),
                         ("dynamicconv", "triton"), ("dynamicconv", "reference")}
    for op in ("lightconv", "dynamicconv"):
        assert rows[op, "triton"]["fwd_ms"] is None and rows[op, "triton"]["fwd_bwd_ms"] is None  # no GPU
        ref = rows[op, "reference"]
        assert ref["fwd_ms"] > 0 and ref["fwd_bwd_ms"] > 0 and ref["fwd_speedup"] == 1.0
        assert ref["fwd_peak_frac"] is None  # CPU: no peak bandwidth known
    traffic = lightconv_traffic(2, 16, 8, 1, 3, 4)
    assert traffic == 2 * 2 * 16 * 8 * 4
    light = rows["lightconv", "reference"]
    assert light["fwd_gbs"] == pytest.approx(traffic / light["fwd_ms"] / 1e6)
    assert rows["lightconv", "conv1d"]["fwd_ms"] > 0
    layers = {r["impl"]: r for r in report["layers"]}
    assert set(layers) == {"attention", "dynamicconv+triton", "dynamicconv+reference"}
    assert layers["attention"]["fwd_ms"] > 0 and layers["dynamicconv+reference"]["fwd_bwd_ms"] > 0
    assert layers["dynamicconv+triton"]["fwd_ms"] is None
    assert report["options"]["shapes"] == [[2, 16, 8]] and report["versions"]["torch"] == torch.__version__


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shapes", "2x16"], "--shapes: expected BxTxC"),
        (["--kernels", "3,x"], "--kernels: expected comma-separated integers"),
        (["--dtype", "fp8"], "--dtype: choose from"),
        (["--ops", "conv"], "--ops: choose from"),
        (["--heads", "3"], "--heads 3 does not divide"),
        (["--kernels", "3,300"], "--kernels: the dynamicconv kernel takes K <= 256"),
    ],
)
def test_bench_kernels_rejects_bad_options(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, [*QUICK, *args])
    assert result.exit_code == 1
    assert f"error: {message}" in result.output


def test_peak_bandwidth_by_gpu_name(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = torch.device("cuda")
    for name, peak in (("NVIDIA H100 80GB HBM3", 3350.0), ("NVIDIA H100 PCIe", 2000.0), ("NVIDIA H100 NVL", 3900.0),
                       ("NVIDIA H200", 4800.0), ("NVIDIA A100-SXM4-80GB", 2039.0), ("Some Future GPU", None)):
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None, name=name: name)
        assert bench.peak_bandwidth(cuda) == peak, name
    assert bench.peak_bandwidth(cuda, override=1234.0) == 1234.0
    assert bench.peak_bandwidth(torch.device("cpu")) is None


def test_traffic_formulas() -> None:
    b, t, c, h, k, e = 2, 16, 8, 2, 3, 2
    assert lightconv_traffic(b, t, c, h, k, e, backward=True) == 5 * b * t * c * e
    assert dynamicconv_traffic(b, t, c, h, k, e) == (2 * b * t * c + b * t * h * k) * e + 4 * b * t * h
    assert dynamicconv_traffic(b, t, c, h, k, e, backward=True) == (5 * b * t * c + 3 * b * t * h * k) * e + 8 * b * t * h


def test_cpu_timer_counts_calls_and_takes_the_median() -> None:
    """Off the GPU (or without triton) the timer is a wall-clock loop: `warmup` untimed calls, then
    the median of `repeats` timed ones."""
    calls: list[int] = []
    ms = bench.time_ms(lambda: calls.append(1), torch.device("cpu"), repeats=3, warmup=2)
    assert len(calls) == 5 and ms >= 0
