"""Generation: greedy search, batched beam search and sampling over `decode_step` + DecoderCache.

    hyps = generate([model], src, GenerateConfig(beam=5, lenpen=1.0))   # src (B, S), rows end in EOS
    hyps[i][0].tokens, hyps[i][0].score                                  # sentence i's best, ids only

The conventions are fairseq's, so scores and BLEU compare with published numbers:
- `log_prob` is the sum of the model's log-probabilities of the output tokens and of EOS; `score`
  = log_prob / len**lenpen with len counting EOS. Constraints remove tokens but never renormalize,
  so log_prob is exactly what teacher forcing gives for the same tokens.
- Length: each sentence may emit at most max_len = min(int(max_len_a·src_len + max_len_b),
  ModelConfig.max_target_len) tokens before EOS, where src_len counts its source tokens other than
  pad and EOS.
  At step max_len EOS is forced (its log-probability counts); before min_len tokens it is blocked
  (max_len wins if the two disagree), and it is allowed whenever constraints leave nothing else.
  Pad and the decoder's start token (BOS; fairseq's models start from EOS, Marian's from pad) are
  never generated, unless the start token is EOS. Truncating sources (max_source_len) is the
  caller's job.
- Beam search keeps `beam` live hypotheses per sentence. Each step takes the 2·beam best
  continuations; those ending in EOS among the first `beam` are finished, and the `beam` best others
  live on. A sentence is done once `beam` hypotheses have finished (when more end at one step, the
  best-ranked candidates fill the room), or at its max_len (fairseq's rules; they make beam 1 equal
  greedy). Done sentences leave the batch to save work; rows never mix
  and padding is masked, so batched results equal one-sentence-at-a-time results. A beam reorder
  within sentences leaves the encoder output and cross-attention keys/values alone (identical for
  all of a sentence's rows); only the self-mixer states are gathered.
- Sampling draws each token from the temperature-scaled, top-k then top-p filtered distribution
  with a torch.Generator seeded by `seed`. With n_best > 1 each input gets n_best independent
  samples, sorted by score. Temperature applies to sampling only; log_prob stays the model's own.
  The same inputs with the same seed give the same samples (a different batching draws differently).
- Several models are an ensemble: the next-token distribution is the mean of their probabilities
  (log of mean of softmaxes). They must share vocabularies; each keeps its own encoder output and cache.
- Everything runs under torch.inference_mode(); models must be in eval mode and are left untouched.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from convtrans.config import GenerateConfig, ModelConfig
from convtrans.model import EncoderDecoder
from convtrans.nn.cache import DecoderCache, reorder_state


@dataclass
class Hypothesis:
    """One output: target ids without BOS/EOS, the ranking score and the unnormalized log-prob."""

    tokens: list[int]
    score: float  # log_prob / (len(tokens) + 1) ** lenpen
    log_prob: float  # sum of log-probs of the tokens and EOS


def generate(models: Sequence[EncoderDecoder], src: torch.Tensor,
             config: GenerateConfig) -> list[list[Hypothesis]]:
    """For each row of src (B, S) (right-padded, each row ending in EOS), its n_best hypotheses, best
    first. Greedy search for beam 1, beam search above (fairseq's rules, or transformers' with
    config.search "hf": hf_search.py), sampling when `config.sampling`."""
    if config.sampling:
        return sample(models, src, config)
    if config.beam == 1:
        return greedy_search(models, src, config)
    if config.search == "hf":
        from convtrans.inference.hf_search import hf_beam_search

        return hf_beam_search(models, src, config)
    return beam_search(models, src, config)


# ---------------------------------------------------------------------------------------- searches
@torch.inference_mode()
def greedy_search(models: Sequence[EncoderDecoder], src: torch.Tensor,
                  config: GenerateConfig) -> list[list[Hypothesis]]:
    """The most likely token at each step; one hypothesis per input (the fast path for beam 1)."""
    return _left_to_right(models, src, config, copies=1, generator=None)


@torch.inference_mode()
def sample(models: Sequence[EncoderDecoder], src: torch.Tensor,
           config: GenerateConfig) -> list[list[Hypothesis]]:
    """n_best samples per input (temperature, top-k, top-p), reproducible from `config.seed`."""
    generator = torch.Generator(device=src.device).manual_seed(config.seed)
    return _left_to_right(models, src, config, copies=config.n_best, generator=generator)


def _left_to_right(models: Sequence[EncoderDecoder], src: torch.Tensor, config: GenerateConfig, copies: int,
                   generator: torch.Generator | None) -> list[list[Hypothesis]]:
    """One token per row per step, picked by argmax (generator None) or by sampling; rows that end
    leave the batch. Each input is decoded `copies` times (independent samples)."""
    _check_models(models)
    ids, batch = models[0].config, src.shape[0]
    if batch == 0:
        return []
    rows = torch.arange(batch, device=src.device).repeat_interleave(copies)  # (N,) input row of each row
    state = _encode(models, src)
    if copies > 1:  # samples: each input's state copied to its rows (greedy keeps it as it is)
        state = state.select(rows)
    max_len = max_lengths(models, src, config)[rows]  # (N,)
    history = src.new_empty(rows.shape[0], 0)  # (N, t) tokens generated so far
    log_prob = torch.zeros(rows.shape[0], device=src.device)
    tokens = src.new_full((rows.shape[0], 1), ids.start_id)  # (N, 1)
    results: list[list[Hypothesis]] = [[] for _ in range(batch)]
    for step in range(int(max_len.max()) + 1):
        lprobs, state = _next_log_probs(models, state, tokens)
        lprobs = _constrain(lprobs, history, step, max_len, config, ids)
        if generator is None:
            choice = lprobs.argmax(-1)  # (N,)
        else:
            choice = _sample_tokens(lprobs, config, generator)
        log_prob = log_prob + lprobs.gather(1, choice[:, None]).squeeze(1)
        history = torch.cat([history, choice[:, None]], dim=1)
        ended = choice.eq(ids.eos_id)
        if ended.any():
            done = ended.nonzero().squeeze(1)
            for row, toks, lp in zip(rows[done].tolist(), history[done, :-1].tolist(), log_prob[done].tolist()):
                results[row].append(_hypothesis(toks, lp, config.lenpen))
            live = (~ended).nonzero().squeeze(1)
            if live.numel() == 0:
                break
            state = state.select(live)
            rows, max_len, history = rows[live], max_len[live], history[live]
            log_prob, choice = log_prob[live], choice[live]
        tokens = choice[:, None]  # (N, 1)
    return [sorted(hyps, key=lambda h: -h.score) for hyps in results]


@torch.inference_mode()
def beam_search(models: Sequence[EncoderDecoder], src: torch.Tensor,
                config: GenerateConfig) -> list[list[Hypothesis]]:
    """Batched beam search over B×beam rows; see the module docstring for the rules."""
    _check_models(models)
    ids, beam = models[0].config, config.beam
    device, batch = src.device, src.shape[0]
    if batch == 0:
        return []
    sentence, state, max_len, scores, history, tokens = start_beams(models, src, config)
    n_finished = torch.zeros(batch, dtype=torch.long, device=device)  # (n,)
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    for step in range(int(max_len.max()) + 1):
        n = sentence.shape[0]
        lprobs, state = _next_log_probs(models, state, tokens)  # (n·K, V)
        lprobs = _constrain(lprobs, history, step, max_len.repeat_interleave(beam), config, ids)
        top_scores, origin, token, is_eos = candidates(lprobs, scores, n, beam, ids.eos_id)

        # EOS among the first K candidates finishes a hypothesis (-inf ones are dead beam slots)
        ends = is_eos[:, :beam] & top_scores[:, :beam].isfinite()  # (n, K)
        # at most `beam` finish per sentence, the best-ranked candidates first (fairseq's finalize_hypos)
        room = (beam - n_finished).clamp(min=0)[:, None]  # (n, 1)
        ends &= ends.cumsum(1).le(room)
        n_finished += ends.sum(1)
        if ends.any():
            which, rank = ends.nonzero(as_tuple=True)
            src_rows = origin[which, rank]
            for s, toks, lp in zip(sentence[which].tolist(), history[src_rows].tolist(),
                                   top_scores[which, rank].tolist()):
                finished[s].append(_hypothesis(toks, lp, config.lenpen))

        scores, token, origin = survivors(top_scores, token, origin, is_eos, beam)

        done = n_finished.ge(beam) | max_len.le(step)  # (n,)
        shrink = bool(done.any())
        if shrink:  # done sentences leave the batch
            live = (~done).nonzero().squeeze(1)
            if live.numel() == 0:
                break
            sentence, max_len, n_finished = sentence[live], max_len[live], n_finished[live]
            scores, token, origin = scores[live], token[live], origin[live]
        state, history, tokens = advance(state, history, token, origin, same_sentences=not shrink)
    return [sorted(hyps, key=lambda h: -h.score)[: config.n_best] for hyps in finished]


def start_beams(models: Sequence[EncoderDecoder], src: torch.Tensor, config: GenerateConfig
                ) -> tuple[torch.Tensor, EnsembleState, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A beam search's first state: (sentence (n,) input row of each live sentence, the encoded
    state expanded once to n·K rows, max_len (n,), scores (n, K), history (n·K, 0), tokens (n·K, 1))."""
    batch, beam = src.shape[0], config.beam
    sentence = torch.arange(batch, device=src.device)
    state = _encode(models, src).select(sentence.repeat_interleave(beam))  # (n·K, S, d)
    scores = torch.zeros(batch, beam, device=src.device)  # log-prob of each live hypothesis
    scores[:, 1:] = -math.inf  # all K start as BOS: keep one, or the beam would fill with copies
    tokens = src.new_full((batch * beam, 1), models[0].config.start_id)
    return sentence, state, max_lengths(models, src, config), scores, src.new_empty(batch * beam, 0), tokens


