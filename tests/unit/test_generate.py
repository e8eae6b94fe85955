"""Generation against references built from teacher-forced forwards: exhaustive search, a
step-by-step argmax loop, one-sentence-at-a-time decoding and single-model decoding. Tiny randomly
initialized models (d=16) give deterministic, non-trivial distributions; nothing is a golden string."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
from torch import nn

from convtrans.config import GenerateConfig, load_preset
from convtrans.inference.generate import Hypothesis, beam_search, generate, greedy_search, repeated_ngram_mask
from convtrans.model import EncoderDecoder

FAMILIES = ["transformer", "lightconv", "dynamicconv", "synthesizer", "lite_transformer"]
PAD, UNK, BOS, EOS = 0, 1, 2, 3
VOCAB = 24


def tiny_model(family: str = "transformer", vocab: int = VOCAB, seed: int = 0, **changes) -> EncoderDecoder:
    config = load_preset(f"tiny_{family}", src_vocab_size=vocab, tgt_vocab_size=vocab)
    small = dict(d_model=16, encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_heads=2, decoder_heads=2,
                 cross_heads=2, synth_max_len=64, synth_factors=(8, 8), synth_rank=4)
    if family == "lite_transformer":
        small.update(lsra_attention_dim=8, lsra_heads=2)
    torch.manual_seed(seed)
    return EncoderDecoder(config.replace(**{**small, **changes})).eval()


class EosBiased(nn.Module):
    """A model with `bias` added to the EOS logit: makes outputs end early (bias > 0) or never."""

    def __init__(self, model: EncoderDecoder, bias: float) -> None:
        super().__init__()
        self.model, self.bias, self.config = model, bias, model.config
        self.train(model.training)

    def encode(self, src):  # noqa: ANN001, ANN201
        return self.model.encode(src)

    def init_cache(self, enc_out, enc_mask):  # noqa: ANN001, ANN201
        return self.model.init_cache(enc_out, enc_mask)

    def decode_step(self, tokens, enc_out, enc_mask, cache=None):  # noqa: ANN001, ANN201
        logits, cache = self.model.decode_step(tokens, enc_out, enc_mask, cache)
        logits = logits.clone()
        logits[..., EOS] += self.bias
        return logits, cache


def sources(lengths: list[int], vocab: int = VOCAB, seed: int = 1) -> torch.Tensor:
    """Right-padded (B, S) sources of the given lengths (EOS included)."""
    gen = torch.Generator().manual_seed(seed)
    src = torch.full((len(lengths), max(lengths)), PAD)
    for row, length in enumerate(lengths):
        src[row, : length - 1] = torch.randint(4, vocab, (length - 1,), generator=gen)
        src[row, length - 1] = EOS
    return src


@torch.no_grad()
def teacher_forced_log_probs(models, src_row: torch.Tensor, outputs: list[list[int]]) -> torch.Tensor:
    """(H,) log-prob of each output (tokens + EOS) for one source row (S,), as an ensemble does:
    log of the mean of the models' softmaxes at every position."""
    longest = max(len(o) for o in outputs) + 1
    tgt_in = torch.full((len(outputs), longest), PAD)
    tgt_out = torch.full((len(outputs), longest), PAD)
    for i, out in enumerate(outputs):
        tgt_in[i, : len(out) + 1] = torch.tensor([BOS, *out])
        tgt_out[i, : len(out) + 1] = torch.tensor([*out, EOS])
    src = src_row[src_row.ne(PAD)].expand(len(outputs), -1)  # (H, S)
    per_model = []
    for model in models:
        enc, mask = model.encode(src)
        per_model.append(model.decode_step(tgt_in, enc, mask)[0].log_softmax(-1))  # (H, T, V)
    lprobs = torch.logsumexp(torch.stack(per_model), 0) - math.log(len(models))
    token_lp = lprobs.gather(2, tgt_out.unsqueeze(2)).squeeze(2)  # (H, T)
    return token_lp.masked_fill(tgt_out.eq(PAD), 0.0).sum(1)


