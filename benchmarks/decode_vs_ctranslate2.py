"""Decode speed of convtrans against CTranslate2 on this CPU, side by side in one run.

    pip install -e '.[bench]'
    python benchmarks/decode_vs_ctranslate2.py --json-out bench.json

Protocol (CTranslate2's README benchmark, adapted): generated tokens per second, excluding
tokenization and model loading; every output forced to the same number of subwords, so every
engine runs the same decode steps over the same beams; the same sources in the same batches for
every engine; several rounds with the engines in a rotating order, medians and ratios.

Engines:
- ct2-fp32 / ct2-int8: CTranslate2 running a Transformer of transformer_multi30k_de_en's shape
  (random weights, seed 0), converted from the convtrans model below with the same weights
  (ct2_convert.py); the script checks both engines give the same log-probabilities first.
- transformer: that same model in convtrans on the default path (the compiled int8 engine,
  convtrans/engine: ONNX Runtime); transformer-fp32: the exact path (`--precision fp32`, steps
  traced: the same numbers as eager).
- dynamicconv / dynamicconv-fp32: the shipped models/dynamicconv_multi30k_de_en, default and exact;
  dynamicconv-fbgemm: the default path where onnxruntime is missing (fbgemm int8 Linears, traced
  steps, inference/int8.py and traced.py), the default before the engine; dynamicconv-engine-fp32:
  the engine's fp32 graphs (not on any default path; measured as a candidate for the exact one).
- Any further model directory given with --model (default path; an exported directory as exported).

Sources are the first --sentences lines of Multi30k test_2016_flickr (German), encoded with the
shipped sentencepiece model. Absolute numbers belong to this machine; the ratios are the result.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ct2_convert import convert  # noqa: E402 - the benchmarks folder is not a package

from convtrans.checkpoint import load_model  # noqa: E402
from convtrans.config import GenerateConfig, load_preset  # noqa: E402
from convtrans.data.corpus import read_lines  # noqa: E402
from convtrans.data.tokenize import SubwordTokenizer  # noqa: E402
from convtrans.engine import graphs  # noqa: E402
from convtrans.engine.runtime import EngineModel  # noqa: E402
from convtrans.inference.exported import load_for_inference  # noqa: E402
from convtrans.inference.generate import generate  # noqa: E402
from convtrans.inference.int8 import quantize_linears  # noqa: E402
from convtrans.inference.traced import TracedSteps  # noqa: E402
from convtrans.model import EncoderDecoder  # noqa: E402
from convtrans.zoo import resolve_model  # noqa: E402

SHIPPED = "dynamicconv_multi30k_de_en"
DEFAULT_SOURCES = Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k" / "test_2016_flickr.de.gz"
SETTINGS = "1,32,2;5,32,2;1,1,1;5,1,1"  # beam, batch, threads


@dataclass
class Setting:
    beam: int
    batch: int
    threads: int

    @property
    def name(self) -> str:
        return f"beam {self.beam}, batch {self.batch}, {self.threads} thread{'s' if self.threads > 1 else ''}"


@dataclass
class Measurement:
    engine: str
    setting: str
    round: int
    seconds: float
    tokens: int

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


Engine = Callable[[list[list[int]], Setting, int], int]  # (sources, setting, length) -> tokens generated


def convtrans_engine(model: Any, pad: int, eos: int) -> Engine:
    """Batches of token ids through convtrans' search (what `translate` runs after tokenizing).
    A model with traced steps traces at its next step (in the warm-up), as a long job would early on."""
    if isinstance(model, TracedSteps):
        model.steps_run = model.eager_steps

    def run(sources: list[list[int]], setting: Setting, length: int) -> int:
        torch.set_num_threads(setting.threads)
        config = GenerateConfig(beam=setting.beam, min_len=length, max_len_a=0.0, max_len_b=length)
        tokens = 0
        for start in range(0, len(sources), setting.batch):
            group = sources[start : start + setting.batch]
            src = torch.full((len(group), max(map(len, group)) + 1), pad, dtype=torch.long)
            for row, ids in enumerate(group):
                src[row, : len(ids) + 1] = torch.tensor(ids + [eos])
            for hypotheses in generate([model], src, config):
                tokens += len(hypotheses[0].tokens) + 1  # + EOS, a decode step like the others
        return tokens

    return run


def ct2_engine(model_dir: Path, pieces: list[str], compute_type: str, thread_counts: set[int]) -> Engine:
    """The same batches through CTranslate2 (one Translator per thread count, loaded up front)."""
    import ctranslate2

    translators = {t: ctranslate2.Translator(str(model_dir), device="cpu", compute_type=compute_type,
                                             intra_threads=t, inter_threads=1) for t in thread_counts}

    def run(sources: list[list[int]], setting: Setting, length: int) -> int:
        translator = translators[setting.threads]
        tokens = 0
        for start in range(0, len(sources), setting.batch):
            group = [[pieces[i] for i in ids] + ["</s>"] for ids in sources[start : start + setting.batch]]
            # length + 1 steps, no EOS: the same decode steps as convtrans' length tokens + EOS
            results = translator.translate_batch(group, beam_size=setting.beam, max_batch_size=0,
                                                 min_decoding_length=length + 1, max_decoding_length=length + 1)
            tokens += sum(len(r.hypotheses[0]) for r in results)
        return tokens

    return run


def engine_of(model: EncoderDecoder, folder: Path) -> EngineModel:
    """The default path's compiled int8 engine of an in-memory model (what load_for_inference
    builds and caches for a checkpoint)."""
    if not (folder / "step.onnx").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        graphs.build(model, folder, "int8")
    return EngineModel(model.config, folder)


def reference_transformer(tokenizer: SubwordTokenizer) -> EncoderDecoder:
    """The equal-size Transformer both engines run: transformer_multi30k_de_en's shape, random
    weights from seed 0, the shipped tokenizer's vocabulary."""
    torch.manual_seed(0)
    config = load_preset("transformer_multi30k_de_en", src_vocab_size=len(tokenizer), tgt_vocab_size=len(tokenizer))
    return EncoderDecoder(config).eval()


