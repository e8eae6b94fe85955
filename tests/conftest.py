"""Shared fixtures: small synthetic corpora written to tmp dirs (tests never need ../shared), one
trained tiny model for the whole session, and helpers that drive the real CLI."""

from __future__ import annotations

import gzip
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convtrans.cli import app

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


@pytest.fixture(autouse=True, scope="session")
def engine_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built engines (convtrans/engine) go to one folder of this test session, never to the user's
    cache; set in the environment, so CLI subprocesses use it too."""
    import os

    folder = tmp_path_factory.mktemp("engine-cache")
    before = os.environ.get("CONVTRANS_ENGINE_CACHE")
    os.environ["CONVTRANS_ENGINE_CACHE"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("CONVTRANS_ENGINE_CACHE", None)
    else:
        os.environ["CONVTRANS_ENGINE_CACHE"] = before


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tests run tiny models: one intra-op thread is faster than two (no fork/join per op), and a
    busy machine's oversubscribed cores cannot slow a grouped conv twenty-fold (seen here)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


@pytest.fixture(scope="session")
def raw_corpus(tmp_path_factory) -> Path:
    """train.{de,en} (600 toy pairs) and valid.{de,en} (40), shared by the session."""
    root = tmp_path_factory.mktemp("raw")
    write_split(root / "train", make_pairs(600, seed=1))
    write_split(root / "valid", make_pairs(40, seed=2))
    return root


def preprocess_args(raw: Path, dest: Path, *extra: str) -> list[str]:
    return ["preprocess", "-s", "de", "-t", "en", "--trainpref", str(raw / "train"), "--validpref", str(raw / "valid"),
            "--destdir", str(dest), "--vocab-size", "64", *extra]


@pytest.fixture(scope="session")
def data_dir(raw_corpus: Path, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("data") / "bin"
    result = CliRunner().invoke(app, preprocess_args(raw_corpus, dest))
    assert result.exit_code == 0, result.stderr
    return dest


def train_args(data: Path, run: Path, *extra: str) -> list[str]:
    """`convtrans train` arguments for a tiny DynamicConv on the toy data (cheap, CPU, no BLEU)."""
    return ["train", str(data), "--arch", "tiny_dynamicconv", "--save-dir", str(run), "--device", "cpu",
            "--no-valid-bleu", "--log-interval", "1", "--max-tokens", "512", *extra]


def train_command(data: Path, run: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "convtrans", *train_args(data, run, *extra)]


# The one trained model of the test session: a tiny DynamicConv after TRAINED_UPDATES updates on
# the toy corpus, saved every SAVE_EVERY updates and validated every VALIDATE_EVERY.
TRAINED_UPDATES, SAVE_EVERY, VALIDATE_EVERY = 150, 25, 50


@pytest.fixture(scope="session")
def trained_run(data_dir: Path, tmp_path_factory) -> Path:
    """The session's run directory (tests must not modify it: copy it first)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    result = CliRunner().invoke(app, train_args(data_dir, run, "--max-update", str(TRAINED_UPDATES), "--save-interval-updates",
                                                str(SAVE_EVERY), "--validate-interval-updates", str(VALIDATE_EVERY)))
    assert result.exit_code == 0, result.stderr
    return run


@pytest.fixture(scope="session")
def model_dir(trained_run: Path) -> Path:
    """The session model's last checkpoint; tests must not modify it (copy it: `model_copy`)."""
    return trained_run / "checkpoint_last"


@pytest.fixture
def model_copy(model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny model's checkpoint, for tests that tamper with it."""
    copy = tmp_path / "model"
    shutil.copytree(model_dir.resolve(), copy)
    return copy


def run_cli(*args: str, input: str | bytes | None = None, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """The real `convtrans` in a subprocess (for signals, pipes and exit statuses)."""
    return subprocess.run([sys.executable, "-m", "convtrans", *args], input=input, capture_output=True,
                          timeout=timeout, text=not isinstance(input, bytes), **kwargs)


def one_line_error(stderr: str) -> str:
    """The single `error: ...` line a failing command must print (no traceback)."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


def last_error_line(stderr: str) -> str:
    """For commands that report progress first (train): no traceback, and the last line is the error."""
    lines = [line for line in stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert lines and "Traceback" not in stderr, stderr
    assert lines[-1].startswith("error: "), stderr
    return lines[-1]
