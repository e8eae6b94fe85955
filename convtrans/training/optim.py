"""The training objective and learning-rate schedules of the papers' recipes (fairseq semantics)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from convtrans.config import TrainConfig


def label_smoothed_nll(logits: torch.Tensor, target: torch.Tensor, epsilon: float,
                       pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed label-smoothed cross-entropy and summed NLL over non-pad targets.

    fairseq's form: loss = (1 - ε)·nll + ε/V · Σ_v −log p_v. Computed in fp32 whatever the logits' dtype.
    """
    lprobs = F.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    keep = target.ne(pad)
    nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)[keep].sum()
    smooth = -lprobs.sum(-1)[keep].sum()
    loss = (1.0 - epsilon) * nll + epsilon / lprobs.shape[-1] * smooth
    return loss, nll


def learning_rate(cfg: TrainConfig, update: int) -> float:
    """The learning rate for update number `update` (1-based), a pure function of the config.

    Linear warmup from warmup_init_lr to lr over warmup_updates, then
      inverse_sqrt: lr · sqrt(warmup / update)
      cosine:       min_lr + (lr - min_lr)/2 · (1 + cos(π · t / period)), t since warmup, restarting each
                    period (t_mult 1), period = lr_period_updates or the rest of max_update
      fixed:        lr
    """
    warmup = cfg.warmup_updates
    if update <= warmup:
        return cfg.warmup_init_lr + (cfg.lr - cfg.warmup_init_lr) * update / max(warmup, 1)
    if cfg.lr_scheduler == "inverse_sqrt":
        return cfg.lr * math.sqrt(max(warmup, 1) / update)
    if cfg.lr_scheduler == "cosine":
        period = cfg.lr_period_updates or max(cfg.max_update - warmup, 1)
        t = (update - warmup) % period
        return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * t / period))
    return cfg.lr


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam with decoupled weight decay (fairseq's Adam applies decay the same way)."""
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.adam_betas, eps=cfg.adam_eps,
                             weight_decay=cfg.weight_decay)
