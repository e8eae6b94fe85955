"""Experiment (issue 17): how much would an int8 output projection alone buy on the default path?

    python benchmarks/experiments/int8_output_projection.py          # decode speed, side by side
    python benchmarks/experiments/int8_output_projection.py bleu     # test_2016_flickr BLEU of both

The shipped translator as it is (exact fp32) against the same model with only its output projection
(256 → 8,000) replaced by a dynamic int8 Linear (fbgemm, through torch.ao's deprecated quantized
dtypes: an experiment, not a path to ship). Tokens/s over 3 interleaved rounds, medians, outputs
forced to 20 subwords so both run the same steps; 128 sentences at batch 32, 24 at batch 1.
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

from convtrans.data.corpus import read_lines
from convtrans.inference.translator import Translator
from convtrans.scoring import ScoreOptions, score

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "multi30k"
SETTINGS = [(1, 32, 2), (5, 32, 2), (1, 1, 1), (5, 1, 1)]  # beam, batch, threads


def with_int8_output_projection(translator: Translator) -> Translator:
    warnings.simplefilter("ignore")  # torch.ao's deprecation warnings, once per call
    quantized = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(translator.model.output),
                                                       {torch.nn.Linear}, dtype=torch.qint8)
    translator.model.output = quantized[0]
    return translator


def tokens_per_s(translator: Translator, lines: list[str], beam: int, batch: int) -> float:
    config = translator.generate_config.replace(beam=beam, n_best=1, min_len=20, max_len_a=0.0, max_len_b=20,
                                                no_repeat_ngram=0)
    tokens, started = 0, time.perf_counter()
    for start in range(0, len(lines), batch):
        tokens += sum(len(r.tokens) + 1 for r in translator.translate_batch(lines[start : start + batch], config))
    return tokens / (time.perf_counter() - started)


def main() -> None:
    engines = {"fp32": Translator(device="cpu"), "int8 head": with_int8_output_projection(Translator(device="cpu"))}
    sources = list(read_lines(DATA / "test_2016_flickr.de.gz"))
    if "bleu" in sys.argv:
        torch.set_num_threads(2)
        references = list(read_lines(DATA / "test_2016_flickr.en.gz"))
        for name, translator in engines.items():
            bleu = score(translator.translate(sources), [references], ScoreOptions(metrics=("bleu",)))[0]
            print(f"{name}: test2016 BLEU {bleu.score:.2f}", flush=True)
        return
    speeds: dict[tuple[int, int, int, str], list[float]] = {}
    for round_no in range(3):
        for beam, batch, threads in SETTINGS:
            torch.set_num_threads(threads)
            lines = sources[: 128 if batch == 32 else 24]
            order = list(engines) if round_no % 2 == 0 else list(reversed(engines))
            for name in order:
                speeds.setdefault((beam, batch, threads, name), []).append(
                    tokens_per_s(engines[name], lines, beam, batch))
    for beam, batch, threads in SETTINGS:
        fp32 = statistics.median(speeds[(beam, batch, threads, "fp32")])
        int8 = statistics.median(speeds[(beam, batch, threads, "int8 head")])
        print(f"beam {beam} batch {batch} threads {threads}: fp32 {fp32:.0f} tok/s, int8 head {int8:.0f} tok/s, "
              f"ratio {int8 / fp32:.2f}")


if __name__ == "__main__":
    main()