def assert_same(got: list[list[Hypothesis]], want: list[list[Hypothesis]], atol: float = 1e-4) -> None:
    assert [[h.tokens for h in hyps] for hyps in got] == [[h.tokens for h in hyps] for hyps in want]
    for g, w in zip(itertools.chain(*got), itertools.chain(*want)):
        assert g.score == pytest.approx(w.score, abs=atol) and g.log_prob == pytest.approx(w.log_prob, abs=atol)


def check_scores(models, src: torch.Tensor, results: list[list[Hypothesis]], lenpen: float) -> None:
    """Each hypothesis: log_prob = teacher-forced log-prob of tokens + EOS, score = log_prob / len**lenpen."""
    for row, hyps in zip(src, results):
        assert hyps and all(BOS not in h.tokens and EOS not in h.tokens and PAD not in h.tokens for h in hyps)
        forced = teacher_forced_log_probs(models, row, [h.tokens for h in hyps])
        for h, lp in zip(hyps, forced.tolist()):
            assert h.log_prob == pytest.approx(lp, abs=1e-4)
            assert h.score == pytest.approx(h.log_prob / (len(h.tokens) + 1) ** lenpen, rel=1e-6)


# ------------------------------------------------------------------------------------------ beam
@pytest.mark.parametrize("lenpen", [0.0, 1.0])
def test_beam_search_finds_the_exhaustive_best(lenpen: float) -> None:
    """With a beam as wide as every finite candidate of a step (all 3-token prefixes plus all
    2-token endings), beam search is exhaustive: its n-best list must be the top of all sequences
    of up to 3 tokens scored by teacher forcing."""
    vocab, max_len = 9, 3
    model = EosBiased(tiny_model(vocab=vocab, seed=3), 1.5)  # endings at every length compete
    allowed = [t for t in range(vocab) if t not in (PAD, BOS, EOS)]  # UNK + 5 words
    beam = len(allowed) ** max_len + len(allowed) ** (max_len - 1)
    config = GenerateConfig(beam=beam, n_best=5, lenpen=lenpen, min_len=0, max_len_a=0, max_len_b=max_len)
    src = sources([5, 3], vocab=vocab)
    results = beam_search([model], src, config)
    everything = [list(seq) for n in range(max_len + 1) for seq in itertools.product(allowed, repeat=n)]
    for row, hyps in zip(src, results):
        log_probs = teacher_forced_log_probs([model], row, everything)
        scores = torch.tensor([lp / (len(seq) + 1) ** lenpen for seq, lp in zip(everything, log_probs.tolist())])
        best = scores.topk(5).indices.tolist()
        assert [h.tokens for h in hyps] == [everything[i] for i in best]
        assert [h.score for h in hyps] == pytest.approx(scores[best].tolist(), abs=1e-5)
    assert len({len(h.tokens) for hyps in results for h in hyps}) > 1  # not a trivial all-same-length case


@pytest.mark.parametrize("family", FAMILIES)
def test_nbest_is_ordered_distinct_and_scored_by_teacher_forcing(family: str) -> None:
    """Also proves the cache reorder: a wrong reorder makes returned tokens disagree with their log-probs."""
    model = EosBiased(tiny_model(family), 0.5)
    src = sources([6, 9, 3, 7])
    config = GenerateConfig(beam=4, n_best=4, lenpen=1.3, max_len_a=1.0, max_len_b=3)
    results = generate([model], src, config)
    assert [len(hyps) for hyps in results] == [4] * 4
    for hyps in results:
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        assert len({tuple(h.tokens) for h in hyps}) == len(hyps)
    check_scores([model], src, results, lenpen=1.3)