def candidates(lprobs: torch.Tensor, scores: torch.Tensor, n: int, beam: int, eos: int
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 2·K best continuations of each sentence's K beams, best first: their total scores, the
    row each extends, their token and whether it is EOS (each (n, 2K)). lprobs (n·K, V) is reused."""
    vocab = lprobs.shape[1]
    totals = lprobs.add_(scores.view(-1, 1)).view(n, beam * vocab)  # in place: no new (N, V) per step
    top_scores, top_index = totals.topk(2 * beam, dim=1)
    origin = top_index // vocab + torch.arange(n, device=lprobs.device)[:, None] * beam
    token = top_index % vocab
    return top_scores, origin, token, token.eq(eos)


def survivors(top_scores: torch.Tensor, token: torch.Tensor, origin: torch.Tensor, is_eos: torch.Tensor,
              beam: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The K best non-EOS candidates live on (at most K of the 2K end in EOS: one per row)."""
    order = torch.arange(2 * beam, device=token.device) + is_eos * (2 * beam)  # (n, 2K) EOS sorts last
    pick = order.topk(beam, dim=1, largest=False).indices  # (n, K)
    return top_scores.gather(1, pick), token.gather(1, pick), origin.gather(1, pick)


def advance(state: EnsembleState, history: torch.Tensor, token: torch.Tensor, origin: torch.Tensor,
            same_sentences: bool) -> tuple[EnsembleState, torch.Tensor, torch.Tensor]:
    """The surviving beams' state, history (n'·K, t+1) and next input tokens (n'·K, 1): one reorder
    of every cache per step (`same_sentences` when no sentence left the batch)."""
    index = origin.reshape(-1)  # (n'·K,)
    history = torch.cat([history[index], token.reshape(-1, 1)], dim=1)
    return state.select(index, same_sentences=same_sentences), history, token.reshape(-1, 1)


# ------------------------------------------------------------------------------------ decode state
@dataclass
class EnsembleState:
    """Per model: encoder output (N, S, d), its padding mask (N, S) and the decoder cache (None
    before the first step). Rows are hypotheses; `select` keeps and reorders them."""

    enc_out: list[torch.Tensor]
    enc_mask: list[torch.Tensor]
    caches: list[DecoderCache | None]

    def select(self, index: torch.Tensor, same_sentences: bool = False) -> EnsembleState:
        """Rows `index`. With same_sentences, every row is replaced by a row of the same sentence, so
        the encoder output and cross-attention keys/values (identical within a sentence) are kept as
        they are and only the self-attention/conv states are gathered."""
        if same_sentences:
            return EnsembleState(self.enc_out, self.enc_mask, [_reorder_self(c, index) for c in self.caches])
        return EnsembleState([e.index_select(0, index) for e in self.enc_out],
                             [m.index_select(0, index) for m in self.enc_mask],
                             [c.reorder(index) if c is not None else None for c in self.caches])


def _reorder_self(cache: DecoderCache | None, index: torch.Tensor) -> DecoderCache | None:
    return None if cache is None else dataclasses.replace(cache, self_states=reorder_state(cache.self_states, index))


def _encode(models: Sequence[EncoderDecoder], src: torch.Tensor) -> EnsembleState:
    """Encoder outputs and each decoder's first state, once per input sentence. The first state
    holds the cross-attention keys and values; made here, before select() copies a sentence to its
    beams or samples, they are projected once per sentence instead of once per row (at beam 5 that
    was 5x the work: ~90 ms of a 32-sentence batch; the same numbers either way)."""
    encoded = [model.encode(src) for model in models]
    caches: list[DecoderCache | None] = [model.init_cache(enc_out, enc_mask)
                                         for model, (enc_out, enc_mask) in zip(models, encoded)]
    return EnsembleState([e for e, _ in encoded], [m for _, m in encoded], caches)


def _next_log_probs(models: Sequence[EncoderDecoder], state: EnsembleState,
                    tokens: torch.Tensor) -> tuple[torch.Tensor, EnsembleState]:
    """Feed tokens (N, 1); log-probabilities (N, V) of the next token (fp32) and the new state."""
    lprobs: list[torch.Tensor] = []
    caches: list[DecoderCache | None] = []
    for model, enc_out, enc_mask, cache in zip(models, state.enc_out, state.enc_mask, state.caches):
        logits, cache = model.decode_step(tokens, enc_out, enc_mask, cache)  # (N, 1, V)
        lprobs.append(logits[:, -1].float().log_softmax(-1))
        caches.append(cache)
    if len(lprobs) == 1:
        combined = lprobs[0]
    else:  # log of the mean probability
        combined = torch.logsumexp(torch.stack(lprobs), dim=0) - math.log(len(lprobs))  # (N, V)
    return combined, EnsembleState(state.enc_out, state.enc_mask, caches)


# -------------------------------------------------------------------------------- token choices
def _constrain(lprobs: torch.Tensor, history: torch.Tensor, step: int, max_len: torch.Tensor,
               config: GenerateConfig, ids: ModelConfig) -> torch.Tensor:
    """Set to -inf what may not come next: pad, the start token (BOS) unless it is EOS, EOS before
    min_len, repeated n-grams; at a row's max_len everything but EOS. A row left with nothing may
    end (EOS keeps its log-prob)."""
    eos_lp = lprobs[:, ids.eos_id].clone()  # (N,)
    lprobs[:, ids.pad_id] = -math.inf
    if ids.start_id != ids.eos_id:  # fairseq's models start from EOS, which they must be able to end with
        lprobs[:, ids.start_id] = -math.inf
    if step < config.min_len:
        lprobs[:, ids.eos_id] = -math.inf
    if config.no_repeat_ngram:
        lprobs.masked_fill_(repeated_ngram_mask(history, config.no_repeat_ngram, lprobs.shape[1]), -math.inf)
    force = max_len.le(step) | lprobs.amax(-1).eq(-math.inf)  # (N,)
    if bool(force.any()):  # only the forced rows are written (a full masked_fill was a pass over (N, V))
        lprobs[force] = -math.inf
    lprobs[:, ids.eos_id] = torch.where(force, eos_lp, lprobs[:, ids.eos_id])
    return lprobs


def repeated_ngram_mask(history: torch.Tensor, n: int, vocab: int) -> torch.Tensor:
    """(N, V) True at tokens that would complete an n-gram already in the row's history (N, t)."""
    rows, time = history.shape
    mask = torch.zeros(rows, vocab + 1, dtype=torch.bool, device=history.device)
    if time >= n:
        windows = history.unfold(1, n, 1)  # (N, t-n+1, n) every n-gram so far
        prefix = history[:, time - n + 1 :]  # (N, n-1) the n-1 tokens the next one extends
        match = windows[:, :, :-1].eq(prefix[:, None, :]).all(-1)  # (N, t-n+1)
        banned = torch.where(match, windows[:, :, -1], vocab)  # (N, t-n+1); vocab = nothing banned
        mask.scatter_(1, banned, True)
    return mask[:, :vocab]


def _sample_tokens(lprobs: torch.Tensor, config: GenerateConfig, generator: torch.Generator) -> torch.Tensor:
    """Draw one token per row (N,) from lprobs (N, V) / temperature, filtered by top-k then top-p."""
    logits = lprobs / config.temperature
    if config.top_k:
        kth = logits.topk(min(config.top_k, logits.shape[1]), dim=1).values[:, -1:]  # (N, 1)
        logits = logits.masked_fill(logits < kth, -math.inf)
    if config.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=1, descending=True)  # (N, V)
        probs = sorted_logits.softmax(-1)
        before = probs.cumsum(-1) - probs  # mass of the more likely tokens
        sorted_logits = sorted_logits.masked_fill(before >= config.top_p, -math.inf)  # the first always stays
        logits = logits.scatter(1, order, sorted_logits)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)


