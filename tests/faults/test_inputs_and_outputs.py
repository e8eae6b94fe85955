"""Fault matrix, inputs and outputs: the user's own files in a data directory (item 4), output file
modes and an output that is a directory (11), scoring tokenizers that would download or lack an
extra (12), option messages (13), truncation warnings (15), exit statuses (16), and the cases that
already worked (mismatched line counts, invalid UTF-8)."""

from __future__ import annotations

import importlib.util
import os
import re
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convtrans.cli import app
from tests.conftest import one_line_error, preprocess_args, run_cli

pytestmark = pytest.mark.integration


def test_preprocess_force_keeps_files_the_user_put_there(raw_corpus: Path, tmp_path: Path) -> None:
    dest = tmp_path / "bin"
    runner = CliRunner()
    assert runner.invoke(app, preprocess_args(raw_corpus, dest)).exit_code == 0
    (dest / "NOTES.txt").write_text("where this data came from\n")
    (dest / "scripts").mkdir()
    (dest / "scripts" / "fetch.sh").write_text("echo hi\n")
    result = runner.invoke(app, preprocess_args(raw_corpus, dest, "--vocab-size", "60", "--force"))
    assert result.exit_code == 0, result.stderr
    assert "kept 2 file(s) in" in result.stderr and "NOTES.txt, scripts" in result.stderr
    assert (dest / "NOTES.txt").read_text() == "where this data came from\n"
    assert (dest / "scripts" / "fetch.sh").read_text() == "echo hi\n"
    assert '"vocab_size": 60' in (dest / "manifest.json").read_text()


def test_preprocess_refuses_to_overwrite_a_user_file_with_an_output_name(raw_corpus: Path, tmp_path: Path) -> None:
    dest = tmp_path / "bin"
    assert CliRunner().invoke(app, preprocess_args(raw_corpus, dest)).exit_code == 0
    (dest / "test.de.bin").write_text("mine\n")  # not written by preprocess, but the next run would write it
    args = preprocess_args(raw_corpus, dest, "--testpref", str(raw_corpus / "valid"), "--force")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "holds test.de.bin, which preprocess did not write" in one_line_error(result.stderr)
    assert (dest / "test.de.bin").read_text() == "mine\n"


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_translate_output_mode_follows_the_umask(model_dir: Path, tmp_path: Path, umask: int) -> None:
    out = tmp_path / "out.en"
    previous = os.umask(umask)
    try:
        result = CliRunner().invoke(app, ["translate", "-m", str(model_dir), "--device", "cpu", "-o", str(out)],
                                    input="Ein hund.\n")
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask


