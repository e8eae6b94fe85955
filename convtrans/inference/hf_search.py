"""Beam search with the rules of transformers' `generate` (GenerateConfig.search = "hf").

Imported Marian / OPUS-MT models were released to be run by transformers; their users compare
against its outputs, so convtrans reproduces its beam search (transformers 5.x
generation/utils.py `_beam_search`, read at 5.25) rather than fairseq's where they differ:

- Each step takes the 2·beam best continuations of all live beams (as fairseq). Those ending in
  EOS among the first `beam` are finished candidates with score log_prob / len**lenpen, len
  counting EOS; they are merged with the sentence's finished list and the `beam` best scores kept
  (fairseq instead keeps the first `beam` to finish). The `beam` best non-EOS continuations live on.
- A sentence stops (early_stopping "heuristic", transformers' default False) once its `beam`
  finished hypotheses all score at least what its best live beam would score if it ended now:
  best_live / (t+1)**lenpen with t+1 tokens generated so far; "never" uses the longest allowed
  length instead when lenpen > 0; "true" stops as soon as `beam` hypotheses finished.
- At the last allowed step EOS is forced with log-probability 0, as ForcedEOSTokenLogitsProcessor
  does (fairseq keeps the model's EOS log-probability); pad and the start token are never chosen
  (Marian's bad_words_ids), and min_len blocks EOS as in generate.py.
Beam 1 is greedy search in both (generate.py), which transformers' greedy decoding equals.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from convtrans.config import GenerateConfig
from convtrans.inference.generate import (
    Hypothesis,
    _check_models,
    _constrain,
    _hypothesis,
    _next_log_probs,
    advance,
    candidates,
    start_beams,
    survivors,
)
from convtrans.model import EncoderDecoder


def _keep_best(finished: list[Hypothesis], new: list[Hypothesis], beam: int) -> list[Hypothesis]:
    """The `beam` best by score of the old finished list then the new ones (a stable sort keeps
    the old first on ties, as transformers' concatenation before its top-k does)."""
    return sorted(finished + new, key=lambda h: -h.score)[:beam]


@torch.inference_mode()
def hf_beam_search(models: Sequence[EncoderDecoder], src: torch.Tensor,
                   config: GenerateConfig) -> list[list[Hypothesis]]:
    _check_models(models)
    ids, beam = models[0].config, config.beam
    device, batch = src.device, src.shape[0]
    if batch == 0:
        return []
    sentence, state, max_len, scores, history, tokens = start_beams(models, src, config)
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    for step in range(int(max_len.max()) + 1):
        n = sentence.shape[0]
        row_max = max_len.repeat_interleave(beam)
        lprobs, state = _next_log_probs(models, state, tokens)
        lprobs = _constrain(lprobs, history, step, row_max, config, ids)
        lprobs[row_max.le(step), ids.eos_id] = 0.0  # ForcedEOSTokenLogitsProcessor: EOS scores 0
        top_scores, origin, token, is_eos = candidates(lprobs, scores, n, beam, ids.eos_id)
        ends = is_eos[:, :beam] & top_scores[:, :beam].isfinite()
        for s in ends.any(1).nonzero().squeeze(1).tolist():
            rows = ends[s].nonzero().squeeze(1).tolist()
            new = [_hypothesis(history[origin[s, r]].tolist(), top_scores[s, r].item(), config.lenpen) for r in rows]
            finished[int(sentence[s])] = _keep_best(finished[int(sentence[s])], new, beam)

        scores, token, origin = survivors(top_scores, token, origin, is_eos, beam)

        done = torch.tensor([_stops(finished[int(s)], scores[i, 0].item(), step, int(max_len[i]), config)
                             for i, s in enumerate(sentence.tolist())], device=device)
        if bool(done.any()):
            live = (~done).nonzero().squeeze(1)
            if live.numel() == 0:
                break
            sentence, max_len, scores, token, origin = sentence[live], max_len[live], scores[live], token[live], origin[live]
        state, history, tokens = advance(state, history, token, origin, same_sentences=not bool(done.any()))
    return [hyps[: config.n_best] for hyps in finished]


def _stops(finished: list[Hypothesis], best_live: float, step: int, max_len: int, config: GenerateConfig) -> bool:
    """Whether a sentence is done after `step` (transformers' _check_early_stop_heuristic and
    _beam_search_has_unfinished_sequences, per sentence)."""
    if step >= max_len:
        return True
    if len(finished) < config.beam:
        return False
    if config.early_stopping == "true":
        return True
    generated = max_len + 1 if config.early_stopping == "never" and config.lenpen > 0 else step + 1
    return best_live / generated**config.lenpen <= min(h.score for h in finished)
