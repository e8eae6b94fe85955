"""Fault matrix, model folders (item 10, and known-good corrupted weights): every file a model
folder names is a regular file inside it with a recorded checksum, exported graphs included."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convtrans.cli import app
from tests.conftest import one_line_error

pytestmark = pytest.mark.integration


def _translate(model: Path):
    return CliRunner().invoke(app, ["translate", "-m", str(model), "--device", "cpu"], input="Der mann läuft.\n")


def _config(model: Path) -> dict:
    return json.loads((model / "config.json").read_text())


def _write_config(model: Path, config: dict) -> None:
    (model / "config.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def exported(model_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exported") / "ts"
    result = CliRunner().invoke(app, ["export", str(model_dir), "--format", "torchscript", "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    return out


def test_a_tokenizer_outside_the_folder_is_refused(model_copy: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(model_copy / "spm.model", elsewhere / "spm.model")
    config = _config(model_copy)
    config["data"]["tokenizers"]["de"] = "../elsewhere/spm.model"
    _write_config(model_copy, config)
    result = _translate(model_copy)
    assert result.exit_code == 1
    assert "records no checksum for '../elsewhere/spm.model'" in one_line_error(result.stderr)
    config["files"]["../elsewhere/spm.model"] = config["files"]["spm.model"]  # a matching checksum does not help
    _write_config(model_copy, config)
    result = _translate(model_copy)
    assert "'../elsewhere/spm.model' is not the name of a file inside the folder" in one_line_error(result.stderr)


def test_an_exported_graph_outside_the_folder_is_not_loaded(exported: Path, tmp_path: Path) -> None:
    """torch.jit.load runs code: a graph named `../other/model.pt` must never reach it."""
    copy = tmp_path / "ts"
    shutil.copytree(exported, copy)
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(copy / "model.pt", other / "model.pt")
    config = _config(copy)
    config["extra"]["export"]["graphs"]["step"] = "../other/model.pt"
    _write_config(copy, config)
    result = _translate(copy)
    assert result.exit_code == 1 and "records no checksum for '../other/model.pt'" in one_line_error(result.stderr)


def test_an_exported_graph_must_match_its_checksum(exported: Path, tmp_path: Path) -> None:
    copy = tmp_path / "ts"
    shutil.copytree(exported, copy)
    assert "model.pt" in _config(copy)["files"]  # recorded at export time
    with open(copy / "model.pt", "ab") as handle:
        handle.write(b"\0")
    result = _translate(copy)
    assert result.exit_code == 1
    assert "is corrupted: model.pt does not match its checksum" in one_line_error(result.stderr)
    assert _translate(exported).exit_code == 0  # the untouched export runs


def test_weights_without_a_checksum_are_refused(model_copy: Path) -> None:
    config = _config(model_copy)
    del config["files"]["model.safetensors"]
    _write_config(model_copy, config)
    result = _translate(model_copy)
    assert result.exit_code == 1 and "records no checksum for 'model.safetensors'" in one_line_error(result.stderr)


def test_corrupted_weights_are_refused(model_copy: Path) -> None:
    """Known good: a truncated weights file fails its checksum."""
    weights = model_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    result = _translate(model_copy)
    assert result.exit_code == 1
    assert "is corrupted: model.safetensors does not match its checksum" in one_line_error(result.stderr)


def test_weights_of_another_shape_are_named_in_one_line(model_copy: Path, tmp_path: Path) -> None:
    """A config whose sizes disagree with its weights used to print PyTorch's multi-line list."""
    config = _config(model_copy)
    config["model"]["decoder_ffn_dim"] = config["model"]["decoder_ffn_dim"] * 2
    _write_config(model_copy, config)
    result = _translate(model_copy)
    assert result.exit_code == 1
    line = one_line_error(result.stderr)
    assert "weights do not match the config: decoder.0.ffn.fc1.bias is" in line and "more)" in line


def test_weights_missing_for_a_layer_are_named_in_one_line(model_copy: Path) -> None:
    """A config with one more layer than its weights (this used to crash on a set of names)."""
    config = _config(model_copy)
    model = config["model"]
    layers = model["encoder_layers"]
    model["encoder_layers"] = layers + 1
    if len(model["encoder_kernel_sizes"]) > 1:
        model["encoder_kernel_sizes"] = model["encoder_kernel_sizes"] + model["encoder_kernel_sizes"][-1:]
    _write_config(model_copy, config)
    result = _translate(model_copy)
    assert result.exit_code == 1
    assert f"weights do not match the config (missing ['encoder.{layers}." in one_line_error(result.stderr)