# -------------------------------------------------------------------------------------- helpers
def max_lengths(models: Sequence[EncoderDecoder], src: torch.Tensor, config: GenerateConfig) -> torch.Tensor:
    """(B,) the most tokens (before EOS) each sentence may get: a·src_len + b within the decoder's positions."""
    ids = models[0].config
    src_len = (src.ne(ids.pad_id) & src.ne(ids.eos_id)).sum(1).double()  # (B,)
    limit = min(model.config.max_target_len for model in models)
    return (config.max_len_a * src_len + config.max_len_b).floor().long().clamp(max=limit)


def _hypothesis(tokens: list[int], log_prob: float, lenpen: float) -> Hypothesis:
    return Hypothesis(tokens, log_prob / (len(tokens) + 1) ** lenpen, log_prob)


def _check_models(models: Sequence[EncoderDecoder]) -> None:
    """Refuse what would silently give wrong output: no model, dropout on, mismatched vocabularies."""
    if not models:
        raise ValueError("generate needs at least one model")
    first = models[0].config
    for model in models:
        if model.training:
            raise ValueError("generate needs models in eval mode (dropout would randomize the search): "
                             "call model.eval()")
        cfg = model.config
        same = (cfg.src_vocab_size, cfg.tgt_vocab_size, cfg.pad_id, cfg.bos_id, cfg.eos_id) == (
            first.src_vocab_size, first.tgt_vocab_size, first.pad_id, first.bos_id, first.eos_id)
        if not same:
            raise ValueError("an ensemble's models must share vocabularies and special ids")
