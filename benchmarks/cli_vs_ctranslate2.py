"""What a user gets from the CLI against CTranslate2, each from a fresh process, side by side.

    python benchmarks/cli_vs_ctranslate2.py --rounds 3 --json-out docs/cli_vs_ctranslate2.json

convtrans: `convtrans bench decode -m dynamicconv_multi30k_de_en --beams 1 --batch-sizes 1
--threads 1 --output-length 20` over the first --sentences Multi30k test_2016_flickr sources, in a
new process each round (its tokens/s: tokenizing, the encoder, every decode step and detokenizing
included; whatever the default path compiles or traces while it runs is included too, and an
engine not yet in the cache is built before the timing starts, reported apart as the first run).
CTranslate2 int8: a new process each round that loads the equal-size Transformer
(decode_vs_ctranslate2.reference_transformer, converted with ct2_convert.py), then translates the
same sentences one at a time on one thread, forced to the same 20 subwords + EOS, sentencepiece
encode and decode included. Rounds alternate the two; medians and their ratio. Also the wall time
of each whole process (imports and loading included).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ct2_convert import convert  # noqa: E402
from decode_vs_ctranslate2 import DEFAULT_SOURCES, SHIPPED, reference_transformer  # noqa: E402

from convtrans.data.corpus import read_lines  # noqa: E402
from convtrans.data.tokenize import SubwordTokenizer  # noqa: E402
from convtrans.zoo import resolve_model  # noqa: E402

CT2_CHILD = r"""
import json, sys, time
import ctranslate2, sentencepiece
model, spm, length = sys.argv[1], sys.argv[2], int(sys.argv[4])
lines = open(sys.argv[3], encoding="utf-8").read().splitlines()
translator = ctranslate2.Translator(model, device="cpu", compute_type="int8", intra_threads=1, inter_threads=1)
sp = sentencepiece.SentencePieceProcessor(model_file=spm)
translator.translate_batch([sp.encode(lines[0], out_type=str) + ["</s>"]], beam_size=1, max_decoding_length=4)
started = time.perf_counter()
tokens = 0
for line in lines:
    result = translator.translate_batch([sp.encode(line, out_type=str) + ["</s>"]], beam_size=1,
                                        min_decoding_length=length + 1, max_decoding_length=length + 1)
    sp.decode(result[0].hypotheses[0])
    tokens += len(result[0].hypotheses[0])
print(json.dumps({"seconds": time.perf_counter() - started, "tokens": tokens}))
"""


def convtrans_round(sources: Path, length: int, out: Path) -> dict:
    command = [sys.executable, "-m", "convtrans", "bench", "decode", "-i", str(sources), "-m", SHIPPED, "--beams", "1",
               "--batch-sizes", "1", "--threads", "1", "--output-length", str(length), "--json-out", str(out)]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - started
    row = json.loads(out.read_text())[0]
    return {"tokens_per_s": row["tokens_per_s"], "process_s": wall}


def ct2_round(model: Path, spm: Path, sources: Path, length: int) -> dict:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CT2_CHILD, str(model), str(spm), str(sources), str(length)],
                          check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - started
    row = json.loads(done.stdout.strip().splitlines()[-1])
    return {"tokens_per_s": row["tokens"] / row["seconds"], "process_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=64)
    parser.add_argument("--length", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    shipped = resolve_model(SHIPPED)
    tokenizer = SubwordTokenizer(shipped / "spm.model")
    work = Path(tempfile.mkdtemp(prefix="cli-vs-ct2-"))
    sources = work / "sources.de"
    lines = [line for line in itertools.islice(read_lines(DEFAULT_SOURCES), args.sentences) if line.strip()]
    sources.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    ct2_model = convert(reference_transformer(tokenizer), tokenizer, work / "ct2-int8", "int8")

    first = convtrans_round(sources, args.length, work / "first.json")  # builds the engine if it is not cached
    results: dict[str, list[dict]] = {"convtrans": [], "ct2-int8": []}
    for round_ in range(args.rounds):
        order = ["convtrans", "ct2-int8"] if round_ % 2 == 0 else ["ct2-int8", "convtrans"]
        for name in order:
            row = (convtrans_round(sources, args.length, work / "row.json") if name == "convtrans"
                   else ct2_round(ct2_model, shipped / "spm.model", sources, args.length))
            results[name].append(row)
            print(f"round {round_ + 1} {name}: {row['tokens_per_s']:.0f} tokens/s, process {row['process_s']:.2f} s",
                  file=sys.stderr)
    medians = {name: {key: statistics.median(r[key] for r in rows) for key in ("tokens_per_s", "process_s")}
               for name, rows in results.items()}
    ratio = medians["convtrans"]["tokens_per_s"] / medians["ct2-int8"]["tokens_per_s"]
    print(f"| engine | tokens/s (median of {args.rounds}) | process wall s |\n|---|---|---|")
    for name, med in medians.items():
        print(f"| {name} | {med['tokens_per_s']:.0f} | {med['process_s']:.2f} |")
    print(f"convtrans / CTranslate2 int8: {ratio:.2f}x; first convtrans run (engine build if not cached): "
          f"{first['process_s']:.2f} s")
    if args.json_out:
        args.json_out.write_text(json.dumps({"sentences": len(lines), "length": args.length, "rounds": results,
                                             "medians": medians, "ratio": ratio, "first_run": first}, indent=1) + "\n")


if __name__ == "__main__":
    main()
