"""Which sentence splitter `translate` uses: accuracy and speed of the candidates on real text.

    pip install sentencex pysbd blingfire syntok sentence-splitter
    python benchmarks/sentence_split.py [--json-out split.json]

Test lines are built from text whose sentence boundaries are known: consecutive sentences of one
newstest2014 document (German and English news, with abbreviations, ordinals, dates, quotes and
numbers inside sentences) and of Multi30k test_2016_flickr (German captions, what the shipped
translator knows), joined by one space, 2-4 sentences per line. A splitter gets a line right when
it returns exactly the gold sentences. Reported per language: lines right, boundary precision and
recall, and lines per second (median of 5 timed passes over all lines, one thread).
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FINAL = re.compile(r"[.!?][\"'“”»«)]*$")


def newstest_documents(language: str) -> list[list[str]]:
    """The sentences of each newstest2014 document (de-en source side for de, the reference for en)."""
    kind = "src" if language == "de" else "ref"
    path = DATA / "wmt14_en_de" / "sgm" / f"newstest2014-deen-{kind}.{language}.sgm.gz"
    documents: list[list[str]] = []
    for line in gzip.open(path, "rt", encoding="utf-8"):
        if line.startswith("<doc"):
            documents.append([])
        match = re.match(r"\s*<seg[^>]*>(.*)</seg>", line)
        if match and documents:
            documents[-1].append(match.group(1).strip())
    return documents


def caption_documents() -> list[list[str]]:
    lines = [line.strip() for line in gzip.open(DATA / "multi30k" / "test_2016_flickr.de.gz", "rt", encoding="utf-8")]
    return [lines[i : i + 4] for i in range(0, len(lines), 4)]


def build_lines(documents: list[list[str]], count: int, seed: int) -> list[list[str]]:
    """`count` groups of 2-4 consecutive sentences, each a full sentence (final punctuation, and
    no unescaped markup), from random documents."""
    rng = random.Random(seed)
    groups: list[list[str]] = []
    while len(groups) < count:
        doc = rng.choice(documents)
        size = rng.randint(2, 4)
        if len(doc) < size:
            continue
        start = rng.randrange(len(doc) - size + 1)
        group = [s.replace("&quot;", '"').replace("&amp;", "&") for s in doc[start : start + size]]
        if all(FINAL.search(s) and "&" not in s for s in group):
            groups.append(group)
    return groups


def splitters(language: str) -> dict[str, Callable[[str], list[str]]]:
    import blingfire
    import pysbd
    import sentence_splitter
    import sentencex
    from syntok import segmenter

    pysbd_segmenter = pysbd.Segmenter(language=language, clean=False)
    moses = sentence_splitter.SentenceSplitter(language=language)

    def syntok_split(text: str) -> list[str]:
        return ["".join(t.spacing + t.value for t in sentence).strip()
                for paragraph in segmenter.process(text) for sentence in paragraph]

    return {
        "sentencex": lambda text: [s.strip() for s in sentencex.segment(language, text) if s.strip()],
        "pysbd": lambda text: [s.strip() for s in pysbd_segmenter.segment(text) if s.strip()],
        "blingfire": lambda text: [s for s in blingfire.text_to_sentences(text).split("\n") if s],
        "syntok": syntok_split,
        "sentence-splitter (Moses)": lambda text: [s for s in moses.split(text) if s],
    }


def boundaries(sentences: list[str]) -> set[int]:
    """Character offsets (spaces removed) where a sentence ends inside the line."""
    ends, position = set(), 0
    for sentence in sentences[:-1]:
        position += len(sentence.replace(" ", ""))
        ends.add(position)
    return ends


def evaluate(split: Callable[[str], list[str]], groups: list[list[str]]) -> dict[str, float]:
    lines = [" ".join(group) for group in groups]
    right = tp = fp = fn = 0
    for line, gold in zip(lines, groups):
        predicted = split(line)
        right += predicted == gold
        p, g = boundaries(predicted), boundaries(gold)
        tp, fp, fn = tp + len(p & g), fp + len(p - g), fn + len(g - p)
    times = []
    for _ in range(5):
        started = time.perf_counter()
        for line in lines:
            split(line)
        times.append(time.perf_counter() - started)
    return {"lines_right": right / len(lines), "precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1),
            "lines_per_s": len(lines) / statistics.median(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=300, help="lines per test set")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    sets = {"de news": ("de", build_lines(newstest_documents("de"), args.lines, seed=1)),
            "de captions": ("de", build_lines(caption_documents(), args.lines // 3, seed=2)),
            "en news": ("en", build_lines(newstest_documents("en"), args.lines, seed=3))}
    results: dict[str, dict[str, dict[str, float]]] = {}
    for set_name, (language, groups) in sets.items():
        results[set_name] = {}
        for name, split in splitters(language).items():
            results[set_name][name] = evaluate(split, groups)
    print(f"{'set':12s} {'splitter':28s} {'lines right':>11s} {'precision':>9s} {'recall':>7s} {'lines/s':>9s}")
    for set_name, by_splitter in results.items():
        for name, r in by_splitter.items():
            print(f"{set_name:12s} {name:28s} {r['lines_right']:11.3f} {r['precision']:9.3f} {r['recall']:7.3f} "
                  f"{r['lines_per_s']:9.0f}")
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
