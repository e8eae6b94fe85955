"""Validation during training: loss/perplexity over a split, and BLEU or ROUGE of decoded output.

References are the split's target token ids decoded back to text (subword decode, then Moses
detokenization when the data was Moses-tokenized), so the score compares like with like without
keeping raw text in the data directory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from convtrans.config import GenerateConfig
from convtrans.data.batching import collate, make_batches
from convtrans.data.datadir import DataDir, ParallelSplit
from convtrans.model import EncoderDecoder
from convtrans.training.optim import label_smoothed_nll


@dataclass
class ValidResult:
    loss: float  # label-smoothed loss per target token (nats)
    nll: float  # per target token (nats)
    metric_name: str | None = None  # "bleu" | "rouge"
    metric: float | None = None

    @property
    def ppl(self) -> float:
        return math.exp(min(self.nll, 50.0))


@torch.no_grad()
def split_loss(model: torch.nn.Module, split: ParallelSplit, ids: dict[str, int], max_tokens: int,
               epsilon: float, device: torch.device, max_src_len: int, max_tgt_len: int) -> tuple[float, float]:
    """Per-token label-smoothed loss and NLL over a whole split (in a fixed, unshuffled order)."""
    was_training = model.training
    model.eval()
    batches, _ = make_batches(split.src.lengths(), split.tgt.lengths(), max_tokens, 0, 0, max_src_len, max_tgt_len,
                              shuffle=False)
    loss_sum = nll_sum = tokens = 0.0
    for indices in batches:
        batch = collate(split, indices, ids["pad"], ids["bos"], ids["eos"]).to(device)
        loss, nll = label_smoothed_nll(model(batch.src, batch.tgt_in), batch.tgt_out, epsilon, ids["pad"])
        loss_sum, nll_sum, tokens = loss_sum + loss.item(), nll_sum + nll.item(), tokens + batch.n_tokens
    model.train(was_training)
    return loss_sum / max(tokens, 1), nll_sum / max(tokens, 1)


@torch.no_grad()
def decode_metric(model: EncoderDecoder, data: DataDir, split: ParallelSplit, generate_config: GenerateConfig,
                  device: torch.device, max_sentences: int = 0, max_tokens: int = 4096) -> tuple[str, float]:
    """BLEU (translation) or ROUGE-L F1 (summarization) of the model's output on a split."""
    from convtrans.inference.generate import generate
    from convtrans.scoring import ScoreOptions, score

    was_training = model.training
    model.eval()
    ids = data.special_ids()
    tgt_tok, tgt_text = data.tokenizers[data.target_lang], data.text_processor(data.target_lang)
    count = min(len(split), max_sentences) if max_sentences else len(split)
    max_src = model.config.max_source_len
    order = np.argsort(-split.src.lengths()[:count], kind="stable")  # long first: similar lengths together
    hyps: dict[int, str] = {}
    for start in range(0, count, 64):
        chunk = order[start : start + 64]
        batch = collate(split, chunk, ids["pad"], ids["bos"], ids["eos"])
        src = batch.src[:, : max_src + 1].to(device)
        src[:, -1] = torch.where(src[:, -1].eq(ids["pad"]), src[:, -1], torch.full_like(src[:, -1], ids["eos"]))
        for i, hypotheses in zip(chunk, generate([model], src, generate_config)):
            hyps[int(i)] = tgt_text.post(tgt_tok.decode(hypotheses[0].tokens))
    refs = [tgt_text.post(tgt_tok.decode(split.tgt[i].tolist())) for i in range(count)]
    model.train(was_training)
    hyp_lines = [hyps[i] for i in range(count)]
    if data.task == "summarization":
        results = score(hyp_lines, [refs], ScoreOptions(metrics=("rouge",)))
        return "rouge", next(r.score for r in results if r.name == "ROUGE-L")
    return "bleu", score(hyp_lines, [refs], ScoreOptions(metrics=("bleu",)))[0].score
