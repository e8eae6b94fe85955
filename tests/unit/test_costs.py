"""Parameter counts and Mult-Adds against figures published for the same architectures."""

import pytest

from convtrans.config import load_preset
from convtrans.costs import measure


def test_transformer_big_matches_fairseqs_parameter_count() -> None:
    # fairseq's transformer_vaswani_wmt_en_de_big with its 32,768-type joint dictionary: 209,911,808
    config = load_preset("transformer_wmt_en_de_big", src_vocab_size=32768, tgt_vocab_size=32768)
    assert measure(config).parameters == 209_911_808


@pytest.mark.parametrize(("width", "budget"), [(200, 90e6), (408, 360e6), (496, 527e6)])
def test_lite_transformer_mult_adds_match_the_paper_budgets(width: int, budget: float) -> None:
    config = load_preset(f"lite_transformer_wmt_en_de_{width}", src_vocab_size=32768, tgt_vocab_size=32768)
    assert measure(config).mult_adds == pytest.approx(budget, rel=0.02)


def test_lite_transformer_small_has_paper_non_embedding_parameters() -> None:
    costs = measure(load_preset("lite_transformer_wmt_en_de_200", src_vocab_size=32768, tgt_vocab_size=32768))
    assert (costs.parameters - costs.embedding_parameters) / 1e6 == pytest.approx(2.9, abs=0.05)  # paper: 2.9M


def test_dynamicconv_big_matches_paper_parameter_count() -> None:
    config = load_preset("dynamicconv_wmt_en_de_big", src_vocab_size=32768, tgt_vocab_size=32768)
    assert measure(config).parameters / 1e6 == pytest.approx(213, abs=0.5)  # paper Table 1: 213M
