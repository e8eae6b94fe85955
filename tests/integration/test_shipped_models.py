"""The models shipped in models/ load offline and produce sane output (content checks, not
fixed strings)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from convtrans.cli import app
from convtrans.inference.segment import plan_line
from convtrans.inference.translator import Translator
from convtrans.zoo import default_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def translator() -> Translator:
    return Translator(default_model("translate"), device="cpu")


@pytest.fixture(scope="module")
def whole_line_translator() -> Translator:
    """--no-split: one source per line, truncated to the limit."""
    return Translator(default_model("translate"), device="cpu", split=False)


@pytest.fixture(scope="module")
def summarizer() -> Translator:
    return Translator(default_model("summarize"), device="cpu")

# German caption -> English words a correct translation must contain (any one of them)
PROBES = [
    ("Ein Mann fährt Fahrrad.", {"man"}, {"bike", "bicycle", "cycling", "riding"}),
    ("Zwei Hunde spielen im Schnee.", {"dogs"}, {"snow"}),
    ("Eine Frau sitzt auf einer Bank.", {"woman", "lady"}, {"bench"}),
    ("Kinder spielen am Strand.", {"children", "kids"}, {"beach"}),
    ("Ein Mädchen in einem roten Kleid läuft über die Straße.", {"girl"}, {"red"}),
]


def test_default_translator_gives_sane_english(translator: Translator) -> None:
    outputs = [r.text for r in translator.translate_batch([p[0] for p in PROBES])]
    hits = 0
    for (source, first, second), output in zip(PROBES, outputs):
        words = {w.strip(".,!?").lower() for w in output.split()}
        assert output and output.isascii() and len(words) >= 3, (source, output)
        hits += bool(words & first) and bool(words & second)
    assert hits >= 4, outputs


# English dialogue -> words a summary of it must contain (any one of each set)
DIALOGUES = [
    ("#Person1#: Good evening, Luigi's restaurant. How can I help you?\n#Person2#: Hello, I'd like to book a table "
     "for four people for tomorrow night.\n#Person1#: Certainly. What time would you like?\n#Person2#: At seven "
     "o'clock, please.\n#Person1#: I'm sorry, we are fully booked at seven. Would eight o'clock be all right?\n"
     "#Person2#: Yes, eight is fine. The name is Johnson.\n#Person1#: Thank you, Mr. Johnson. A table for four at "
     "eight tomorrow. See you then.", [{"table", "book", "books", "booking", "reserve", "reservation"}]),
    ("#Person1#: What seems to be the problem?\n#Person2#: I have a terrible headache and a fever. I've been coughing "
     "all night.\n#Person1#: Let me take your temperature. It's 39 degrees. I think you have the flu.\n#Person2#: "
     "What should I do, doctor?\n#Person1#: Stay in bed, drink lots of water and take this medicine three times a "
     "day.\n#Person2#: Thank you, doctor.", [{"fever", "flu", "headache", "sick", "ill", "cold", "medicine", "doctor"}]),
    ("#Person1#: Excuse me, how much is this red sweater?\n#Person2#: It's 50 dollars, but it's on sale today for "
     "35.\n#Person1#: Do you have it in a larger size?\n#Person2#: Yes, here is a large one. Would you like to try "
     "it on?\n#Person1#: Yes, please. It fits well. I'll take it.\n#Person2#: Will you pay in cash or by credit "
     "card?\n#Person1#: By credit card.", [{"sweater"}]),
    ("#Person1#: Hi Tom, are you free this Saturday?\n#Person2#: Yes, why?\n#Person1#: We're having a birthday "
     "party for Mary. Would you like to come?\n#Person2#: I'd love to. What time does it start?\n#Person1#: At six "
     "in the evening, at my house.\n#Person2#: Great. Should I bring anything?\n#Person1#: Just bring yourself.",
     [{"party", "birthday"}]),
]


def test_default_summarizer_reads_its_input(summarizer: Translator) -> None:
    """Each summary names what its dialogue is about; a summarizer that ignores its input writes
    the same generic summary for all of them."""
    outputs = [r.text for r in summarizer.translate_batch([d for d, _ in DIALOGUES])]
    assert len(set(outputs)) == len(outputs), outputs
    hits = 0
    for (_, needed), output in zip(DIALOGUES, outputs):
        words = {w.strip(".,!?'").lower() for w in output.replace("'s", " ").split()}
        assert output.isascii() and 4 <= len(output.split()) <= 60, output
        hits += all(words & group for group in needed)
    assert hits >= 3, outputs


def test_main_job_command_works_offline() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "no_proxy": "*", "http_proxy": "http://0.0.0.0:9", "https_proxy": "http://0.0.0.0:9"}
    result = subprocess.run([sys.executable, "-m", "convtrans", "translate"], input="Ein Mann fährt Fahrrad.\n",
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "man" in result.stdout.lower() and result.stdout.count("\n") == 1


PARAGRAPH = ["Ein Mann fährt Fahrrad.", "Eine Frau liest ein Buch im Park.", "Zwei Kinder spielen am Strand."]
PARAGRAPH_WORDS = [{"bicycle", "bike"}, {"book"}, {"beach"}]


def _words(text: str) -> set[str]:
    return {w.strip(".,!?;:").lower() for w in text.split()}


def test_a_paragraph_on_one_line_translates_every_sentence(translator: Translator,
                                                           whole_line_translator: Translator) -> None:
    """The issue's example: three sentences on one line give three translations, each the one the
    sentence gets alone, joined with the line's spacing; --no-split gives the old garbled line."""
    alone = translator.translate(PARAGRAPH)
    assert all(_words(out) & words for out, words in zip(alone, PARAGRAPH_WORDS)), alone
    line = " ".join(PARAGRAPH)
    assert translator.translate([line]) == [" ".join(alone)]
    whole = whole_line_translator.translate([line])[0]
    assert whole != " ".join(alone)  # one source: the model writes one (garbled) sentence