def test_beam_wider_than_the_vocabulary_returns_only_real_hypotheses() -> None:
    """Early steps have fewer candidates than beam slots: the empty slots (-inf) must never finish."""
    vocab = 7  # UNK + 3 words
    model = EosBiased(tiny_model(vocab=vocab, seed=2), 1.0)
    src = sources([4, 6], vocab=vocab)
    results = generate([model], src, GenerateConfig(beam=12, n_best=12, min_len=0, max_len_a=0, max_len_b=4))
    for hyps in results:
        assert len(hyps) == 12 and all(math.isfinite(h.score) for h in hyps)
        assert len({tuple(h.tokens) for h in hyps}) == 12
    check_scores([model], src, results, lenpen=1.0)


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_equals_one_sentence_at_a_time(family: str) -> None:
    model = EosBiased(tiny_model(family), 0.5)
    src = sources([4, 11, 2, 7, 9])
    for config in (GenerateConfig(beam=4, n_best=3, max_len_a=1.0, max_len_b=2),
                   GenerateConfig(beam=1, max_len_a=1.0, max_len_b=2)):
        batched = generate([model], src, config)
        alone = [generate([model], row[row.ne(PAD)].unsqueeze(0), config)[0] for row in src]
        assert_same(batched, alone)


# ---------------------------------------------------------------------------------------- greedy
@pytest.mark.parametrize("family", FAMILIES)
def test_beam_one_equals_greedy(family: str) -> None:
    model = EosBiased(tiny_model(family), 0.5)
    src = sources([5, 8, 3, 10, 6, 4])
    for lenpen in (0.0, 1.0):
        config = GenerateConfig(beam=1, lenpen=lenpen, min_len=2, max_len_a=1.0, max_len_b=2)
        assert_same(beam_search([model], src, config), greedy_search([model], src, config), atol=1e-5)


@torch.no_grad()
def test_greedy_equals_an_argmax_loop_over_full_forwards() -> None:
    model = EosBiased(tiny_model("dynamicconv"), 0.8)
    src = sources([6, 3, 9])
    config = GenerateConfig(beam=1, min_len=2, max_len_a=0.5, max_len_b=4)
    results = generate([model], src, config)
    for row, hyps in zip(src, results):
        row = row[row.ne(PAD)].unsqueeze(0)
        max_len = int(config.max_len_a * (row.shape[1] - 1) + config.max_len_b)
        enc, mask = model.encode(row)
        out, total = [], 0.0
        for step in range(max_len + 1):
            lprobs = model.decode_step(torch.tensor([[BOS, *out]]), enc, mask)[0][0, -1].log_softmax(-1)
            allowed = lprobs.clone()
            allowed[[PAD, BOS]] = -math.inf
            if step < config.min_len:
                allowed[EOS] = -math.inf
            token = EOS if step == max_len else int(allowed.argmax())
            total += float(lprobs[token])
            if token == EOS:
                break
            out.append(token)
        assert len(hyps) == 1 and hyps[0].tokens == out
        assert hyps[0].log_prob == pytest.approx(total, abs=1e-4)


# ---------------------------------------------------------------------------------------- length
@pytest.mark.parametrize("search", ["greedy", "beam", "sampling"])
def test_min_len_blocks_eos(search: str) -> None:
    model = EosBiased(tiny_model("lightconv"), 4.0)  # ends almost at once when allowed
    src = sources([5, 8, 3])
    base = dict(beam=1 if search == "greedy" else 3, sampling=search == "sampling", max_len_b=12)
    free = generate([model], src, GenerateConfig(**base, min_len=0))
    assert min(len(h.tokens) for hyps in free for h in hyps) < 2
    for min_len in (2, 6):
        blocked = generate([model], src, GenerateConfig(**base, min_len=min_len))
        assert all(len(h.tokens) >= min_len for hyps in blocked for h in hyps)
        check_scores([model], src, blocked, lenpen=1.0)


