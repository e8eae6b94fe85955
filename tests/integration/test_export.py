"""`convtrans export`: graphs equal the eager model step by step, translate through an export equals
eager translate, int8 still translates, averaging, and one-line errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from convtrans import checkpoint as ckpt
from convtrans.cli import app
from convtrans.config import load_preset
from convtrans.inference.export import export
from convtrans.inference.exported import load_for_inference
from convtrans.model import EncoderDecoder
from tests.conftest import make_pairs

pytestmark = pytest.mark.integration
FAMILIES = ["tiny_transformer", "tiny_lightconv", "tiny_dynamicconv", "tiny_synthesizer", "tiny_lite_transformer"]
# ONNX export is slow to run; its graphs are checked for one attention and one conv family (every
# family's state layout is checked through TorchScript, which traces the same wrappers)
ONNX_FAMILIES = ("tiny_transformer", "tiny_dynamicconv")
FORMATS = ["torchscript"] + (["onnx"] if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx") else [])


def _checkpoint(tmp_path: Path, preset: str) -> Path:
    torch.manual_seed(0)
    config = load_preset(preset, src_vocab_size=40, tgt_vocab_size=40)
    spm = tmp_path / "spm.model"
    spm.write_bytes(b"placeholder: graph tests never tokenize")
    data = ckpt.DataInfo("translation", "de", "en", {"de": "spm.model", "en": "spm.model"}, {"de": {"lang": "de"}, "en": {"lang": "en"}})
    return ckpt.save(tmp_path / preset, EncoderDecoder(config).eval(), config, data, {"de": spm, "en": spm})


@pytest.mark.parametrize(("preset", "fmt"), [(p, f) for p in FAMILIES for f in FORMATS
                                             if f == "torchscript" or p in ONNX_FAMILIES])
@torch.no_grad()
def test_exported_graphs_equal_eager_for_encoder_and_decoder_steps(tmp_path: Path, preset: str, fmt: str) -> None:
    source = _checkpoint(tmp_path, preset)
    export([source], tmp_path / "out", fmt)
    eager, _ = ckpt.load_model(source)
    exported, checkpoint = load_for_inference(tmp_path / "out", torch.device("cpu"))
    assert checkpoint.export["format"] == fmt
    src = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 3], [12, 13, 14, 3, 0, 0, 0, 0], [15, 3, 0, 0, 0, 0, 0, 0]])
    enc_e, mask_e = eager.encode(src)
    enc_x, mask_x = exported.encode(src)
    assert torch.equal(mask_e, mask_x) and (enc_e - enc_x).abs().max() < 1e-4
    cache_e = cache_x = None
    tokens = torch.full((3, 1), 2)
    for step in range(6):  # several steps, so the caches grow past the traced length
        logits_e, cache_e = eager.decode_step(tokens, enc_e, mask_e, cache_e)
        logits_x, cache_x = exported.decode_step(tokens, enc_x, mask_x, cache_x)
        assert (logits_e - logits_x).abs().max() < 1e-4, f"step {step}"
        tokens = logits_e[:, -1].argmax(-1, keepdim=True)
        if step == 2:  # beam search reorders rows of every state tensor
            index = torch.tensor([2, 0, 0])
            cache_e, cache_x = cache_e.reorder(index), cache_x.reorder(index)
            enc_e, mask_e, enc_x, mask_x = enc_e[index], mask_e[index], enc_x[index], mask_x[index]
            tokens = tokens[index]


def _translate(model: Path, text: str) -> list[str]:
    """Translations with scores; an eager checkpoint decodes exactly (fp32), as its fp32 export does."""
    result = CliRunner().invoke(app, ["translate", "-m", str(model), "--device", "cpu", "--scores", "--beam", "3",
                                      "--precision", "fp32"], input=text)
    assert result.exit_code == 0, result.stderr
    return result.stdout.splitlines()


@pytest.mark.parametrize("fmt", FORMATS)
def test_translate_through_an_export_equals_eager(trained_run: Path, tmp_path: Path, fmt: str) -> None:
    text = "".join(de + "\n" for de, _ in make_pairs(12, seed=5)) + "\n"
    result = CliRunner().invoke(app, ["export", str(trained_run), "--format", fmt, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.stderr
    eager, exported = _translate(trained_run / "checkpoint_last", text), _translate(tmp_path / "out", text)
    assert len(eager) == 13 and eager[-1] == exported[-1] == ""  # the blank line stays blank
    assert [line.split("\t")[-1] for line in exported] == [line.split("\t")[-1] for line in eager]
    for a, b in zip(eager[:-1], exported[:-1]):
        assert abs(float(a.split("\t")[0]) - float(b.split("\t")[0])) < 1e-3


def test_int8_and_fp16_are_smaller_and_still_translate(trained_run: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    reports = {}
    for name, flags in (("int8", ["--quantize", "int8"]), ("fp16", ["--fp16", "--format", "checkpoint"])):
        result = runner.invoke(app, ["export", str(trained_run), "--out", str(tmp_path / name), *flags])
        assert result.exit_code == 0, result.stderr
        reports[name] = result.stderr
        lines = _translate(tmp_path / name, "Der mann läuft.\n\nEin hund.\n")
        assert len(lines) == 3 and lines[1] == "" and all(line.split("\t")[1] for line in (lines[0], lines[2]))
    assert "smaller" in reports["int8"] and (tmp_path / "fp16" / "model.safetensors").stat().st_size < \
        (trained_run / "checkpoint_last" / "model.safetensors").stat().st_size * 0.6


def test_average_of_a_run_dir(trained_run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["export", str(trained_run), "--average", "2", "--format", "checkpoint", "--out", str(tmp_path / "avg")])
    assert result.exit_code == 0, result.stderr
    newest = sorted(trained_run.glob("checkpoint_u*"))[-2:]
    averaged, _ = ckpt.load_model(tmp_path / "avg")
    models = [ckpt.load_model(p)[0] for p in newest]
    for name, value in averaged.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (models[0].state_dict()[name] + models[1].state_dict()[name]) / 2)


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["{tmp}"], r"is not a convtrans checkpoint"),
        (["{run}", "--format", "tflite"], r"unknown --format 'tflite'"),
        (["{run}", "--out", "{exists}"], r"already exists; use --force"),
        (["{run}", "--quantize", "int4"], r"unknown --quantize 'int4'"),
        (["{run}", "--average", "99"], r"holds only \d+ numbered checkpoints"),
    ],
)
def test_bad_input_gives_one_line_error(trained_run: Path, tmp_path: Path, args, pattern) -> None:
    import re

    (tmp_path / "exists").mkdir()
    argv = [a.format(tmp=tmp_path, run=trained_run, exists=tmp_path / "exists") for a in args]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "new")]
    result = CliRunner().invoke(app, ["export", *argv])
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert re.search(pattern, result.stderr), result.stderr


def test_bench_decode_times_models_side_by_side(trained_run: Path, tmp_path: Path) -> None:
    import json

    src = tmp_path / "in.de"
    src.write_text("".join(de + "\n" for de, _ in make_pairs(6, seed=7)))
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", "decode", "-i", str(src), "-m", str(trained_run / "checkpoint_last"),
                                      "-m", str(trained_run / "checkpoint_best"), "--beams", "1,2", "--batch-sizes", "1,4",
                                      "--json-out", str(out)])
    assert result.exit_code == 0, result.stderr
    rows = json.loads(out.read_text())
    assert len(rows) == 2 * 2 * 2 and all(r["sentences"] == 6 and r["sentences_per_s"] > 0 for r in rows)
    assert "sentences/s" in result.stdout


def test_bench_decode_output_length_forces_every_output_to_that_many_subwords(trained_run: Path, tmp_path: Path) -> None:
    import json

    src = tmp_path / "in.de"
    src.write_text("".join(de + "\n" for de, _ in make_pairs(6, seed=7)))
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", "decode", "-i", str(src), "-m", str(trained_run / "checkpoint_last"),
                                      "--beams", "1,3", "--batch-sizes", "4", "--output-length", "7",
                                      "--json-out", str(out)])
    assert result.exit_code == 0, result.stderr
    rows = json.loads(out.read_text())
    assert len(rows) == 2
    for row in rows:  # 6 outputs of 7 subwords + EOS each, whatever the model would have written
        assert row["output_length"] == 7
        assert round(row["tokens_per_s"] * row["seconds"]) == 6 * (7 + 1)


def test_bench_decode_times_each_precision_and_refuses_an_unknown_one(trained_run: Path, tmp_path: Path) -> None:
    import json

    src = tmp_path / "in.de"
    src.write_text("".join(de + "\n" for de, _ in make_pairs(4, seed=7)))
    out = tmp_path / "bench.json"
    model = str(trained_run / "checkpoint_last")
    result = CliRunner().invoke(app, ["bench", "decode", "-i", str(src), "-m", model, "--beams", "2", "--batch-sizes", "4",
                                      "--precision", "auto,fp32", "--json-out", str(out)])
    assert result.exit_code == 0, result.stderr
    rows = json.loads(out.read_text())
    assert [(r["model"], r["precision"]) for r in rows] == [(f"{model} (auto)", "auto"), (f"{model} (fp32)", "fp32")]
    bad = CliRunner().invoke(app, ["bench", "decode", "-i", str(src), "-m", model, "--precision", "fp8"])
    assert bad.exit_code == 1 and "unknown --precision" in bad.stderr