def check_same_model(model: EncoderDecoder, ct2_dir: Path, tokenizer: SubwordTokenizer) -> float:
    """Largest |log-prob difference| between the engines on a few real sentence pairs."""
    import ctranslate2

    pieces = [tokenizer.sp.id_to_piece(i) for i in range(len(tokenizer))]
    translator = ctranslate2.Translator(str(ct2_dir), device="cpu")
    src = tokenizer.encode(["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee."])
    tgt = tokenizer.encode(["A man rides a bike.", "Two dogs play in the snow."])
    scored = translator.score_batch([[pieces[i] for i in s] + ["</s>"] for s in src], [[pieces[i] for i in t] for t in tgt])
    worst = 0.0
    for s, t, result in zip(src, tgt, scored):
        with torch.no_grad():
            lprobs = model(torch.tensor([s + [3]]), torch.tensor([[2] + t])).log_softmax(-1)[0]
        ours = [lprobs[i, token].item() for i, token in enumerate(t + [3])]
        worst = max(worst, max(abs(a - b) for a, b in zip(ours, result.log_probs)))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", type=Path, default=DEFAULT_SOURCES)
    parser.add_argument("--sentences", type=int, default=512, help="sources for the batch-32 settings")
    parser.add_argument("--single-sentences", type=int, default=128, help="sources for the batch-1 settings")
    parser.add_argument("--length", type=int, default=20, help="subwords forced in every output")
    parser.add_argument("--settings", default=SETTINGS, help="beam,batch,threads;...")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", action="append", default=[], help="more convtrans model dirs to time")
    parser.add_argument("--engines", default="", help="only these engines (comma-separated names)")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--peak-memory", action="store_true",
                        help="instead of timing: each engine's peak resident memory, one process per engine")
    parser.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    settings = [Setting(*map(int, part.split(","))) for part in args.settings.split(";")]
    shipped = resolve_model(SHIPPED)
    tokenizer = SubwordTokenizer(shipped / "spm.model")
    pieces = [tokenizer.sp.id_to_piece(i) for i in range(len(tokenizer))]
    lines = [line for line in itertools.islice(read_lines(args.sources), args.sentences) if line.strip()]
    sources = tokenizer.encode(lines)

    transformer = reference_transformer(tokenizer)
    config = transformer.config
    work = Path(tempfile.mkdtemp(prefix="ct2-bench-"))
    ct2_fp32 = convert(transformer, tokenizer, work / "fp32")
    ct2_int8 = convert(transformer, tokenizer, work / "int8", "int8")
    difference = check_same_model(transformer, ct2_fp32, tokenizer)
    print(f"same model in both engines: largest log-prob difference {difference:.2e}", file=sys.stderr)
    assert difference < 1e-3

    threads = {s.threads for s in settings}
    cpu = torch.device("cpu")

    def shipped_engine(name: str, precision: str) -> Engine:
        model, checkpoint = load_for_inference(resolve_model(name), cpu, precision)
        return convtrans_engine(model, checkpoint.model_config.pad_id, checkpoint.model_config.eos_id)

    # built only when asked for, so a --peak-memory child holds one engine
    factories: dict[str, Callable[[], Engine]] = {
        "ct2-fp32": lambda: ct2_engine(ct2_fp32, pieces, "float32", threads),
        "ct2-int8": lambda: ct2_engine(ct2_int8, pieces, "int8", threads),
        # as load_for_inference prepares a checkpoint: int8 (default) or exact, steps traced on the CPU
        "transformer": lambda: convtrans_engine(engine_of(transformer, work / "transformer-engine"),
                                                config.pad_id, config.eos_id),
        "transformer-fp32": lambda: convtrans_engine(TracedSteps(transformer), config.pad_id, config.eos_id),
    }
    for name, precision in [(SHIPPED, "auto"), (SHIPPED, "fp32"), *((m, "auto") for m in args.model)]:
        label = Path(name).name.removesuffix("_multi30k_de_en") + ("-fp32" if precision == "fp32" else "")
        factories[label] = functools.partial(shipped_engine, name, precision)

    def fbgemm_engine() -> Engine:
        model, checkpoint = load_model(resolve_model(SHIPPED))
        return convtrans_engine(TracedSteps(quantize_linears(model)), checkpoint.model_config.pad_id,
                                checkpoint.model_config.eos_id)

    def engine_fp32() -> Engine:  # the engine's fp32 graphs: a candidate for the exact path (within 1e-4)
        model, checkpoint = load_model(resolve_model(SHIPPED))
        folder = work / "dynamicconv-engine-fp32"
        folder.mkdir()
        graphs.build(model, folder, "fp32")
        return convtrans_engine(EngineModel(model.config, folder), checkpoint.model_config.pad_id,
                                checkpoint.model_config.eos_id)

    factories["dynamicconv-fbgemm"] = fbgemm_engine
    factories["dynamicconv-engine-fp32"] = engine_fp32
    if args.engines:
        factories = {k: v for k, v in factories.items() if k in args.engines.split(",")}
    if args.peak_memory:
        peak_memory(factories, args)
        return
    engines = {name: factory() for name, factory in factories.items()}
    if args.rss_child:  # one pass of each setting, then this process's peak resident memory
        for setting in settings:
            for engine in engines.values():
                engine(sources[: args.single_sentences] if setting.batch == 1 else sources, setting, args.length)
        print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
        return

    for engine in engines.values():  # warm-up: allocator, lazy initialization, oneDNN primitives
        for setting in settings:
            engine(sources[:4], setting, 4)
    measurements: list[Measurement] = []
    names = list(engines)
    for round_ in range(args.rounds):
        for setting in settings:
            subset = sources[: args.single_sentences] if setting.batch == 1 else sources
            for name in names[round_ % len(names):] + names[: round_ % len(names)]:  # rotating order
                started = time.perf_counter()
                tokens = engines[name](subset, setting, args.length)
                seconds = time.perf_counter() - started
                measurements.append(Measurement(name, setting.name, round_, seconds, tokens))
                print(f"round {round_ + 1} | {setting.name} | {name}: {tokens / seconds:.0f} tokens/s", file=sys.stderr)

    print(table(measurements, names, settings))
    if args.json_out:
        args.json_out.write_text(json.dumps({"settings": [asdict(s) for s in settings], "length": args.length,
                                             "sentences": len(sources), "single_sentences": args.single_sentences,
                                             "torch": torch.__version__, "threads": sorted(threads),
                                             "measurements": [asdict(m) | {"tokens_per_s": m.tokens_per_s}
                                                              for m in measurements]}, indent=2))


