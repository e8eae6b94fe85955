"""Shared fixtures: small synthetic corpora written to tmp dirs (tests never need ../shared)."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

WORDS_DE = "der die das ein eine mann frau hund katze läuft sitzt spielt auf im park straße ball rot blau groß klein".split()
WORDS_EN = "the the the a a man woman dog cat runs sits plays on in park street ball red blue big small".split()
LEXICON = dict(zip(WORDS_DE, WORDS_EN))
SHARED_DATA = next((p for p in (Path(__file__).resolve().parents[2] / "shared" / "data", Path("/work/shared/data")) if p.is_dir()), Path("/nonexistent"))


def make_pairs(n: int, seed: int = 0, min_len: int = 2, max_len: int = 12) -> list[tuple[str, str]]:
    """Sentence pairs over a toy lexicon: the target is the word-by-word translation."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        words = [rng.choice(WORDS_DE) for _ in range(rng.randint(min_len, max_len))]
        pairs.append((" ".join(words).capitalize() + ".", " ".join(LEXICON[w] for w in words).capitalize() + "."))
    return pairs


def write_split(prefix: Path, pairs: list[tuple[str, str]], langs=("de", "en"), gz: bool = False) -> None:
    """Write `prefix.de` / `prefix.en` (optionally gzipped)."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    for side, lang in enumerate(langs):
        text = "".join(pair[side] + "\n" for pair in pairs).encode("utf-8")
        path = Path(f"{prefix}.{lang}" + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(text, mtime=0) if gz else text)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A toy de-en corpus: raw/train (400 pairs, gzipped), raw/valid (40), raw/test (30)."""
    raw = tmp_path / "raw"
    write_split(raw / "train", make_pairs(400, seed=1), gz=True)
    write_split(raw / "valid", make_pairs(40, seed=2))
    write_split(raw / "test", make_pairs(30, seed=3))
    return raw


@pytest.fixture
def jsonl_corpus(tmp_path: Path) -> Path:
    """A toy summarization corpus in JSON lines: raw/train.jsonl.gz and raw/dev.jsonl."""
    raw = tmp_path / "raw"
    raw.mkdir()
    for name, n, seed in (("train", 200, 4), ("dev", 20, 5)):
        records = [
            {"id": i, "dialogue": f"#Person1#: {de}\n#Person2#: {en}", "summary": en}
            for i, (de, en) in enumerate(make_pairs(n, seed=seed))
        ]
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
        path = raw / (f"{name}.jsonl.gz" if name == "train" else f"{name}.jsonl")
        path.write_bytes(gzip.compress(text, mtime=0) if name == "train" else text)
    return raw
