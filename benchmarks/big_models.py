"""The released models' size on this CPU: DynamicConv big and Transformer big (WMT16 en-de shape,
random weights) imported from fairseq checkpoints, decoded by convtrans, CTranslate2 and fairseq.

    pip install -e '.[bench]'                       # CTranslate2
    python benchmarks/big_models.py --fairseq-python /work/ref/fairseq-venv/bin/python --json-out big.json

1. fairseq 0.12.2 (another Python: it does not import on 3.11) builds both models with its own
   code and init and saves them as its checkpoints (fairseq_big_reference.py build):
   `lightconv_wmt_en_de_big` (DynamicConv, GLU, kernels 3..31, 7+6 layers, d=1024, 16 heads; the
   paper's dynamicconv.glu.wmt16.en-de) and `transformer_vaswani_wmt_en_de_big`, each with a joined
   32,768-symbol dictionary and shared embeddings.
2. `convtrans import fairseq` converts them (the same numbers: tests/integration/test_import_reference.py).
3. Engines, all on the same source ids in the same batches, every output forced to --length
   subwords (the same decode steps everywhere), --rounds rounds in rotating order, medians:
   - dynamicconv-big / transformer-big: convtrans's default path (int8 weights, traced steps);
     *-fp32: the exact path (`--precision fp32`);
   - ct2-fp32 / ct2-int8: CTranslate2 on the Transformer big (converted from the convtrans model:
     ct2_convert.py); CTranslate2 has no LightConv/DynamicConv;
   - fairseq-*: fairseq's own SequenceGenerator on its own checkpoint, in a subprocess per
     measurement (its generation time only, no loading).
Sources: random ids of the lengths of the first Multi30k test sentences' subword counts (a model
with random weights reads any ids alike). Absolute numbers are this machine's; ratios are the result.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ct2_convert import convert  # noqa: E402
from decode_vs_ctranslate2 import Measurement, Setting, convtrans_engine, ct2_engine  # noqa: E402

from convtrans.checkpoint import load_model  # noqa: E402
from convtrans.config import GenerateConfig  # noqa: E402
from convtrans.data.vocab import read_fairseq_dictionary  # noqa: E402
from convtrans.imports.fairseq import FairseqImport, import_fairseq  # noqa: E402
from convtrans.inference.exported import load_for_inference  # noqa: E402
from convtrans.inference.generate import generate  # noqa: E402

HERE = Path(__file__).resolve().parent
ARCHS = {"dynamicconv-big": "lightconv_wmt_en_de_big", "transformer-big": "transformer_vaswani_wmt_en_de_big"}


def fairseq(python: str, *args: str) -> str:
    result = subprocess.run([python, str(HERE / "fairseq_big_reference.py"), *args], capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise SystemExit(f"fairseq failed: {result.stderr.strip().splitlines()[-1]}")
    return result.stdout.strip().splitlines()[-1]


def sources(count: int, vocab: int, seed: int = 0) -> list[list[int]]:
    """Random ids (no specials) with Multi30k-like lengths: 10-30 subwords."""
    rng = random.Random(seed)
    return [[rng.randrange(4, vocab) for _ in range(rng.randint(10, 30))] for _ in range(count)]


def check_same_outputs(model: torch.nn.Module, symbols: list[str], ids: list[list[int]], out: Path) -> None:
    """CTranslate2 and convtrans (exact path) must give the same greedy outputs before timing."""
    import ctranslate2

    translator = ctranslate2.Translator(str(convert(model, symbols, out)), device="cpu")
    config = GenerateConfig(beam=1, max_len_a=0.0, max_len_b=12)
    for source in ids:
        ours = generate([model], torch.tensor([source + [model.config.eos_id]]), config)[0][0].tokens
        theirs = translator.translate_batch([[symbols[i] for i in source] + ["</s>"]], beam_size=1,
                                            max_decoding_length=12)[0].hypotheses[0]
        assert [symbols[i] for i in ours][: len(theirs)] == theirs[: len(ours)], (ours, theirs)
    print("CTranslate2 and convtrans give the same greedy outputs", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fairseq-python", required=True, help="a Python with fairseq 0.12.2")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "convtrans-big-models")
    parser.add_argument("--sentences", type=int, default=16)
    parser.add_argument("--length", type=int, default=24)
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()

    setting = Setting(args.beam, args.batch, args.threads)
    torch.set_num_threads(args.threads)
    checkpoints, models = {}, {}
    for name, arch in ARCHS.items():
        folder = args.work / arch
        if not (folder / "checkpoint.pt").is_file():
            print(f"fairseq builds {arch}", file=sys.stderr)
            fairseq(args.fairseq_python, "build", arch, str(folder))
        checkpoints[name] = folder / "checkpoint.pt"
        models[name] = args.work / f"convtrans-{arch}"
        if not (models[name] / "config.json").is_file():
            import_fairseq(FairseqImport(checkpoint=folder / "checkpoint.pt", dict_dir=folder, out=models[name],
                                         tokenizer="none", overwrite=True))
    symbols = read_fairseq_dictionary(args.work / ARCHS["transformer-big"] / "dict.en.txt").symbols
    ids = sources(args.sentences, len(symbols))
    ids_file = args.work / "sources.json"
    ids_file.write_text(json.dumps(ids))

    cpu = torch.device("cpu")
    engines = {}
    for name, folder in models.items():
        for precision, label in (("auto", name), ("fp32", f"{name}-fp32")):
            model, checkpoint = load_for_inference(folder, cpu, precision)
            engines[label] = convtrans_engine(model, checkpoint.model_config.pad_id, checkpoint.model_config.eos_id)
    eager, _ = load_model(models["transformer-big"])
    check_same_outputs(eager, symbols, ids[:2], args.work / "ct2" / "check")
    ct2_dir = args.work / "ct2"
    for quantization, label in ((None, "ct2-fp32"), ("int8", "ct2-int8")):
        out = convert(eager, symbols, ct2_dir / label, quantization)
        engines[label] = ct2_engine(out, symbols, "float32" if quantization is None else "int8", {args.threads})

    def fairseq_engine(name: str):  # noqa: ANN202 - returns an Engine
        def run(batch_sources: list[list[int]], s: Setting, length: int) -> tuple[float, int]:
            out = json.loads(fairseq(args.fairseq_python, "time", str(checkpoints[name]), str(ids_file),
                                     "--beam", str(s.beam), "--batch", str(s.batch), "--length", str(length),
                                     "--threads", str(s.threads)))
            return out["seconds"], out["tokens"]
        return run

    external = {f"fairseq-{name}": fairseq_engine(name) for name in ARCHS}
    for engine in engines.values():  # warm-up (traces the steps, allocator, oneDNN)
        engine(ids[:2], setting, 4)
    measurements: list[Measurement] = []
    names = [*engines, *external]
    for round_ in range(args.rounds):
        for name in names[round_ % len(names):] + names[: round_ % len(names)]:
            if name in external:
                seconds, tokens = external[name](ids, setting, args.length)
            else:
                started = time.perf_counter()
                tokens = engines[name](ids, setting, args.length)
                seconds = time.perf_counter() - started
            measurements.append(Measurement(name, setting.name, round_, seconds, tokens))
            print(f"round {round_ + 1} | {name}: {tokens / seconds:.1f} tokens/s", file=sys.stderr)
    print(markdown(measurements, names, setting, args))
    if args.json_out:
        args.json_out.write_text(json.dumps({"setting": asdict(setting), "length": args.length,
                                             "sentences": args.sentences, "torch": torch.__version__,
                                             "measurements": [asdict(m) | {"tokens_per_s": m.tokens_per_s}
                                                              for m in measurements]}, indent=2))


def markdown(measurements: list[Measurement], names: list[str], setting: Setting, args: argparse.Namespace) -> str:
    medians = {n: statistics.median(m.tokens_per_s for m in measurements if m.engine == n) for n in names}
    base = medians["fairseq-transformer-big"]
    rows = [f"| {n} | {medians[n]:.1f} | {medians[n] / base:.2f}x |" for n in names]
    return (f"{setting.name}, {args.sentences} sentences, {args.length} subwords each, median of {args.rounds} rounds\n\n"
            "| engine | tokens/s | vs fairseq Transformer big |\n|---|---|---|\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
