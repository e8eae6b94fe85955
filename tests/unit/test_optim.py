import math

import pytest
import torch
import torch.nn.functional as F

from convtrans.config import TrainConfig
from convtrans.training.optim import label_smoothed_nll, learning_rate


def test_label_smoothed_loss_equals_torch_cross_entropy() -> None:
    logits = torch.randn(3, 5, 11, dtype=torch.float64)
    target = torch.randint(1, 11, (3, 5))
    target[1, 3:] = 0  # padding
    loss, nll = label_smoothed_nll(logits, target, 0.1, pad=0)
    flat_logits, flat_target = logits.reshape(-1, 11).float(), target.reshape(-1)
    assert loss.item() == pytest.approx(F.cross_entropy(flat_logits, flat_target, ignore_index=0, reduction="sum",
                                                        label_smoothing=0.1).item(), rel=1e-5)
    assert nll.item() == pytest.approx(F.cross_entropy(flat_logits, flat_target, ignore_index=0, reduction="sum").item(), rel=1e-5)


def test_inverse_sqrt_schedule() -> None:
    cfg = TrainConfig(lr=5e-4, warmup_updates=4000, warmup_init_lr=1e-7)
    assert learning_rate(cfg, 0) == pytest.approx(1e-7)
    assert learning_rate(cfg, 2000) == pytest.approx(1e-7 + (5e-4 - 1e-7) / 2)
    assert learning_rate(cfg, 4000) == pytest.approx(5e-4)
    assert learning_rate(cfg, 16000) == pytest.approx(2.5e-4)


def test_cosine_schedule_restarts_each_period() -> None:
    cfg = TrainConfig(lr=1e-3, lr_scheduler="cosine", warmup_updates=100, min_lr=1e-7, lr_period_updates=200, max_update=600)
    assert learning_rate(cfg, 100) == pytest.approx(1e-3)
    assert learning_rate(cfg, 200) == pytest.approx(1e-7 + (1e-3 - 1e-7) / 2)
    assert learning_rate(cfg, 299) == pytest.approx(1e-7 + 0.5 * (1e-3 - 1e-7) * (1 + math.cos(math.pi * 199 / 200)))
    assert learning_rate(cfg, 300) == pytest.approx(1e-3)  # restart
    assert TrainConfig(lr_scheduler="fixed", warmup_updates=0, lr=0.1).lr == learning_rate(
        TrainConfig(lr_scheduler="fixed", warmup_updates=0, lr=0.1), 5000)
