"""Where a decode on the default path (the compiled engine) spends its time, per setting: the
encoder per batch, the ONNX Runtime step, the rest of decode_step, and the search around it
(timers wrapped around the engine's calls; docs/decode_speed.md, issue 27).

    python benchmarks/engine_step_split.py

Prints: setting | tokens/s | ms per batch | encoder ms per batch | ms per step (all but the
encoder) | ONNX Runtime step ms | rest of decode_step ms | search ms per step.
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from decode_vs_ctranslate2 import DEFAULT_SOURCES, SHIPPED, Setting, convtrans_engine  # noqa: E402

import convtrans.inference.generate as generation  # noqa: E402
from convtrans.data.corpus import read_lines  # noqa: E402
from convtrans.data.tokenize import SubwordTokenizer  # noqa: E402
from convtrans.inference.exported import load_for_inference  # noqa: E402
from convtrans.zoo import resolve_model  # noqa: E402


def main() -> None:
    shipped = resolve_model(SHIPPED)
    tokenizer = SubwordTokenizer(shipped / "spm.model")
    sources = tokenizer.encode([line for line in itertools.islice(read_lines(DEFAULT_SOURCES), 128) if line.strip()])
    model, checkpoint = load_for_inference(shipped, torch.device("cpu"), "auto")
    engine = convtrans_engine(model, checkpoint.model_config.pad_id, checkpoint.model_config.eos_id)
    spent = {"run": 0.0, "step": 0.0, "steps": 0, "encoder": 0.0}
    step, run, encode = model.decode_step, model._run, generation._encode

    def timed_step(*args: Any) -> Any:
        started = time.perf_counter()
        result = step(*args)
        spent["step"] += time.perf_counter() - started
        spent["steps"] += 1
        return result

    def timed_run(name: str, *args: Any) -> Any:
        started = time.perf_counter()
        result = run(name, *args)
        if name == "step":
            spent["run"] += time.perf_counter() - started
        return result

    def timed_encode(*args: Any) -> Any:
        started = time.perf_counter()
        result = encode(*args)
        spent["encoder"] += time.perf_counter() - started
        return result

    model.decode_step, model._run, generation._encode = timed_step, timed_run, timed_encode
    for spec in ("1,32,2", "5,32,2", "1,1,1", "5,1,1"):
        setting = Setting(*map(int, spec.split(",")))
        subset = sources[:32] if setting.batch == 1 else sources
        engine(subset[:4], setting, 4)  # warm-up: sessions for this thread count
        spent.update(run=0.0, step=0.0, steps=0, encoder=0.0)
        started = time.perf_counter()
        tokens = engine(subset, setting, 20)
        seconds = time.perf_counter() - started
        batches = -(-len(subset) // setting.batch)
        per_step = 1e3 / spent["steps"]
        print(f"| {spec} | {tokens / seconds:.0f} | {seconds / batches * 1e3:.1f} | "
              f"{spent['encoder'] / batches * 1e3:.1f} | {(seconds - spent['encoder']) * per_step:.2f} | "
              f"{spent['run'] * per_step:.2f} | {(spent['step'] - spent['run']) * per_step:.2f} | "
              f"{(seconds - spent['encoder'] - spent['step']) * per_step:.2f} |")


if __name__ == "__main__":
    main()
