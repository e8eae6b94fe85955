"""`convtrans bench decode`: translation speed of one or more models over the same input.

For every model × beam × batch size, the input lines are translated in consecutive groups of
`batch size` lines (each group one `translate_batch` call, as a streaming user would send them),
and the wall time of the whole file gives sentences/s and output tokens/s (subwords including
EOS). Models are timed side by side in one run, so ratios between them are meaningful on any
machine; absolute numbers mean something only for the machine they ran on.

Models that write outputs of different lengths do different amounts of work for the same input
(a half-trained model that repeats itself looks slow per sentence, fast per token). With
`output_length` every hypothesis is forced to exactly that many subwords (EOS blocked before,
forced at it; no n-gram blocking), so every model runs the same number of decode steps over the
same beams and the comparison is of the decoders alone.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from convtrans.inference.translator import Translator
from convtrans.model import EncoderDecoder


@dataclass
class DecodeRow:
    model: str
    parameters: int
    beam: int
    batch_size: int
    sentences: int
    seconds: float
    sentences_per_s: float
    tokens_per_s: float
    output_length: int | None = None  # forced subwords per output, None = each model's own
    precision: str = "auto"  # translate's --precision (int8.py)


def run_decode_bench(models: list[str], lines: list[str], beams: list[int], batch_sizes: list[int], device: str = "cpu",
                     threads: int | None = None, progress: Any = None, output_length: int | None = None,
                     precisions: tuple[str, ...] = ("auto",)) -> list[DecodeRow]:
    """Each model at each precision (labelled "model (precision)" when there are several)."""
    if threads:
        torch.set_num_threads(threads)
    rows = []
    for model, precision in [(m, p) for m in models for p in precisions]:
        name = model if len(precisions) == 1 else f"{model} ({precision})"
        translator = Translator(model, device=device, batch_tokens=1 << 30, precision=precision)
        params = _parameter_count(translator)
        translator.translate_batch(lines[:4])  # warm-up (allocator, lazy init)
        for beam in beams:
            config = translator.generate_config.replace(beam=beam, n_best=1, sampling=False)
            if output_length:
                config = config.replace(min_len=output_length, max_len_a=0.0, max_len_b=output_length, no_repeat_ngram=0)
            for batch_size in batch_sizes:
                if progress:
                    progress(f"{name}: beam {beam}, batch {batch_size}")
                tokens = 0
                started = time.perf_counter()
                for start in range(0, len(lines), batch_size):
                    for result in translator.translate_batch(lines[start : start + batch_size], config):
                        tokens += len(result.tokens) + 1
                seconds = time.perf_counter() - started
                rows.append(DecodeRow(name, params, beam, batch_size, len(lines), seconds, len(lines) / seconds,
                                      tokens / seconds, output_length or None, precision))
    return rows


def _parameter_count(translator: Translator) -> int:
    """From the stored config (a shape-only model), so eager and exported graphs count alike."""
    with torch.device("meta"):
        return EncoderDecoder(translator.checkpoint.model_config).num_parameters()


def write_json(rows: list[DecodeRow], path: Path) -> None:
    Path(path).write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n", encoding="utf-8")
