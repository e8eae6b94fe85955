"""Warm-up (pretext) targets: principal units, windows, and the preprocess option that uses them."""

import json
from pathlib import Path

from convtrans.data.binarize import TokenArray
from convtrans.data.preprocess import PreprocessOptions, preprocess
from convtrans.data.pretext import pretext_pairs, principal, units, windows
from convtrans.data.tokenize import SubwordTokenizer

DIALOGUE = "\n".join([
    "#Person1#: Hello.",
    "#Person2#: I would like to book a table for dinner tonight at your restaurant.",
    "#Person1#: Certainly. For how many people is the table?",
    "#Person2#: A table for four people, at seven, for dinner.",
    "#Person1#: Fine.",
])


def test_units_are_lines_or_sentences_of_a_one_line_document() -> None:
    assert units(DIALOGUE)[1].startswith("#Person2#: I would like")
    assert len(units(DIALOGUE)) == 5
    assert units("First one. Second one?  Third!") == ["First one.", "Second one?", "Third!"]
    assert units(" \n ") == []


def test_principal_units_overlap_most_with_the_rest_and_keep_document_order() -> None:
    parts = units(DIALOGUE)
    # the two booking turns share "table", "for", "dinner" with the rest; "Hello." and "Fine." are too short
    assert principal(parts, count=2) == f"{parts[1]} {parts[3]}"
    assert principal(parts, count=1) == parts[3]  # the highest F1 alone
    assert principal(parts, count=2, max_words=5) == " ".join(parts[1].split()[:5])
    assert principal(["#Person1#: Hi."], count=1) == "#Person1#: Hi."  # a lone short unit is still copied


def test_windows_double_in_size_and_never_overlap() -> None:
    parts = [f"u{i}" for i in range(12)]
    assert windows(parts) == [["u0", "u1"], ["u2", "u3", "u4", "u5"]]  # 8 more would run past the end
    assert windows(parts[:2]) == []  # a window as long as the document is the document


def test_pretext_pairs_copy_from_their_own_source() -> None:
    pairs = pretext_pairs(DIALOGUE)
    parts = units(DIALOGUE)
    assert pairs[:5] == [(part, part) for part in parts]  # every unit copied alone
    assert [source.count("\n") + 1 for source, _ in pairs[5:]] == [2, 5]  # a 2-unit window, then all
    assert pairs[-1] == ("\n".join(parts), principal(parts, count=2))
    for source, target in pairs:
        for unit in target.split(" #"):
            assert unit.lstrip("#") in source  # every target unit is copied from its source
    assert pretext_pairs("   ") == []
    assert pretext_pairs("#Person1#: Hi there, how are you?") == [("#Person1#: Hi there, how are you?",) * 2]


def test_preprocess_pretext_replaces_pairs_by_warm_up_pairs(jsonl_corpus: Path, tmp_path: Path) -> None:
    opts = PreprocessOptions(source_lang="src", target_lang="tgt", trainpref=str(jsonl_corpus / "train"),
                             validpref=(str(jsonl_corpus / "dev"),), jsonl_fields=("dialogue", "summary"),
                             vocab_size=80, pretext="principal")
    preprocess(opts, tmp_path / "bin")
    manifest = json.loads((tmp_path / "bin" / "manifest.json").read_text())
    dialogues = [json.loads(line)["dialogue"] for line in (jsonl_corpus / "dev.jsonl").read_text().splitlines()]
    expected = [pair for d in dialogues for pair in pretext_pairs(d)]
    assert manifest["splits"]["valid"]["pairs"] == len(expected) == 60  # two turns alone and the whole of each
    tok = SubwordTokenizer(tmp_path / "bin" / "spm.model")
    src, tgt = TokenArray(tmp_path / "bin" / "valid.src"), TokenArray(tmp_path / "bin" / "valid.tgt")
    for i, (source, target) in enumerate(expected):
        assert tok.decode(src[i].tolist()) == " ".join(source.split())
        assert tok.decode(tgt[i].tolist()) == target
