"""Issue 27, first measurement: one decode step under each candidate engine, side by side.

    python benchmarks/step_engines.py --json-out docs/step_engines.json

The step is the export's step graph (export.py `_Step`: tokens, position and the flat decode
state in, logits and the new state out), at a fixed point of a decode (10 steps in, the caches
that long), so every engine computes the same thing; per setting, medians of --calls calls per
round over --rounds rotating rounds after --warmup untimed calls, on the shipped DynamicConv and an equal-size Transformer
(random weights, decode_vs_ctranslate2.reference_transformer). Engines:
- eager: the PyTorch modules (fp32); traced: TorchScript (today's default graph, fp32);
- traced-int8: today's default path (fbgemm int8 Linears, inference/int8.py, traced);
- inductor: torch.compile(backend="inductor", options freezing) of the same step, fp32, shapes
  fixed (a real engine would bucket them; compile time is reported);
- ort / ort-int8: ONNX Runtime on the exported step (opset 17), and on its dynamic int8
  quantization (onnxruntime.quantization.quantize_dynamic: MatMulInteger, MLAS kernels).
Settings: 1 row on 1 thread (beam 1, batch 1) and 160 rows on 2 threads (beam 5, batch 32).
Every engine's logits are compared with eager's (max |difference| reported). Step times only:
the search, the encoder and the reorders around a step are not in them.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from decode_vs_ctranslate2 import SHIPPED, reference_transformer  # noqa: E402

from convtrans.checkpoint import load_model  # noqa: E402
from convtrans.data.tokenize import SubwordTokenizer  # noqa: E402
from convtrans.inference.decode_state import flat_state, structure_of  # noqa: E402
from convtrans.inference.export import _Step  # noqa: E402
from convtrans.inference.int8 import quantize_linears  # noqa: E402
from convtrans.model import EncoderDecoder  # noqa: E402
from convtrans.zoo import resolve_model  # noqa: E402

Step = Callable[..., Any]


def step_point(model: EncoderDecoder, rows: int, steps: int = 10, src_len: int = 16) -> tuple[tuple, list]:
    """Inputs of the step after `steps` steps of `rows` rows (random source ids), and its structure."""
    torch.manual_seed(0)
    cfg = model.config
    src = torch.randint(4, cfg.src_vocab_size, (rows, src_len))
    src[:, -1] = cfg.eos_id
    with torch.no_grad():
        enc_out, enc_mask = model.encode(src)
        cache = model.init_cache(enc_out, enc_mask)
        tokens = torch.full((rows, 1), cfg.start_id, dtype=torch.long)
        for _ in range(steps):
            logits, cache = model.decode_step(tokens, enc_out, enc_mask, cache)
            tokens = logits[:, -1].argmax(-1, keepdim=True)
    structure = [[structure_of(s) for s in cache.self_states], [structure_of(s) for s in cache.cross_states]]
    inputs = (tokens, torch.tensor(cache.step), enc_out, enc_mask, *flat_state(cache))
    return tuple(t.clone() for t in inputs), structure


def engines(model: EncoderDecoder, inputs: tuple, structure: list, work: Path,
            only: set[str]) -> dict[str, tuple[Step, float]]:
    """name -> (a callable on `inputs`, seconds it took to build)."""
    built: dict[str, tuple[Step, float]] = {}
    step = _Step(model, *structure).eval()

    def add(name: str, make: Callable[[], Step]) -> None:
        if only and name not in only:
            return
        started = time.perf_counter()
        try:
            fn = make()
            fn(*inputs)  # first call: compilation, allocation
        except Exception as err:  # noqa: BLE001 - a candidate that fails is reported, not fatal
            print(f"{name}: failed to build ({type(err).__name__}: {str(err).splitlines()[0][:160]})", file=sys.stderr)
            return
        built[name] = (fn, time.perf_counter() - started)

    def traced(module: torch.nn.Module) -> Step:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.trace(module, inputs, check_trace=False)

    add("eager", lambda: step)
    add("traced", lambda: traced(step))
    add("traced-int8", lambda: traced(_Step(quantize_linears(copy.deepcopy(model)), *structure).eval()))

    def inductor() -> Step:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        return torch.compile(step, backend="inductor", dynamic=False)

    add("inductor", inductor)

    def ort(quantized: bool) -> Step:
        import onnxruntime

        names = ["tokens", "step", "enc_out", "enc_mask", *[f"state_{i}" for i in range(len(inputs) - 4)]]
        path = work / f"step-{id(model)}-{inputs[0].shape[0]}.onnx"
        if not path.is_file():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(step, inputs, str(path), input_names=names, opset_version=17, dynamo=False)
        if quantized:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            q_path = path.with_suffix(".int8.onnx")
            if not q_path.is_file():
                quantize_dynamic(str(path), str(q_path), weight_type=QuantType.QInt8)
            path = q_path
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        wanted = {i.name for i in session.get_inputs()}
        feeds = {n: t.numpy() for n, t in zip(names, inputs) if n in wanted}

        def run(*_: Any) -> list:
            return session.run(None, feeds)

        return run

    add("ort", lambda: ort(False))
    add("ort-int8", lambda: ort(True))
    return built


def logits_of(output: Any) -> torch.Tensor:
    first = output[0]
    return first if isinstance(first, torch.Tensor) else torch.from_numpy(first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls of each engine first")
    parser.add_argument("--engines", default="", help="comma-separated subset")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    only = set(filter(None, args.engines.split(",")))
    tokenizer = SubwordTokenizer(resolve_model(SHIPPED) / "spm.model")
    models = {"dynamicconv": load_model(resolve_model(SHIPPED))[0], "transformer": reference_transformer(tokenizer)}
    work = Path(tempfile.mkdtemp(prefix="step-engines-"))
    results = []
    torch.set_grad_enabled(False)  # every engine runs inference; traced graphs need plain (not inference) tensors
    for rows, threads in ((1, 1), (160, 2)):
        torch.set_num_threads(threads)
        for model_name, model in models.items():
            inputs, structure = step_point(model, rows)
            built = engines(model, inputs, structure, work, only)
            with torch.no_grad():
                reference = logits_of(built["eager"][0](*inputs)) if "eager" in built else None
            times: dict[str, list[float]] = {name: [] for name in built}
            names = list(built)
            for fn, _ in built.values():  # warm-up: TorchScript's profiling executor optimizes after a few runs
                for _ in range(args.warmup):
                    fn(*inputs)
            with torch.no_grad():
                for round_ in range(args.rounds):
                    for name in names[round_ % len(names):] + names[: round_ % len(names)]:
                        fn = built[name][0]
                        for _ in range(args.calls):
                            started = time.perf_counter()
                            fn(*inputs)
                            times[name].append(time.perf_counter() - started)
                for name in names:
                    difference = None
                    if reference is not None:
                        difference = (logits_of(built[name][0](*inputs)).float() - reference).abs().max().item()
                    row = {"model": model_name, "rows": rows, "threads": threads, "engine": name,
                           "median_ms": statistics.median(times[name]) * 1e3, "build_s": built[name][1],
                           "max_abs_logit_difference": difference}
                    results.append(row)
                    print(json.dumps(row), flush=True)
    print(table(results))
    if args.json_out:
        args.json_out.write_text(json.dumps({"torch": torch.__version__, "calls": args.calls, "rounds": args.rounds,
                                             "results": results}, indent=1) + "\n")


def table(results: list[dict]) -> str:
    settings = sorted({(r["rows"], r["threads"], r["model"]) for r in results})
    engines_seen = list(dict.fromkeys(r["engine"] for r in results))
    lines = ["| rows, threads, model | " + " | ".join(engines_seen) + " |", "|---" * (len(engines_seen) + 1) + "|"]
    for rows, threads, model in settings:
        cells = []
        for engine in engines_seen:
            row = next((r for r in results if (r["rows"], r["threads"], r["model"], r["engine"]) ==
                        (rows, threads, model, engine)), None)
            cells.append("failed" if row is None else f"{row['median_ms']:.2f} ms")
        lines.append(f"| {rows}, {threads}, {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
