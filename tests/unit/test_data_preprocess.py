import json
from dataclasses import replace
from pathlib import Path

import pytest

from convtrans.data.binarize import TokenArray
from convtrans.data.preprocess import PreprocessOptions, preprocess
from convtrans.data.tokenize import SubwordTokenizer
from convtrans.errors import UserError
from tests.conftest import make_pairs, write_split


def _opts(raw: Path, **kw) -> PreprocessOptions:
    base = dict(source_lang="de", target_lang="en", trainpref=str(raw / "train"), validpref=(str(raw / "valid"),),
                testpref=(str(raw / "test"),), vocab_size=64)
    return PreprocessOptions(**{**base, **kw})


def test_writes_token_arrays_that_decode_to_the_input(corpus: Path, tmp_path: Path) -> None:
    dest = tmp_path / "bin"
    reports = preprocess(_opts(corpus), dest)
    assert [r.name for r in reports] == ["train", "valid", "test"]
    manifest = json.loads((dest / "manifest.json").read_text())
    tok = SubwordTokenizer(dest / manifest["tokenizers"]["de"]["model"])
    assert manifest["tokenizers"]["en"]["model"] == "spm.model"  # joint by default
    for split, n, seed in (("train", 400, 1), ("valid", 40, 2), ("test", 30, 3)):
        pairs = make_pairs(n, seed=seed)
        src, tgt = TokenArray(dest / f"{split}.de"), TokenArray(dest / f"{split}.en")
        assert len(src) == len(tgt) == n == manifest["splits"][split]["pairs"]
        assert [tok.decode(src[i].tolist()) for i in range(n)] == [p[0] for p in pairs]
        assert [tok.decode(tgt[i].tolist()) for i in range(n)] == [p[1] for p in pairs]
        stats = manifest["splits"][split]["sides"]["en"]
        assert stats["tokens"] == tgt.num_tokens and stats["max"] == tgt.lengths().max()
    assert manifest["splits"]["train"]["inputs"]["de"]["path"].endswith("train.de.gz")
    assert len(manifest["splits"]["train"]["inputs"]["de"]["sha256"]) == 64
    assert (dest / "spm.vocab").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_is_deterministic_byte_for_byte(corpus: Path, tmp_path: Path) -> None:
    preprocess(_opts(corpus, moses=True), tmp_path / "a")
    preprocess(_opts(corpus, moses=True), tmp_path / "b", threads=2)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_filters_only_train_by_length_and_ratio(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    pairs = make_pairs(300, seed=7, max_len=20)
    pairs[5] = ("Mann.", "The man runs on the street in the park with a big red ball.")  # extreme ratio
    pairs[6] = ("", "Empty source.")
    write_split(raw / "train", pairs)
    write_split(raw / "valid", pairs[:50])
    opts = _opts(raw, testpref=(), max_len=40, max_len_ratio=2.5)
    reports = {r.name: r for r in preprocess(opts, tmp_path / "bin")}
    tok = SubwordTokenizer(tmp_path / "bin" / "spm.model")
    lens = [(len(s), len(t)) for s, t in zip(tok.encode([p[0] for p in pairs]), tok.encode([p[1] for p in pairs]))]
    empty = sum(1 for s, t in lens if min(s, t) == 0)
    too_long = sum(1 for s, t in lens if min(s, t) > 0 and max(s, t) > 40)
    ratio = sum(1 for s, t in lens if 0 < min(s, t) and max(s, t) <= 40 and max(s, t) / min(s, t) > 2.5)
    assert empty == 1 and too_long > 0 and ratio > 0
    assert reports["train"].dropped == {"empty": empty, "max_len": too_long, "ratio": ratio}
    assert reports["train"].pairs_out == 300 - empty - too_long - ratio
    assert len(TokenArray(tmp_path / "bin" / "train.de")) == reports["train"].pairs_out
    assert reports["valid"].pairs_out == 50 and sum(reports["valid"].dropped.values()) == 0


def test_separate_vocab_and_reusing_models(corpus: Path, tmp_path: Path) -> None:
    preprocess(_opts(corpus, separate_vocab=True), tmp_path / "sep")
    manifest = json.loads((tmp_path / "sep" / "manifest.json").read_text())
    assert manifest["tokenizers"]["de"]["model"] == "spm.de.model"
    assert manifest["tokenizers"]["en"]["model"] == "spm.en.model"
    reused = _opts(corpus, trainpref=None, spm_models=(str(tmp_path / "sep" / "spm.de.model"),
                                                        str(tmp_path / "sep" / "spm.en.model")))
    preprocess(reused, tmp_path / "reuse")
    for name in ("test.de.bin", "test.en.bin", "valid.en.idx", "spm.de.model", "spm.en.model"):
        assert (tmp_path / "sep" / name).read_bytes() == (tmp_path / "reuse" / name).read_bytes()
    assert not (tmp_path / "reuse" / "train.de.bin").exists()


def test_jsonl_summarization_input(jsonl_corpus: Path, tmp_path: Path) -> None:
    opts = PreprocessOptions(source_lang="src", target_lang="tgt", trainpref=str(jsonl_corpus / "train"),
                             validpref=(str(jsonl_corpus / "dev"),), jsonl_fields=("dialogue", "summary"), vocab_size=80)
    preprocess(opts, tmp_path / "bin")
    manifest = json.loads((tmp_path / "bin" / "manifest.json").read_text())
    assert manifest["task"] == "summarization"
    assert manifest["splits"]["valid"]["pairs"] == 20
    tok = SubwordTokenizer(tmp_path / "bin" / "spm.model")
    first = make_pairs(20, seed=5)[0]
    assert tok.decode(TokenArray(tmp_path / "bin" / "valid.src")[0].tolist()) == f"#Person1#: {first[0]} #Person2#: {first[1]}"


def test_refuses_to_replace_different_data_without_force(corpus: Path, tmp_path: Path) -> None:
    dest = tmp_path / "bin"
    preprocess(_opts(corpus), dest)
    before = (dest / "train.de.bin").read_bytes()
    preprocess(_opts(corpus), dest)  # same inputs and options: allowed, same bytes
    assert (dest / "train.de.bin").read_bytes() == before
    with pytest.raises(UserError, match="already holds different data; use --force"):
        preprocess(_opts(corpus, vocab_size=50), dest)
    assert (dest / "train.de.bin").read_bytes() == before  # untouched
    preprocess(_opts(corpus, vocab_size=50), dest, force=True)
    assert json.loads((dest / "manifest.json").read_text())["options"]["vocab_size"] == 50
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(UserError, match="not a convtrans data directory"):
        preprocess(_opts(corpus), foreign, force=True)
    assert (foreign / "thesis.tex").read_text() == "precious"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda raw: (raw / "valid.en").write_text("one line\n"), "line counts differ: .*valid.de has 40 lines, .*valid.en has 1"),
        (lambda raw: (raw / "test.de").unlink(), r"file not found: .*test\.de \(nor .*test\.de\.gz\)"),
        (lambda raw: (raw / "test.de").write_bytes(b"fine\n\xc3\x28\n"), r"test\.de:2: invalid UTF-8"),
        (lambda raw: [(raw / f"test.{l}").write_text("") for l in ("de", "en")], r"empty corpus: .*test\.de has no lines"),
    ],
    ids=["mismatch", "missing", "utf8", "empty"],
)
def test_bad_input_fails_cleanly_and_leaves_nothing(corpus: Path, tmp_path: Path, mutate, message: str) -> None:
    mutate(corpus)
    with pytest.raises(UserError, match=message):
        preprocess(_opts(corpus), tmp_path / "bin")
    assert not (tmp_path / "bin").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bin")]


def test_option_validation() -> None:
    for kw, message in [
        (dict(model_type="word"), "--model-type must be one of"),
        (dict(target_lang="de"), "must differ"),
        (dict(trainpref=None), "--trainpref is required"),
        (dict(max_len=0), "--max-len must be positive"),
        (dict(pretext="lead"), "--pretext must be one of"),
    ]:
        with pytest.raises(UserError, match=message):
            replace(_opts(Path("raw")), **kw).validate()
