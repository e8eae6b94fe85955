"""Imported models' vocabularies and BPE: ids numbered as fairseq and Marian number them, bad files
refused in one line naming the file and line (data/vocab.py, data/bpe.py, data/pipelines.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from convtrans.data.bpe import SubwordNmt, load_splitter
from convtrans.data.pipelines import FairseqPipeline
from convtrans.data.vocab import read_fairseq_dictionary, read_marian_vocab
from convtrans.errors import UserError


def test_fairseq_dictionary_puts_the_specials_first_and_keeps_file_order(tmp_path: Path) -> None:
    path = tmp_path / "dict.de.txt"
    path.write_text("der 100\nMann 50\nM@@ 7\n<s> 3 #fairseq:overwrite\nmadeupword0000 0\n", encoding="utf-8")
    vocab = read_fairseq_dictionary(path)
    assert vocab.symbols[:4] == ["<s>", "<pad>", "</s>", "<unk>"]
    assert vocab.symbols[4:7] == ["der", "Mann", "M@@"]
    assert len(vocab) == 9
    assert vocab.ids(["der", "Mann", "Haus"]) == [4, 5, 3]
    assert vocab.index["<s>"] == 7  # an overwritten symbol encodes to its new id, as in fairseq


@pytest.mark.parametrize("text, message", [
    ("der 100\nder 3\n", r"dict.de.txt:2: 'der' appears twice"),
    ("der 100\nkaputt\n", r"dict.de.txt:2: not a fairseq dictionary line"),
    ("der viele\n", r"dict.de.txt:1: not a fairseq dictionary line"),
])
def test_bad_fairseq_dictionaries_are_refused_with_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "dict.de.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserError, match=message):
        read_fairseq_dictionary(path)
    with pytest.raises(UserError, match="fairseq dictionary not found"):
        read_fairseq_dictionary(tmp_path / "dict.xx.txt")


def test_marian_vocab_must_number_0_to_n_once(tmp_path: Path) -> None:
    good = tmp_path / "vocab.json"
    good.write_text(json.dumps({"</s>": 0, "<unk>": 1, "▁Hallo": 2, "<pad>": 3}), encoding="utf-8")
    vocab = read_marian_vocab(good)
    assert vocab.symbols == ["</s>", "<unk>", "▁Hallo", "<pad>"] and vocab.ids(["▁Hallo", "x"]) == [2, 1]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"</s>": 0, "<unk>": 1, "a": 1}), encoding="utf-8")
    with pytest.raises(UserError, match="each once"):
        read_marian_vocab(bad)
    bad.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(UserError, match="JSON object of piece"):
        read_marian_vocab(bad)


def _codes(tmp_path: Path) -> Path:
    path = tmp_path / "bpecodes"
    path.write_text("#version: 0.2\ne r</w>\nd er</w>\nM a\nMa n\nMan n</w>\n", encoding="utf-8")
    return path


def test_subword_nmt_and_fastbpe_codes_split_alike(tmp_path: Path) -> None:
    subword = load_splitter("subword_nmt", _codes(tmp_path))
    assert subword.encode("der Mann läuft") == "der Mann l@@ ä@@ u@@ f@@ t"
    assert subword.decode("der Mann l@@ ä@@ u@@ f@@ t") == "der Mann läuft"
    fast = tmp_path / "fastbpe.codes"
    fast.write_text("e r</w> 10\nd er</w> 9\nM a 8\nMa n 7\nMan n</w> 6\n", encoding="utf-8")
    assert load_splitter("fastbpe", fast).encode("der Mann läuft") == subword.encode("der Mann läuft")


def test_bad_codes_are_refused_before_subword_nmt_would_exit(tmp_path: Path) -> None:
    path = tmp_path / "bpecodes"
    path.write_text("#version: 0.2\ne r\nthree fields here\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"bpecodes:3: not a line of subword-nmt codes"):
        SubwordNmt.from_subword_nmt(path)
    with pytest.raises(UserError, match=r"bpecodes:2: not a line of fastBPE codes"):
        SubwordNmt.from_fastbpe(path)
    with pytest.raises(UserError, match="unknown BPE"):
        load_splitter("wordpiece", path)


def test_fairseq_pipeline_tokenizes_escapes_splits_and_restores(tmp_path: Path) -> None:
    """fairseq's hub pipeline: Moses with escaping and dash splits, BPE, dictionary; back again."""
    dictionary = tmp_path / "dict.en.txt"
    tokens = ["der", "Mann", "l@@", "ä@@", "u@@", "f@@", "t", "&quot;", "@-@", "Mann-"]
    dictionary.write_text("".join(f"{t} 1\n" for t in tokens), encoding="utf-8")
    vocab = read_fairseq_dictionary(dictionary)
    assert FairseqPipeline(vocab, "de", "moses").prepare('der "Mann-Mann"') == "der &quot; Mann @-@ Mann &quot;"
    pipeline = FairseqPipeline(vocab, "de", "moses", load_splitter("subword_nmt", _codes(tmp_path)))
    ids = pipeline.encode(["der Mann läuft"])[0]
    assert ids == [4, 5, 6, 7, 8, 9, 10]
    assert pipeline.decode(ids + [2]) == "der Mann läuft"  # EOS dropped
    assert pipeline.decode([4, 3, 2]) == "der <unk>"


def test_fastbpe_codes_split_as_fastbpe_itself_does() -> None:
    """300 Moses-tokenized sentences segmented by fastBPE (tests/fixtures/imports/fastbpe, written
    by make_fastbpe_fixture.py) come out the same from subword-nmt on the same codes."""
    folder = Path(__file__).resolve().parents[1] / "fixtures" / "imports" / "fastbpe"
    reference = json.loads((folder / "reference.json").read_text(encoding="utf-8"))
    splitter = load_splitter("fastbpe", folder / "codes")
    assert [splitter.encode(line) for line in reference["lines"]] == reference["fastbpe"]