def test_a_sentence_over_the_limit_loses_no_clause(translator: Translator, whole_line_translator: Translator) -> None:
    """Over the limit (12 subwords here), a sentence is cut at its commas and every clause is
    translated; without splitting the tail is dropped."""
    line = "Ein Mann fährt Fahrrad, eine Frau liest ein Buch im Park, zwei Kinder spielen am Strand."
    assert translator.count_subwords(line) > 12
    result = translator.translate_batch([line], translator.search_config(max_source_len=12))[0]
    assert result.pieces == 3 and all(_words(result.text) & words for words in PARAGRAPH_WORDS), result.text
    assert "beach" not in _words(whole_line_translator.translate([line], max_source_len=12)[0])


def test_cli_keeps_lines_blank_lines_and_edge_whitespace(whole_line_translator: Translator) -> None:
    text = f"{' '.join(PARAGRAPH)}\n\n  {PARAGRAPH[0]}  \n{PARAGRAPH[2]}\n"
    result = CliRunner().invoke(app, ["translate"], input=text)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.split("\n")
    assert len(lines) == 5 and lines[1] == "" and lines[4] == ""  # 4 lines in, 4 out (+ the final newline)
    assert all(_words(lines[0]) & words for words in PARAGRAPH_WORDS), lines[0]
    assert lines[2].startswith("  ") and lines[2].endswith("  ") and not lines[2].startswith("   ")
    assert lines[2].strip() == whole_line_translator.translate([PARAGRAPH[0]])[0]


def test_a_document_over_the_limit_is_summarized_in_chunks(summarizer: Translator) -> None:
    """Two dialogues one after the other, with the limit set under their joint length: summarized
    in chunks (each chunk's summary, joined), so the second topic is not lost; --no-split keeps
    only what fits and says so."""
    (restaurant, _), (doctor, _) = DIALOGUES[0], DIALOGUES[1]
    document = f"{restaurant}\n{doctor}"
    assert summarizer.count_subwords(restaurant) <= 160 < summarizer.count_subwords(document)
    result = summarizer.translate_batch([document], summarizer.search_config(max_source_len=160))[0]
    plan = plan_line(document, "en", summarizer.count_subwords, 160, mode="chunks")
    assert result.pieces == len(plan.pieces) >= 2
    assert result.text == " ".join(summarizer.translate(plan.pieces, max_source_len=160))
    assert _words(result.text) & {"doctor", "flu", "fever", "headache", "sick", "medicine"}, result.text
    cut: list[tuple[int, int, int]] = []
    truncating = Translator(default_model("summarize"), device="cpu", max_source_len=160, split=False,
                            on_truncate=lambda *report: cut.append(report))
    assert truncating.translate([document])[0] != result.text and cut and cut[0][2] == 160