def test_translate_output_keeps_an_existing_files_mode(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.en"
    out.write_text("old\n")
    out.chmod(0o640)
    result = CliRunner().invoke(app, ["translate", "-m", str(model_dir), "--device", "cpu", "-o", str(out)],
                                input="Ein hund.\n")
    assert result.exit_code == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o640 and out.read_text() != "old\n"


def test_translate_output_that_is_a_directory_fails_before_any_work(tmp_path: Path) -> None:
    """Checked before the model is even loaded: the model path here does not exist."""
    (tmp_path / "outdir").mkdir()
    result = CliRunner().invoke(app, ["translate", "-m", str(tmp_path / "no-model"), "-o", str(tmp_path / "outdir")],
                                input="Ein hund.\n")
    assert result.exit_code == 1
    assert one_line_error(result.stderr) == f"error: --output {tmp_path / 'outdir'} is a directory; give a file name"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outdir"] and not any((tmp_path / "outdir").iterdir())


def test_score_with_a_tokenizer_that_would_download(tmp_path: Path, monkeypatch) -> None:
    import sacrebleu.utils

    monkeypatch.setattr(sacrebleu.utils, "SACREBLEU_DIR", str(tmp_path / "sacrebleu-cache"))
    hyp = tmp_path / "hyp"
    hyp.write_text("a b c\n")
    result = CliRunner().invoke(app, ["score", str(hyp), str(hyp), "--tokenize", "flores200"])
    assert result.exit_code == 1
    line = one_line_error(result.stderr)
    assert "--tokenize flores200 needs sacrebleu's SentencePiece model" in line and "does not download" in line


@pytest.mark.skipif(importlib.util.find_spec("MeCab") is not None, reason="the Japanese extra is installed")
def test_score_with_a_tokenizer_whose_extra_is_missing(tmp_path: Path) -> None:
    hyp = tmp_path / "hyp"
    hyp.write_text("a b c\n")
    result = CliRunner().invoke(app, ["score", str(hyp), str(hyp), "--tokenize", "ja-mecab"])
    assert result.exit_code == 1
    assert one_line_error(result.stderr) == "error: --tokenize ja-mecab needs extra packages: pip install 'sacrebleu[ja]'"


@pytest.mark.parametrize(("option", "value", "field"), [("--max-len-b", "-5", "max_len_b"), ("--max-len-a", "-1", "max_len_a"),
                                                        ("--min-len", "-2", "min_len"), ("--top-k", "-1", "top_k")])
def test_option_errors_name_their_own_field(model_dir: Path, option: str, value: str, field: str) -> None:
    result = CliRunner().invoke(app, ["translate", "-m", str(model_dir), "--device", "cpu", option, value], input="x\n")
    assert result.exit_code == 1
    assert one_line_error(result.stderr).startswith(f"error: generate field {field}: ")


def test_truncation_warning_names_the_limit_and_what_was_dropped(model_dir: Path) -> None:
    """--no-split: a line over the limit loses its tail and says how much; split (the default),
    the same line's 200 sentences are each translated and nothing is dropped."""
    import json

    limit = json.loads((model_dir / "config.json").read_text())["model"]["max_source_positions"] - 1
    long_line = " ".join(["Der mann läuft auf der straße im park."] * 200)
    split = CliRunner().invoke(app, ["translate", "-m", str(model_dir), "--device", "cpu"], input=f"{long_line}\n")
    assert split.exit_code == 0 and "warning" not in split.stderr, split.stderr
    sentence = CliRunner().invoke(app, ["translate", "-m", str(model_dir), "--device", "cpu"],
                                  input="Der mann läuft auf der straße im park.\n").stdout.strip()
    assert split.stdout.strip() == " ".join([sentence] * 200)
    result = CliRunner().invoke(app, ["translate", "-m", str(model_dir), "--device", "cpu", "--no-split"],
                                input=f"Ein hund.\n{long_line}\n")
    assert result.exit_code == 0, result.stderr
    match = re.search(r"warning: line 2 has ([\d,]+) subwords but the model reads at most ([\d,]+): the last ([\d,]+) "
                      r"were dropped", result.stderr)
    assert match, result.stderr
    length, shown_limit, dropped = (int(g.replace(",", "")) for g in match.groups())
    assert shown_limit == limit and dropped == length - limit > 0


def test_usage_errors_exit_2_and_bad_input_exits_1(tmp_path: Path) -> None:
    usage = run_cli("translate", "--no-such-option")
    assert usage.returncode == 2 and "No such option" in usage.stderr
    hyp = tmp_path / "hyp"
    hyp.write_text("a\nb\n")
    ref = tmp_path / "ref"
    ref.write_text("a\n")
    bad = run_cli("score", str(hyp), str(ref))
    assert bad.returncode == 1
    assert one_line_error(bad.stderr) == f"error: line counts differ: {hyp} has 2 lines, {ref} has 1"


def test_preprocess_refuses_mismatched_line_counts(raw_corpus: Path, tmp_path: Path) -> None:
    """Known good."""
    for side, text in (("de", "a\nb\nc\n"), ("en", "a\nb\n")):
        (tmp_path / f"train.{side}").write_text(text)
    result = CliRunner().invoke(app, ["preprocess", "-s", "de", "-t", "en", "--trainpref", str(tmp_path / "train"),
                                      "--destdir", str(tmp_path / "bin")])
    assert result.exit_code == 1
    assert "line counts differ" in one_line_error(result.stderr) and not (tmp_path / "bin").exists()


def test_translate_refuses_invalid_utf8_naming_the_line(model_dir: Path) -> None:
    """Known good."""
    result = run_cli("translate", "-m", str(model_dir), "--device", "cpu", input=b"ok\n\xff\xfe\n")
    assert result.returncode == 1
    assert "-:2: invalid UTF-8" in one_line_error(result.stderr.decode())