@pytest.mark.parametrize("family", ["transformer", "synthesizer"])
def test_max_length_per_sentence_and_position_limit(family: str) -> None:
    endless = EosBiased(tiny_model(family), -30.0)  # never ends on its own
    src = sources([3, 9, 6])
    config = GenerateConfig(beam=3, n_best=3, max_len_a=0.5, max_len_b=2)
    for beam in (1, 3):
        results = generate([endless], src, config.replace(beam=beam, n_best=beam))
        for row, hyps in zip(src, results):
            src_len = int(row.ne(PAD).sum()) - 1  # without EOS
            assert all(len(h.tokens) == int(0.5 * src_len + 2) for h in hyps)
    # the decoder's positions cap the length whatever max_len_b says (synthesizer: synth_max_len)
    limit = {"transformer": dict(max_target_positions=7), "synthesizer": dict(synth_max_len=7, synth_factors=(7, 1))}
    capped = EosBiased(tiny_model(family, **limit[family]), -30.0)
    for beam in (1, 3):
        results = generate([capped], sources([5, 5]), config.replace(beam=beam, n_best=1, max_len_b=50))
        assert all(len(h.tokens) == 6 for hyps in results for h in hyps)


def test_min_len_beyond_max_len_still_ends() -> None:
    model = tiny_model()
    results = generate([model], sources([4, 6]), GenerateConfig(beam=2, min_len=20, max_len_a=0, max_len_b=5))
    assert all(len(h.tokens) == 5 for hyps in results for h in hyps)


# -------------------------------------------------------------------------------------- n-grams
def _has_repeat(tokens: list[int], n: int) -> bool:
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(grams) != len(set(grams))


def test_repeated_ngram_mask() -> None:
    history = torch.tensor([[5, 6, 5, 7, 5], [4, 4, 4, 4, 4]])
    mask = repeated_ngram_mask(history, 2, 9)
    assert mask[0].nonzero().flatten().tolist() == [6, 7] and mask[1].nonzero().flatten().tolist() == [4]
    assert repeated_ngram_mask(history, 3, 9).nonzero().tolist() == [[1, 4]]
    assert not repeated_ngram_mask(history[:, :2], 3, 9).any()


@pytest.mark.parametrize("family", ["transformer", "dynamicconv", "lite_transformer"])
def test_no_repeat_ngram_never_repeats(family: str) -> None:
    model = EosBiased(tiny_model(family, vocab=12), -30.0)  # long outputs over a small vocabulary
    src = sources([6, 9, 4], vocab=12)
    for search in (dict(beam=1), dict(beam=3, n_best=3), dict(sampling=True, n_best=3, seed=5)):
        config = GenerateConfig(**search, max_len_a=0, max_len_b=14)
        plain = generate([model], src, config)
        assert any(_has_repeat(h.tokens, 2) for hyps in plain for h in hyps)  # the test bites
        for n in (1, 2, 3):
            blocked = generate([model], src, config.replace(no_repeat_ngram=n))
            assert not any(_has_repeat(h.tokens, n) for hyps in blocked for h in hyps)
            check_scores([model], src, blocked, lenpen=1.0)


# -------------------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("family", FAMILIES)
def test_sampling_is_seeded_and_top_k_one_is_greedy(family: str) -> None:
    model = EosBiased(tiny_model(family), -1.0)
    src = sources([5, 8, 3])
    config = GenerateConfig(sampling=True, n_best=3, seed=7, temperature=1.5, max_len_b=8)
    first = generate([model], src, config)
    assert_same(first, generate([model], src, config), atol=0)
    assert [len(hyps) for hyps in first] == [3, 3, 3]
    assert all([h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True) for hyps in first)
    check_scores([model], src, first, lenpen=1.0)  # log_prob is the model's, not the tempered one
    other = generate([model], src, config.replace(seed=8))
    assert [[h.tokens for h in hyps] for hyps in other] != [[h.tokens for h in hyps] for hyps in first]
    greedy = generate([model], src, GenerateConfig(beam=1, max_len_b=8))
    for narrow in (dict(top_k=1), dict(top_p=1e-6)):
        samples = generate([model], src, config.replace(n_best=1, **narrow))
        assert_same(samples, greedy)


