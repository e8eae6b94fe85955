"""Read `convtrans bench kernels` JSON and judge issue 20's goals, as a Markdown table.

    python benchmarks/gpu_goals.py kernels.json [more.json ...] > goals.md

Goals (ratios within one run): lightconv forward >= 60% of peak HBM bandwidth; each op's
forward+backward >= 3x the PyTorch reference; the DynamicConv layer faster than attention at
T >= 512; time(T=8192) / time(T=1024) <= 9 (near-linear in sequence length).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else f"{value:{spec}}"


def goals(reports: list[dict]) -> list[str]:
    rows = [r for report in reports for r in report.get("rows", [])]
    layers = [r for report in reports for r in report.get("layers", [])]
    lines = ["| goal | measured | met |", "|---|---|---|"]

    def line(goal: str, values: list[float], target: float, higher_is_better: bool = True) -> None:
        if not values:
            lines.append(f"| {goal} | not measured | - |")
            return
        worst = min(values) if higher_is_better else max(values)
        met = worst >= target if higher_is_better else worst <= target
        lines.append(f"| {goal} | worst {_fmt(worst)} over {len(values)} cases | {'yes' if met else 'NO'} |")

    triton = [r for r in rows if r["impl"] == "triton"]
    line("lightconv forward, fraction of peak HBM bandwidth >= 0.60",
         [r["fwd_peak_frac"] for r in triton if r["op"] == "lightconv" and r["fwd_peak_frac"] is not None], 0.60)
    for op in ("lightconv", "dynamicconv"):
        line(f"{op} forward+backward speedup over the reference >= 3",
             [r["fwd_bwd_speedup"] for r in triton if r["op"] == op and r["fwd_bwd_speedup"] is not None], 3.0)
    line("DynamicConv layer speedup over attention, T >= 512 (forward+backward) > 1",
         [r["fwd_bwd_speedup"] for r in layers if r["impl"] != "attention" and r["time"] >= 512
          and r["fwd_bwd_speedup"] is not None], 1.0 + 1e-9)
    scaling: dict[tuple, dict[int, float]] = defaultdict(dict)
    for r in triton + [r for r in layers if r["impl"] != "attention"]:
        if r["fwd_bwd_ms"] is not None:
            scaling[(r["op"], r["impl"], r["batch"], r["channels"], r["kernel_size"])][r["time"]] = r["fwd_bwd_ms"]
    ratios = [times[8192] / times[1024] for times in scaling.values() if 8192 in times and 1024 in times]
    line("time(T=8192) / time(T=1024), forward+backward <= 9", ratios, 9.0, higher_is_better=False)
    return lines


def main() -> None:
    reports = [json.loads(Path(p).read_text()) for p in sys.argv[1:]]
    devices = sorted({r.get("device", "?") for r in reports})
    print(f"GPU goals on {', '.join(devices)}\n")
    print("\n".join(goals(reports)))


if __name__ == "__main__":
    main()
