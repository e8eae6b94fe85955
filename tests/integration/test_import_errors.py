"""`convtrans import` refuses bad input in one line naming what is wrong, before any work, and
leaves no output folder behind (the imports package; the fixtures of test_import_reference.py)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from convtrans.cli import app
from tests.conftest import one_line_error

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "imports"
FAIRSEQ = FIXTURES / "fairseq_dynamicconv"
MARIAN = FIXTURES / "marian_tied"


def _fairseq(*args: str, checkpoint: Path = FAIRSEQ / "checkpoint_best.pt", dict_dir: Path = FAIRSEQ,
             out: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["import", "fairseq", str(checkpoint), "--dict-dir", str(dict_dir), "-o", str(out),
                                      "--bpe", "subword_nmt", "--bpe-codes", str(FAIRSEQ / "bpecodes"), *args])
    return result.exit_code, result.stderr


def _copy(tmp_path: Path, source: Path = FAIRSEQ) -> Path:
    folder = tmp_path / "in"
    shutil.copytree(source, folder)
    return folder


def _with_args(tmp_path: Path, **changes: object) -> Path:
    """The fixture checkpoint with some training args changed (as another fairseq run would save)."""
    from convtrans.imports.safe_load import load_checkpoint

    state = load_checkpoint(FAIRSEQ / "checkpoint_best.pt")
    args = vars(state["cfg"]["model"]) | changes
    state["cfg"]["model"] = argparse.Namespace(**args)
    path = tmp_path / "changed.pt"
    torch.save(state, path)
    return path


def test_a_good_import_writes_a_checksummed_folder_with_a_card(tmp_path: Path) -> None:
    code, stderr = _fairseq("--license", "MIT (test fixture)", out=tmp_path / "model")
    assert code == 0, stderr
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert set(config["files"]) == {"model.safetensors", "dict.de.txt", "dict.en.txt", "bpecodes", "README.md"}
    assert "MIT (test fixture)" in (tmp_path / "model" / "README.md").read_text()
    assert config["extra"]["imported"]["arch"] == "lightconv"


@pytest.mark.parametrize("case", ["missing dict", "wrong dict", "missing codes", "bad codes", "out exists"])
def test_missing_or_mismatched_files_are_named(tmp_path: Path, case: str) -> None:
    folder, out = _copy(tmp_path), tmp_path / "model"
    codes = FAIRSEQ / "bpecodes"
    if case == "missing dict":
        (folder / "dict.en.txt").unlink()
        expected = f"dictionary not found: {folder / 'dict.en.txt'}"
    elif case == "wrong dict":
        (folder / "dict.en.txt").write_text("".join(f"w{i} 1\n" for i in range(50)), encoding="utf-8")
        expected = f"{folder / 'dict.en.txt'} has 54 symbols"
    elif case == "missing codes":
        codes = tmp_path / "nope.codes"
        expected = f"BPE codes file not found: {codes}"
    elif case == "bad codes":
        codes = folder / "bpecodes"
        codes.write_text("#version: 0.2\na b\nthis has three\n", encoding="utf-8")
        expected = f"{codes}:3: not a line of subword-nmt codes"
    else:
        out.mkdir()
        expected = f"{out} already exists"
    result = CliRunner().invoke(app, ["import", "fairseq", str(folder / "checkpoint_best.pt"), "--dict-dir", str(folder),
                                      "-o", str(out), "--bpe", "subword_nmt", "--bpe-codes", str(codes)])
    assert result.exit_code == 1
    assert expected in one_line_error(result.stderr)
    assert case == "out exists" or not out.exists()


@pytest.mark.parametrize("changes, expected", [
    ({"adaptive_softmax_cutoff": "2000,4000"}, "argument adaptive_softmax_cutoff"),
    ({"weight_softmax": False}, "argument weight_softmax: False (unnormalized kernels) is not supported"),
    ({"encoder_conv_type": "sparse"}, "argument encoder_conv_type: 'sparse' is not lightweight or dynamic"),
    ({"decoder_embed_dim": 64}, "argument decoder_embed_dim: 64 differs from encoder_embed_dim=32"),
    ({"decoder_normalize_before": False}, "encoder_normalize_before=True differs from decoder_normalize_before=False"),
    ({"encoder_kernel_size_list": [3, 4]}, "argument encoder_kernel_size_list: an even encoder kernel"),
    ({"arch": "transformer_lm"}, "arch 'transformer_lm' is not a translation"),
])
def test_unsupported_arguments_are_refused_by_name(tmp_path: Path, changes: dict, expected: str) -> None:
    code, stderr = _fairseq(checkpoint=_with_args(tmp_path, **changes), out=tmp_path / "model")
    assert code == 1 and expected in one_line_error(stderr)
    assert not (tmp_path / "model").exists()


def test_a_missing_or_misshapen_tensor_is_named(tmp_path: Path) -> None:
    from convtrans.imports.safe_load import load_checkpoint

    state = load_checkpoint(FAIRSEQ / "checkpoint_best.pt")
    del state["model"]["decoder.layers.1.fc2.weight"]
    state["model"]["encoder.layers.0.fc1.bias"] = torch.zeros(3)
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    code, stderr = _fairseq(checkpoint=path, out=tmp_path / "model")
    assert code == 1 and "has no tensor for decoder.1.ffn.fc2.weight" in one_line_error(stderr)
    state["model"]["decoder.layers.1.fc2.weight"] = torch.zeros(32, 64)
    torch.save(state, path)
    code, stderr = _fairseq(checkpoint=path, out=tmp_path / "model")
    assert code == 1 and "encoder.0.ffn.fc1.bias is [3] in the checkpoint but the args give [64]" in one_line_error(stderr)


class _Payload:
    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return (os.system, ("true",))


def test_a_checkpoint_that_would_run_code_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "args": _Payload()}, path)
    code, stderr = _fairseq(checkpoint=path, out=tmp_path / "model")
    line = one_line_error(stderr)
    assert code == 1 and "refusing to unpickle" in line and "system" in line


@pytest.mark.parametrize("case, expected", [
    ("no config", "config.json is missing"),
    ("not marian", "not 'marian'"),
    ("no spm", "target.spm is missing"),
    ("bad vocab", "vocab.json has 3 entries but the model's source embeddings have"),
    ("activation", "activation_function 'tanh' is not one of"),
])
def test_bad_marian_folders_are_one_line(tmp_path: Path, case: str, expected: str) -> None:
    folder = _copy(tmp_path, MARIAN)
    config = json.loads((folder / "config.json").read_text())
    if case == "no config":
        (folder / "config.json").unlink()
    elif case == "not marian":
        (folder / "config.json").write_text(json.dumps({**config, "model_type": "bart"}))
    elif case == "no spm":
        (folder / "target.spm").unlink()
    elif case == "bad vocab":
        (folder / "vocab.json").write_text(json.dumps({"</s>": 0, "<unk>": 1, "<pad>": 2}))
    else:
        (folder / "config.json").write_text(json.dumps({**config, "activation_function": "tanh"}))
    result = CliRunner().invoke(app, ["import", "marian", str(folder), "-o", str(tmp_path / "model")])
    assert result.exit_code == 1 and expected in one_line_error(result.stderr)
    assert not (tmp_path / "model").exists()


def test_old_transformer_versions_lose_their_final_norms_as_in_fairseq(tmp_path: Path) -> None:
    """fairseq's upgrade rule: a pre-norm encoder of version < 2 / decoder of version <= 2 had no
    final LayerNorm; the same file with a current version marker must have the tensors."""
    from convtrans.checkpoint import read
    from convtrans.imports.safe_load import load_checkpoint

    folder = FIXTURES / "fairseq_transformer_prenorm"
    state = load_checkpoint(folder / "checkpoint_best.pt")
    for side in ("encoder", "decoder"):
        del state["model"][f"{side}.layer_norm.weight"], state["model"][f"{side}.layer_norm.bias"]
    state["model"]["encoder.version"], state["model"]["decoder.version"] = torch.tensor([1.0]), torch.tensor([2.0])
    path = tmp_path / "old.pt"
    torch.save(state, path)
    args = ["import", "fairseq", str(path), "--dict-dir", str(folder), "--bpe", "subword_nmt",
            "--bpe-codes", str(folder / "bpecodes")]
    result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "old")])
    assert result.exit_code == 0, result.stderr
    config = read(tmp_path / "old").model_config
    assert (config.encoder_final_norm, config.decoder_final_norm) == (False, False)
    state["model"]["decoder.version"] = torch.tensor([3.0])
    torch.save(state, path)
    result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "new")])
    assert result.exit_code == 1 and "has no tensor for decoder_norm.weight" in one_line_error(result.stderr)


def test_marian_decoding_defaults_follow_transformers(tmp_path: Path) -> None:
    """Absent or null generation fields take transformers' defaults; processors convtrans does not
    reproduce are refused by name (imports/marian.py marian_generate)."""
    from convtrans.errors import UserError
    from convtrans.imports.marian import marian_generate

    config = {"pad_token_id": 460, "max_position_embeddings": 256}
    defaults = marian_generate(config, {"length_penalty": None, "num_beams": None})
    assert (defaults.beam, defaults.lenpen, defaults.max_len_b, defaults.min_len) == (1, 1.0, 18, 0)
    assert marian_generate(config, {"max_length": 512, "num_beams": 4}).max_len_b == 254  # capped by positions
    for field, value in (("repetition_penalty", 1.2), ("no_repeat_ngram_size", 3), ("bad_words_ids", [[5]])):
        with pytest.raises(UserError, match=f"{field}="):
            marian_generate(config, {field: value})
    folder = _copy(tmp_path, MARIAN)
    generation = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**generation, "repetition_penalty": 1.3}))
    result = CliRunner().invoke(app, ["import", "marian", str(folder), "-o", str(tmp_path / "model")])
    assert result.exit_code == 1 and "repetition_penalty=1.3" in one_line_error(result.stderr)


@pytest.mark.parametrize("args, expected", [
    (["--tokenizer", "spacy"], "--tokenizer 'spacy': expected one of moses, none"),
    (["--bpe", "wordpiece", "--bpe-codes", "CODES"], "--bpe 'wordpiece': expected one of subword_nmt, fastbpe, sentencepiece"),
    (["--bpe", "subword_nmt"], "--bpe and --bpe-codes go together"),
    (["--task", "parsing"], "--task 'parsing': expected one of translation, summarization"),
    (["--source-lang", "de", "--target-lang", "de"], "source and target language are both 'de'"),
])
def test_bad_fairseq_import_options_are_one_line(tmp_path: Path, args: list[str], expected: str) -> None:
    args = [str(FAIRSEQ / "bpecodes") if a == "CODES" else a for a in args]
    result = CliRunner().invoke(app, ["import", "fairseq", str(FAIRSEQ / "checkpoint_best.pt"), "--dict-dir", str(FAIRSEQ),
                                      "-o", str(tmp_path / "model"), *args])
    assert result.exit_code == 1 and expected in one_line_error(result.stderr)
    assert not (tmp_path / "model").exists()


def test_a_dict_dir_that_is_not_a_folder_and_equal_marian_languages_are_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["import", "fairseq", str(FAIRSEQ / "checkpoint_best.pt"), "--dict-dir",
                                      str(FAIRSEQ / "dict.de.txt"), "-o", str(tmp_path / "model")])
    assert result.exit_code == 1 and "--dict-dir" in one_line_error(result.stderr) and "not a directory" in result.stderr
    result = CliRunner().invoke(app, ["import", "marian", str(MARIAN), "-o", str(tmp_path / "model"),
                                      "--source-lang", "de", "--target-lang", "de"])
    assert result.exit_code == 1 and "source and target language are both 'de'" in one_line_error(result.stderr)
    assert not (tmp_path / "model").exists()


def test_a_model_folder_naming_an_unknown_or_incomplete_pipeline_is_one_line(tmp_path: Path) -> None:
    """config.json is someone else's data: a pipeline name or a file key we do not know is refused
    when the model loads (data/pipelines.py, checkpoint.tokenizer_path)."""
    code, stderr = _fairseq(out=tmp_path / "model")
    assert code == 0, stderr
    config_path = tmp_path / "model" / "config.json"
    original = json.loads(config_path.read_text())
    for change, expected in (({"pipeline": "bytes"}, "unknown text pipeline 'bytes'"),
                             ({"vocab": "dict.xx"}, "names no tokenizer file 'dict.xx'"),
                             ({"bpe": "morfessor"}, "unknown BPE 'morfessor'")):
        config = json.loads(json.dumps(original))
        config["data"]["text"]["de"].update(change)
        config_path.write_text(json.dumps(config))
        result = CliRunner().invoke(app, ["translate", "-m", str(tmp_path / "model")], input="Ein Mann.\n")
        assert result.exit_code == 1 and expected in one_line_error(result.stderr)
    config = json.loads(json.dumps(original))
    del config["data"]["text"]["de"]["vocab"]
    config_path.write_text(json.dumps(config))
    result = CliRunner().invoke(app, ["translate", "-m", str(tmp_path / "model")], input="Ein Mann.\n")
    assert result.exit_code == 1 and "text options for de are incomplete or wrong" in one_line_error(result.stderr)
