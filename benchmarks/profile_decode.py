"""Where a decode step's time goes: the encoder, the model's step, the search around it, and the ATen
ops inside them, for the shipped translator on the path a user gets (or the exact one).

    python benchmarks/profile_decode.py --setting 5,32,2            # the default path (int8, traced)
    python benchmarks/profile_decode.py --setting 1,1,1 --precision fp32

Same sources, batches and forced length as decode_vs_ctranslate2.py, so its per-step figures sit
next to that benchmark's tokens/s. Two passes: one timed with perf_counter around the model's
encode and decode_step calls (the phase split, no profiler overhead), one under torch.profiler
(the op table; its total is inflated by the profiler's own cost, so read its shares, not its sum).

With --against-ct2, each batch's time is also split for CTranslate2 int8 (the benchmark's
equal-size Transformer) and for convtrans by timing every engine at two forced lengths, 1 and
--length subwords, interleaved over 3 rounds: the slope is the cost of a decode step, the
intercept what comes before the first step (encoder, cross-attention keys/values, set-up).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))

from decode_vs_ctranslate2 import DEFAULT_SOURCES, SHIPPED, Engine, Setting, convtrans_engine  # noqa: E402

from convtrans.data.corpus import read_lines  # noqa: E402
from convtrans.data.tokenize import SubwordTokenizer  # noqa: E402
from convtrans.inference.exported import load_for_inference  # noqa: E402
from convtrans.inference.int8 import PRECISIONS  # noqa: E402
from convtrans.zoo import resolve_model  # noqa: E402


class PhaseTimer:
    """Wraps a model: counts decode steps and adds up the seconds spent in encode and decode_step,
    so that what is left of a search's wall-clock is the search itself."""

    training = False

    def __init__(self, model: Any) -> None:
        self.model, self.config = model, model.config
        self.encode_s = self.step_s = 0.0
        self.steps = 0

    def eval(self) -> PhaseTimer:
        return self

    def encode(self, src: torch.Tensor) -> Any:
        started = time.perf_counter()
        out = self.model.encode(src)
        self.encode_s += time.perf_counter() - started
        return out

    def init_cache(self, *args: Any) -> Any:  # the cross-attention keys/values: counted as the encoder's
        started = time.perf_counter()
        out = self.model.init_cache(*args)
        self.encode_s += time.perf_counter() - started
        return out

    def decode_step(self, *args: Any) -> Any:
        started = time.perf_counter()
        out = self.model.decode_step(*args)
        self.step_s += time.perf_counter() - started
        self.steps += 1
        return out


def split_against_ct2(engines: dict[str, Engine], sources: list[list[int]], setting: Setting, length: int) -> None:
    """Per batch: the time before the first step and the time per step, each engine, from the
    medians of 3 interleaved rounds at forced lengths 1 and `length`."""
    seconds: dict[tuple[str, int], list[float]] = {(name, n): [] for name in engines for n in (1, length)}
    for _ in range(3):
        for n in (1, length):
            for name, engine in engines.items():
                started = time.perf_counter()
                engine(sources, setting, n)
                seconds[(name, n)].append(time.perf_counter() - started)
    batches = -(-len(sources) // setting.batch)
    print("\n| engine | ms per batch | before the first step | per decode step |\n|---|---|---|---|")
    for name in engines:
        short, long = (statistics.median(seconds[(name, n)]) / batches for n in (1, length))
        per_step = (long - short) / (length - 1)
        print(f"| {name} | {1e3 * long:.0f} | {1e3 * (short - 2 * per_step):.1f} | {1e3 * per_step:.2f} |")


def ct2_int8_engine(tokenizer: SubwordTokenizer, threads: int) -> Engine:
    """CTranslate2 int8 on the benchmark's equal-size Transformer (random weights, seed 0)."""
    from ct2_convert import convert
    from decode_vs_ctranslate2 import ct2_engine, reference_transformer

    model_dir = convert(reference_transformer(tokenizer), tokenizer, Path(tempfile.mkdtemp(prefix="ct2-")), "int8")
    pieces = [tokenizer.sp.id_to_piece(i) for i in range(len(tokenizer))]
    return ct2_engine(model_dir, pieces, "int8", {threads})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=SHIPPED)
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    parser.add_argument("--setting", default="5,32,2", help="beam,batch,threads")
    parser.add_argument("--sentences", type=int, default=128)
    parser.add_argument("--length", type=int, default=20)
    parser.add_argument("--top", type=int, default=15, help="ops in the table")
    parser.add_argument("--against-ct2", action="store_true", help="also split each batch's time for CTranslate2 int8")
    args = parser.parse_args()

    setting = Setting(*map(int, args.setting.split(",")))
    model_dir = resolve_model(args.model)
    tokenizer = SubwordTokenizer(model_dir / "spm.model")
    lines = [line for line in itertools.islice(read_lines(DEFAULT_SOURCES), args.sentences) if line.strip()]
    sources = tokenizer.encode(lines)
    model, checkpoint = load_for_inference(model_dir, torch.device("cpu"), args.precision)
    timer = PhaseTimer(model)
    ids = checkpoint.model_config
    run = convtrans_engine(model, ids.pad_id, ids.eos_id)  # traces at its first step, as in the benchmark
    run(sources[:4], setting, 4)  # warm-up (and the trace)
    run = convtrans_engine(timer, ids.pad_id, ids.eos_id)

    started = time.perf_counter()
    tokens = run(sources, setting, args.length)
    total = time.perf_counter() - started
    steps = timer.steps
    search = total - timer.encode_s - timer.step_s
    print(f"{args.model} ({args.precision}), beam {setting.beam}, batch {setting.batch}, {setting.threads} thread(s): "
          f"{tokens / total:.0f} tokens/s, {steps} decode steps, {1e3 * total / steps:.2f} ms per step in all\n")
    print("| phase | ms per step | share |\n|---|---|---|")
    for name, seconds in [("encoder", timer.encode_s), ("model step", timer.step_s), ("search", search)]:
        print(f"| {name} | {1e3 * seconds / steps:.2f} | {seconds / total:.0%} |")

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run(sources, setting, args.length)
    events = [e for e in prof.key_averages() if e.key.startswith(("aten::", "quantized::"))]
    self_total = sum(e.self_cpu_time_total for e in events)
    print(f"\nATen ops by self time (under the profiler; {sum(e.count for e in events) / steps:.0f} op calls per step)\n")
    print("| op | calls per step | share of op time |\n|---|---|---|")
    for event in sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.top]:
        print(f"| `{event.key}` | {event.count / steps:.1f} | {event.self_cpu_time_total / self_total:.1%} |")

    if args.against_ct2:
        ct2 = ct2_int8_engine(tokenizer, setting.threads)
        ct2(sources[:4], setting, 4)
        split_against_ct2({"ct2-int8": ct2, f"convtrans ({args.precision})": run}, sources, setting, args.length)


if __name__ == "__main__":
    main()
