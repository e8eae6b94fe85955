"""Fault matrix, unbounded work (items 7-9): a typo'd beam, a crafted config.json or a tokenizer
entry naming a device is refused up front, in one line that names the field and the memory."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convtrans.cli import app
from tests.conftest import one_line_error, train_args

pytestmark = pytest.mark.integration


def _translate(model: Path, *args: str, text: str = "Der mann läuft.\n"):
    return CliRunner().invoke(app, ["translate", "-m", str(model), "--device", "cpu", *args], input=text)


def _edit_config(model: Path, section: str, **changes) -> None:
    path = model / "config.json"
    config = json.loads(path.read_text())
    config[section].update(changes)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize("beam", ["50000", "1025"])
def test_beam_above_the_documented_bound_is_refused(model_dir: Path, beam: str) -> None:
    result = _translate(model_dir, "--beam", beam)
    assert result.exit_code == 1
    assert one_line_error(result.stderr) == f"error: generate field beam: must be in [1, 1024] (got {beam})"


def test_beam_in_a_model_config_is_bounded_too(model_copy: Path) -> None:
    _edit_config(model_copy, "generate", beam=100000)
    result = _translate(model_copy)
    assert result.exit_code == 1 and "generate field beam: must be in [1, 1024] (got 100000)" in one_line_error(result.stderr)


def test_sampling_n_best_is_bounded(model_dir: Path) -> None:
    result = _translate(model_dir, "--sampling", "--n-best", "100000")
    assert result.exit_code == 1 and "generate field n_best: must be in [1, 1024]" in one_line_error(result.stderr)


def test_a_beam_that_does_not_fit_in_memory_is_refused_with_its_size(model_dir: Path, monkeypatch) -> None:
    """On a machine with room for 1,000 of the smallest possible beam rows, beam 1024 is refused
    with the memory it would need; beam 4 still runs (fewer sentences per batch if need be)."""
    from convtrans import resources
    from convtrans.config import ModelConfig

    config = ModelConfig.from_dict(json.loads((model_dir / "config.json").read_text())["model"])
    smallest_row = resources.decode_bytes_per_row(config, 1, 1)
    monkeypatch.setattr(resources, "available_bytes", lambda device="cpu": 2000 * smallest_row)
    result = _translate(model_dir, "--beam", "1024")
    assert result.exit_code == 1
    line = one_line_error(result.stderr)
    budget = resources.human_bytes(1000 * smallest_row)
    assert re.search(rf"beam 1024 needs [\d.]+ [KM]B to decode one sentence .* more than the {budget} it may use", line), line
    assert _translate(model_dir, "--beam", "4").exit_code == 0


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"d_model": 65536}, "d_model=65536"),
        ({"src_vocab_size": 2**31 - 1, "tgt_vocab_size": 2**31 - 1}, "src_vocab_size=2147483647"),
        ({"max_source_positions": 2_000_000_000}, "max_source_positions=2000000000"),
        ({"decoder_ffn_dim": 2**34}, "decoder_ffn_dim=17179869184"),
    ],
)
def test_a_crafted_model_size_is_refused_before_allocating(model_copy: Path, changes: dict, field: str) -> None:
    _edit_config(model_copy, "model", **changes)
    started = time.perf_counter()
    result = _translate(model_copy)
    assert result.exit_code == 1
    line = one_line_error(result.stderr)
    assert re.fullmatch(rf"error: config field {field}: this model needs [\d.,]+ [GTP]B for inference "
                        rf"\([\d.,]+M parameters: weights\), more than the [\d.,]+ [MGT]B free on cpu", line), line
    assert time.perf_counter() - started < 30  # nothing was allocated (it used to take minutes and GBs)


def test_more_layers_than_supported_are_refused(model_copy: Path) -> None:
    config = json.loads((model_copy / "config.json").read_text())["model"]
    kernels = config["encoder_kernel_sizes"][:1] or [3]
    _edit_config(model_copy, "model", encoder_layers=100_000, encoder_kernel_sizes=kernels)
    result = _translate(model_copy)
    assert result.exit_code == 1
    assert "config field encoder_layers=100000: more than 1000 layers is not supported" in one_line_error(result.stderr)


def test_training_a_model_that_cannot_fit_is_refused(data_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, train_args(data_dir, tmp_path / "run", "--set", "d_model=65536", "--set",
                                                "encoder_ffn_dim=65536", "--set", "decoder_ffn_dim=65536"))
    assert result.exit_code == 1
    line = one_line_error(result.stderr)
    assert "config field d_model=65536: this model needs" in line and "for training" in line
    assert "weights, gradients and Adam moments" in line


def test_a_tokenizer_naming_a_device_is_refused(model_copy: Path) -> None:
    """Item 9: /dev/zero as a tokenizer used to be read until MemoryError."""
    config = json.loads((model_copy / "config.json").read_text())
    config["data"]["tokenizers"]["de"] = "/dev/zero"
    config["files"]["/dev/zero"] = "0" * 64  # even with a recorded checksum
    (model_copy / "config.json").write_text(json.dumps(config))
    result = _translate(model_copy)
    assert result.exit_code == 1
    assert "'/dev/zero' is not the name of a file inside the folder" in one_line_error(result.stderr)


def test_a_tokenizer_symlinked_to_a_device_is_refused(model_copy: Path) -> None:
    (model_copy / "spm.model").unlink()
    (model_copy / "spm.model").symlink_to("/dev/zero")
    result = _translate(model_copy)
    assert result.exit_code == 1 and "spm.model leads outside the folder" in one_line_error(result.stderr)


def test_an_oversized_sentencepiece_file_is_not_read(tmp_path: Path) -> None:
    from convtrans.data.tokenize import MAX_SPM_BYTES, SubwordTokenizer
    from convtrans.errors import UserError

    big = tmp_path / "spm.model"
    with open(big, "wb") as handle:
        handle.truncate(MAX_SPM_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(UserError, match="too large for a sentencepiece model"):
        SubwordTokenizer(big)
    fifo = tmp_path / "fifo.model"
    import os

    os.mkfifo(fifo)
    with pytest.raises(UserError, match="not a regular file"):
        SubwordTokenizer(fifo)
