"""Lines into the pieces a sentence-level model translates and back (inference/segment.py), with
a word count standing in for the subword count: pieces are sentences, a sentence over the limit
is cut at clauses, then words, then characters, and joining gives the line's layout back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convtrans.inference.segment import LinePlan, cut_to_limit, locate, plan_line, split_sentences


def words(text: str) -> int:
    return len(text.split())


def characters(text: str) -> int:
    return len(text)


def test_sentences_of_a_paragraph_with_abbreviations_and_ordinals() -> None:
    line = "Am 3. Oktober kam Dr. Müller z. B. mit dem Rad. Er blieb zwei Tage! Warum?"
    assert split_sentences(line, "de") == ["Am 3. Oktober kam Dr. Müller z. B. mit dem Rad.", "Er blieb zwei Tage!",
                                           "Warum?"]
    assert split_sentences("   ", "de") == []


def test_plan_keeps_the_spacing_between_and_around_sentences() -> None:
    line = "  Ein Mann fährt Fahrrad.   Eine Frau liest.\t"
    plan = plan_line(line, "de", words, limit=50, mode="sentences")
    assert plan.pieces == ["Ein Mann fährt Fahrrad.", "Eine Frau liest."]
    assert plan.gaps == ["  ", "   ", "\t"] and plan.longest == 0
    assert plan.join(plan.pieces) == line
    assert plan.join(["A.", "B."]) == "  A.   B.\t"
    with pytest.raises(ValueError, match="1 outputs for 2 pieces"):
        plan.join(["A."])


def test_without_split_a_line_is_one_piece() -> None:
    plan = plan_line(" Eins. Zwei. ", "de", words, limit=1, mode="whole")
    assert plan.pieces == ["Eins. Zwei."] and plan.gaps == [" ", " "]


def test_a_long_sentence_is_cut_at_clauses_first() -> None:
    sentence = "eins zwei drei, vier fünf sechs; sieben acht: neun zehn - elf zwölf"
    assert cut_to_limit(sentence, words, 3) == ["eins zwei drei,", "vier fünf sechs;", "sieben acht:",
                                                "neun zehn", "- elf zwölf"]
    # clauses are packed greedily: as many whole clauses per piece as the limit allows
    assert cut_to_limit(sentence, words, 7) == ["eins zwei drei, vier fünf sechs;", "sieben acht: neun zehn - elf zwölf"]
    assert cut_to_limit(sentence, words, 100) == [sentence]


def test_then_between_words_then_characters() -> None:
    assert cut_to_limit("a b c d e, f", words, 2) == ["a b", "c d", "e,", "f"]
    assert cut_to_limit("abcdefgh ij", characters, 3) == ["abc", "def", "gh", "ij"]


def test_a_cut_sentence_is_reported_with_its_length_and_loses_nothing() -> None:
    line = "Kurz. " + ", ".join(["Ein zwei drei"] + ["ein zwei drei"] * 3) + ". Ende."
    plan = plan_line(line, "de", words, limit=4, mode="sentences")
    assert plan.longest == 12 and all(words(p) <= 4 for p in plan.pieces)
    assert plan.join(plan.pieces) == line and plan.pieces[0] == "Kurz." and plan.pieces[-1] == "Ende."


def test_a_piece_the_splitter_changed_makes_the_line_one_piece() -> None:
    assert locate(" a b ", ["a", "x"]) == LinePlan(["a b"], [" ", " "])
    assert locate("a. b.", ["a.", "b."]) == LinePlan(["a.", "b."], ["", " ", ""])


@given(st.lists(st.text(alphabet="abc ,;.-", min_size=1, max_size=30), min_size=1, max_size=5),
       st.integers(min_value=1, max_value=6))
def test_any_line_is_pieces_within_the_limit_that_join_back(parts: list[str], limit: int) -> None:
    line = " ".join(parts)
    if not line.strip():
        return
    plan = plan_line(line, "en", characters, limit, mode="sentences")
    assert plan.join(plan.pieces) == line
    assert all(0 < characters(p) <= limit for p in plan.pieces)


def test_a_document_over_the_limit_becomes_even_chunks_of_whole_sentences() -> None:
    """Eleven 5-word sentences, limit 40: two chunks (the fewest) of 30 and 25 words, not 40 and a
    15-word scrap; a document within the limit stays whole."""
    document = " ".join(f"Satz {i} hat fünf Wörter." for i in range(11))
    plan = plan_line(f" {document}\n", "de", words, limit=40, mode="chunks")
    assert [words(p) for p in plan.pieces] == [30, 25] and plan.longest == 55
    assert plan.gaps == [" ", " ", "\n"] and " ".join(plan.pieces) == document
    assert plan_line(document, "de", words, limit=55, mode="chunks").pieces == [document]


def test_chunks_follow_the_lines_of_a_dialogue() -> None:
    dialogue = "#Person1#: Hallo Tom, wie geht es dir heute\n#Person2#: Gut, danke\n#Person1#: Schön"
    plan = plan_line(dialogue, "de", words, limit=6, mode="chunks")
    assert plan.pieces == ["#Person1#: Hallo Tom,", "wie geht es dir heute", "#Person2#: Gut, danke #Person1#: Schön"]