def peak_memory(factories: dict[str, Callable[[], Engine]], args: argparse.Namespace) -> None:
    """Peak resident memory of a process that runs one engine over the settings once (as CTranslate2's
    benchmark reports it), next to a process that builds the same models and runs none ("none":
    the shared cost of this script: torch, the reference model and its conversions)."""
    common = ["--sources", str(args.sources), "--sentences", str(args.sentences), "--single-sentences",
              str(args.single_sentences), "--length", str(args.length), "--settings", args.settings, "--rss-child"]
    common += [f"--model={m}" for m in args.model]
    lines = ["| engine | peak RSS (MB) | above none (MB) |", "|---|---|---|"]
    baseline = None
    for name in ["none", *factories]:
        run = subprocess.run([sys.executable, __file__, "--engines", name, *common], capture_output=True, text=True,
                             check=True)
        peak = json.loads(run.stdout.strip().splitlines()[-1])["peak_rss_mb"]
        baseline = peak if baseline is None else baseline
        lines.append(f"| {name} | {peak:.0f} | {peak - baseline:.0f} |")
        print(lines[-1], file=sys.stderr)
    print("\n".join(lines))


def table(measurements: list[Measurement], engines: list[str], settings: list[Setting]) -> str:
    """Markdown: median tokens/s per engine and setting, and each convtrans engine's ratio to CT2."""
    median = {(e, s.name): statistics.median(m.tokens_per_s for m in measurements if m.engine == e and m.setting == s.name)
              for e in engines for s in settings}
    lines = ["| beam, batch, threads | " + " | ".join(engines) + " |", "|---" * (len(engines) + 1) + "|"]
    for s in settings:
        cells = []
        for e in engines:
            value = median[(e, s.name)]
            ratios = [f"{value / median[(ref, s.name)]:.2f}x {ref.removeprefix('ct2-')}"
                      for ref in ("ct2-fp32", "ct2-int8") if not e.startswith("ct2") and (ref, s.name) in median]
            cells.append(f"{value:.0f}" + (f" ({', '.join(ratios)})" if ratios else ""))
        lines.append(f"| {s.beam}, {s.batch}, {s.threads} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