@torch.no_grad()
def test_top_k_and_top_p_only_draw_from_the_kept_tokens() -> None:
    model = EosBiased(tiny_model("transformer"), -1.0)
    src = sources([5, 8])
    for narrow, keep in ((dict(top_k=3), lambda probs: probs.topk(3).indices),
                         (dict(top_p=0.6), lambda probs: probs.sort(descending=True).indices[
                             : int((probs.sort(descending=True).values.cumsum(0) < 0.6).sum()) + 1])):
        results = generate([model], src, GenerateConfig(sampling=True, n_best=4, seed=3, max_len_b=6, **narrow))
        for row, hyps in zip(src, results):
            enc, mask = model.encode(row[row.ne(PAD)].unsqueeze(0))
            for h in hyps:
                out = [*h.tokens, EOS]
                lprobs = model.decode_step(torch.tensor([[BOS, *h.tokens]]), enc, mask)[0][0].log_softmax(-1)
                for step, token in enumerate(out[:-1]):  # the last (EOS) may be forced by max_len
                    probs = lprobs[step].exp()
                    probs[[PAD, BOS]] = 0
                    if step < 1:  # min_len
                        probs[EOS] = 0
                    assert token in keep(probs / probs.sum()).tolist()


# -------------------------------------------------------------------------------------- ensembles
@pytest.mark.parametrize("family", ["transformer", "lightconv", "synthesizer"])
def test_ensemble_of_copies_equals_the_single_model(family: str) -> None:
    model = EosBiased(tiny_model(family), 0.5)
    src = sources([5, 9, 3])
    for config in (GenerateConfig(beam=1), GenerateConfig(beam=3, n_best=2), GenerateConfig(sampling=True, seed=2)):
        assert_same(generate([model, copy.deepcopy(model)], src, config), generate([model], src, config))


def test_ensemble_averages_probabilities() -> None:
    models = [EosBiased(tiny_model("transformer", seed=s), 0.5) for s in (0, 1)]
    src = sources([5, 9, 3])
    results = generate(models, src, GenerateConfig(beam=3, n_best=3, lenpen=0.6))
    check_scores(models, src, results, lenpen=0.6)
    assert results != generate(models[:1], src, GenerateConfig(beam=3, n_best=3, lenpen=0.6))


# ---------------------------------------------------------------------------------------- refusals
def test_refuses_training_mode_and_mismatched_vocabularies() -> None:
    src = sources([4])
    with pytest.raises(ValueError, match="eval mode"):
        generate([tiny_model().train()], src, GenerateConfig())
    with pytest.raises(ValueError, match="vocabularies"):
        generate([tiny_model(), tiny_model(vocab=VOCAB + 1)], src, GenerateConfig())


def test_empty_batch_and_no_state_left_on_models() -> None:
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert generate([model], sources([4])[:0], GenerateConfig()) == []
    generate([model], sources([4, 6]), GenerateConfig(beam=3))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and not model.training


class CountsRows(EosBiased):
    """Records how many rows each init_cache call projects, and whether a step ever starts cold."""

    def __init__(self, model: EncoderDecoder) -> None:
        super().__init__(model, 0.5)
        self.init_rows: list[int] = []
        self.cold_steps = 0

    def init_cache(self, enc_out, enc_mask):  # noqa: ANN001, ANN201
        self.init_rows.append(enc_out.shape[0])
        return super().init_cache(enc_out, enc_mask)

    def decode_step(self, tokens, enc_out, enc_mask, cache=None):  # noqa: ANN001, ANN201
        self.cold_steps += cache is None
        return super().decode_step(tokens, enc_out, enc_mask, cache)


@pytest.mark.parametrize("config", [GenerateConfig(beam=4, n_best=2, max_len_a=1.0, max_len_b=2),
                                    GenerateConfig(sampling=True, n_best=3, max_len_a=1.0, max_len_b=2)])
def test_cross_attention_keys_are_projected_once_per_sentence(config: GenerateConfig) -> None:
    """The first decode state (cross-attention keys/values) is made from the 3 encoded sentences,
    then copied to the 12 beam rows or 9 sample rows, not projected again for every row."""
    model = CountsRows(tiny_model("dynamicconv"))
    generate([model], sources([4, 7, 5]), config)
    assert model.init_rows == [3] and model.cold_steps == 0
