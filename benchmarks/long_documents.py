"""How `summarize` should read a document longer than the model's source limit: ROUGE of three
ways on the DialogSum dev dialogues that are over the limit.

    python benchmarks/long_documents.py [--limit 511] [--json-out long.json]

- truncate: the first `limit` subwords (convtrans before, and `summarize --no-split` now);
- chunks: the dialogue cut at turn and sentence boundaries into chunks of about equal size within
  the limit, each summarized, the summaries joined (`summarize` now; segment.plan_chunks);
- whole: the whole dialogue read at once past the limit. The shipped summarizer is a DynamicConv
  encoder (no attention) with sinusoidal positions, so nothing but the position table stops it;
  the table is extended here for the experiment.

With the shipped model's own limit (511) only 5 of the 500 dev dialogues are longer; `--limit 256`
also runs the same comparison with the limit set to 256 subwords, where 111 dialogues are over it
(there "whole" reads lengths the model was trained on, so it is an upper bound for reading more,
not an extrapolation).
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import torch

from convtrans.inference.translator import Summarizer
from convtrans.model import sinusoidal_positions
from convtrans.scoring import ScoreOptions, score

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "dialogsum" / "dev.jsonl.gz"
MODEL = "dynamicconv_dialogsum"
WHOLE_LIMIT = 4095


def rouge(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    results = score(hypotheses, [references], ScoreOptions(metrics=("rouge",)))
    return {result.name: round(result.score, 2) for result in results}


def extend_source_positions(summarizer: Summarizer, positions: int) -> None:
    """Let the encoder read `positions` tokens: a longer sinusoidal table (no weights change)."""
    embed = summarizer.model.src_embed
    embed.register_buffer("table", sinusoidal_positions(positions, embed.table.shape[1]), persistent=False)
    embed.max_positions = positions
    summarizer.model_source_limit = positions - 1


def compare(limit: int, rows: list[dict[str, str]]) -> dict[str, object]:
    chunked = Summarizer(MODEL, device="cpu")
    truncating = Summarizer(MODEL, device="cpu", split=False)
    long_rows = [row for row in rows if chunked.count_subwords(row["dialogue"]) > limit]
    documents, references = [row["dialogue"] for row in long_rows], [row["summary"] for row in long_rows]
    outputs = {"truncate": truncating.translate(documents, max_source_len=limit),
               "chunks": chunked.translate(documents, max_source_len=limit)}
    extend_source_positions(truncating, WHOLE_LIMIT + 1)
    outputs["whole"] = truncating.translate(documents, max_source_len=WHOLE_LIMIT)
    words = {name: sum(len(o.split()) for o in out) / len(out) for name, out in outputs.items()}
    return {"limit": limit, "documents": len(long_rows),
            "reference_words": sum(len(r.split()) for r in references) / len(references),
            "rouge": {name: rouge(out, references) for name, out in outputs.items()}, "summary_words": words}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, action="append", help="source limits to test (default: 511 and 256)")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [json.loads(line) for line in gzip.open(DEV, "rt", encoding="utf-8")]
    results = [compare(limit, rows) for limit in args.limit or [511, 256]]
    for result in results:
        print(f"limit {result['limit']}: {result['documents']} dialogues over it; reference summaries "
              f"{result['reference_words']:.1f} words")
        for name, scores in result["rouge"].items():  # type: ignore[attr-defined]
            print(f"  {name:9s} " + " ".join(f"{k} {v:5.2f}" for k, v in scores.items())
                  + f"  ({result['summary_words'][name]:.1f} words)")  # type: ignore[index]
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
