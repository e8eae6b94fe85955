"""Reading fairseq checkpoints never unpickles code: what the allowlist admits loads, anything else
is refused in one line naming the global, before anything runs (imports/safe_load.py)."""

from __future__ import annotations

import argparse
import os
import sys
import types
from pathlib import Path

import pytest
import torch

from convtrans.errors import UserError
from convtrans.imports.safe_load import InertMeter, load_checkpoint


class _RunsCode:
    """A pickle payload: unpickling it would create a file (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_a_checkpoint_that_would_run_code_is_refused_and_nothing_runs(tmp_path: Path, zip_format: bool) -> None:
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "args": _RunsCode(marker)}, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(UserError, match=r"refusing to unpickle .*mkdir.*weights_only=True"):
        load_checkpoint(path)
    assert not marker.exists()


def test_namespace_args_and_2019_meters_load_as_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fairseq <= 0.9 files hold args as argparse.Namespace and fairseq.meters objects in
    extra_state; they load without fairseq (the meters as inert stand-ins)."""
    meters = types.ModuleType("fairseq.meters")

    class AverageMeter:
        def __init__(self) -> None:
            self.avg, self.count = 1.5, 3

    AverageMeter.__module__, AverageMeter.__qualname__ = "fairseq.meters", "AverageMeter"
    meters.AverageMeter = AverageMeter  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fairseq", types.ModuleType("fairseq"))
    monkeypatch.setitem(sys.modules, "fairseq.meters", meters)
    path = tmp_path / "old.pt"
    weights = {"encoder.embed_tokens.weight": torch.randn(8, 4)}
    torch.save({"model": weights, "args": argparse.Namespace(arch="lightconv_iwslt_de_en"),
                "extra_state": {"train_meters": {"loss": AverageMeter()}}}, path, _use_new_zipfile_serialization=False)
    monkeypatch.delitem(sys.modules, "fairseq.meters")
    monkeypatch.delitem(sys.modules, "fairseq")
    state = load_checkpoint(path)
    assert state["args"].arch == "lightconv_iwslt_de_en"
    assert isinstance(state["extra_state"]["train_meters"]["loss"], InertMeter)
    assert torch.equal(state["model"]["encoder.embed_tokens.weight"], weights["encoder.embed_tokens.weight"])


def test_files_that_are_not_checkpoints_are_one_line_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(garbage)
    no_model = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(1)}, no_model)
    with pytest.raises(UserError, match="not a fairseq checkpoint"):
        load_checkpoint(no_model)
    with pytest.raises(UserError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(UserError, match="not a regular file"):
        load_checkpoint(tmp_path)


def test_a_real_lite_transformer_checkpoint_loads_with_its_meters_inert() -> None:
    """Lite Transformer's fairseq 0.8 trainer pickles fairseq.meters objects (the released
    checkpoints come from it); the fixture written by that trainer loads without fairseq."""
    path = Path(__file__).resolve().parents[1] / "fixtures" / "imports" / "lite_multibranch" / "checkpoint_best.pt"
    state = load_checkpoint(path)
    meters = state["extra_state"]["train_meters"]
    assert meters and all(isinstance(meter, InertMeter) for meter in meters.values())
    assert state["args"].arch == "transformer_multibranch_v2_wmt_en_de"


def test_a_checkpoint_larger_than_free_memory_is_refused_before_reading(tmp_path: Path) -> None:
    from convtrans.imports.safe_load import check_memory, stored_bytes

    path = tmp_path / "big.pt"
    torch.save({"model": {"w": torch.zeros(1000)}}, path)
    assert stored_bytes(path) >= 4000
    with pytest.raises(UserError, match=r"big.pt: loading it needs .* but .* of memory is free"):
        check_memory(path, available=1000)
    check_memory(path, available=10**9)
