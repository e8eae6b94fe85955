"""Translator / Summarizer / load: the Python API the CLI runs on (the session's tiny model)."""

from __future__ import annotations

from pathlib import Path

import pytest

import convtrans
from convtrans.config import GenerateConfig
from convtrans.errors import UserError
from convtrans.inference.translator import Summarizer, Translator
from tests.conftest import make_pairs

LINES = [de for de, _ in make_pairs(9, seed=11)]


@pytest.fixture(scope="module")
def translator(model_dir: Path) -> Translator:
    """The exact path: its results never depend on batching (int8's may, within the bounds of
    tests/unit/test_int8.py), which is what these tests pin down."""
    return Translator(model_dir, device="cpu", precision="fp32")


def test_the_package_exports_the_api_lazily() -> None:
    assert convtrans.Translator is Translator and convtrans.Summarizer is Summarizer
    assert set(convtrans.__all__) >= {"Translator", "Summarizer", "load", "ModelConfig", "GenerateConfig"}
    with pytest.raises(AttributeError):
        convtrans.NoSuchThing  # noqa: B018 - the attribute access is the test


def test_translate_returns_one_text_per_line_in_order(translator: Translator) -> None:
    lines = [LINES[0], "", "   ", *LINES[1:4]]
    texts = translator.translate(lines)
    results = translator.translate_batch(lines)
    assert texts == [r.text for r in results] and len(texts) == len(lines)
    assert texts[1] == texts[2] == "" and all(texts[i] for i in (0, 3, 4, 5))
    assert texts == [translator.translate([line])[0] for line in lines]  # batching never changes a result


def test_batches_sized_by_tokens_give_the_same_results(model_dir: Path, translator: Translator) -> None:
    one_at_a_time = Translator(model_dir, device="cpu", batch_tokens=1, precision="fp32")
    assert one_at_a_time.translate(LINES) == translator.translate(LINES)


def test_search_options_as_keywords(model_dir: Path, translator: Translator) -> None:
    greedy = Translator(model_dir, device="cpu", beam=1, precision="fp32")
    assert greedy.generate_config.beam == 1
    assert greedy.translate(LINES) == translator.translate(LINES, beam=1)
    widened = translator.search_config(n_best=7)
    assert (widened.n_best, widened.beam) == (7, max(7, translator.generate_config.beam))
    results = translator.translate_batch(LINES[:2], widened)
    assert all(len(r.alternatives) == 7 and r.alternatives[0] == (r.text, r.score) for r in results)
    scores = [score for _, score in results[0].alternatives]
    assert scores == sorted(scores, reverse=True)
    with pytest.raises(UserError, match="generate field beam"):
        translator.search_config(beam=0)


def test_translate_iterable_streams_in_windows(translator: Translator) -> None:
    batch = translator.translate_batch(LINES)
    streamed = list(translator.translate_iterable(iter(LINES), window=4))
    assert [r.text for r in streamed] == [r.text for r in batch]
    seen: list[int] = []

    def lines():
        for i, line in enumerate(LINES):
            seen.append(i)
            yield line

    stream = translator.translate_iterable(lines(), window=100, more_waiting=lambda: len(seen) % 3 != 0)
    first = next(stream)
    assert first.text == batch[0].text and seen == [0, 1, 2]  # answered once nothing more was waiting


def test_truncation_is_reported_and_equals_translating_the_cut_source(model_dir: Path) -> None:
    """Without splitting (today's summarizer behaviour, `--no-split`), the tail is dropped."""
    reports: list[tuple[int, int, int]] = []
    translator = Translator(model_dir, device="cpu", on_truncate=lambda *report: reports.append(report), split=False)
    long_line = " ".join([LINES[0]] * 20)
    short = translator.translate_batch([long_line], GenerateConfig(beam=2, max_source_len=12), first_line=7)[0]
    assert reports and reports[0][0] == 7 and reports[0][2] == 12 and reports[0][1] > 12
    source = translator.src_pipeline
    pieces = source.tokenizer.sp.encode(source.text.pre(long_line))[:12]
    cut = source.tokenizer.decode(pieces)
    assert short.text == translator.translate_batch([cut], GenerateConfig(beam=2))[0].text


def test_split_lines_translate_each_sentence_and_keep_the_spacing(translator: Translator) -> None:
    """A line of several sentences gives each sentence's own translation, joined with the line's
    own spacing (and its whitespace at both ends); line count and blank lines are kept."""
    alone = translator.translate(LINES[:3])
    paragraph = f"  {LINES[0]} {LINES[1]}   {LINES[2]}\t"
    results = translator.translate_batch(["", paragraph, "   ", LINES[3]])
    assert [r.blank for r in results] == [True, False, True, False]
    assert results[1].text == f"  {alone[0]} {alone[1]}   {alone[2]}\t" and results[1].pieces == 3
    assert results[3].text == translator.translate([LINES[3]])[0] and results[3].pieces == 1


def test_a_sentence_over_the_limit_is_translated_in_pieces_not_cut(model_dir: Path) -> None:
    """With splitting, nothing is dropped: a sentence over the limit becomes pieces of at most the
    limit (each translated), the cut is reported, and nothing is truncated."""
    cuts: list[tuple[int, int, int]] = []
    truncations: list[tuple[int, int, int]] = []
    translator = Translator(model_dir, device="cpu", on_cut=lambda *r: cuts.append(r),
                            on_truncate=lambda *r: truncations.append(r))
    words = LINES[0].rstrip(".").split()
    long_sentence = ", ".join(" ".join(words) for _ in range(6)) + "."
    config = GenerateConfig(beam=2, max_source_len=12)
    result = translator.translate_batch([long_sentence], config, first_line=4)[0]
    assert not truncations and cuts and cuts[0][0] == 4 and cuts[0][2] == 12 and cuts[0][1] > 12
    plan = translator_plan(translator, long_sentence, 12)
    assert result.pieces == len(plan.pieces) > 1
    assert all(translator.count_subwords(piece) <= 12 for piece in plan.pieces)
    assert result.text == plan.join(translator.translate(plan.pieces, beam=2, max_source_len=12))


def translator_plan(translator: Translator, line: str, limit: int):
    from convtrans.inference.segment import plan_line

    return plan_line(line, translator.source, translator.count_subwords, limit, mode="sentences")


def test_load_picks_the_class_by_task(model_dir: Path) -> None:
    assert type(convtrans.load(model_dir, device="cpu")) is Translator
    assert type(convtrans.load("dynamicconv_dialogsum", device="cpu")) is Summarizer
    with pytest.raises(UserError, match="no model at"):
        convtrans.load("no/such/model")
