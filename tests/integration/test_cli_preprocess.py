import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convtrans.cli import app

pytestmark = pytest.mark.integration


def _run(*args: str):
    return CliRunner().invoke(app, ["preprocess", *args])


def _args(raw: Path, dest: Path) -> list[str]:
    return ["-s", "de", "-t", "en", "--trainpref", str(raw / "train"), "--validpref", str(raw / "valid"),
            "--testpref", str(raw / "test"), "--destdir", str(dest), "--vocab-size", "64"]


def _assert_one_line_error(result, pattern: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    import re

    assert re.search(pattern, lines[0]), lines[0]


def test_preprocess_writes_data_dir_and_keeps_stdout_clean(corpus: Path, tmp_path: Path) -> None:
    result = _run(*_args(corpus, tmp_path / "bin"), "--moses", "--max-len", "100")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert "train: 400 of 400 pairs kept" in result.stderr
    manifest = json.loads((tmp_path / "bin" / "manifest.json").read_text())
    assert manifest["options"]["moses"] and manifest["options"]["max_len"] == 100
    assert set(manifest["splits"]) == {"train", "valid", "test"}


def test_multiple_valid_sets_are_numbered(corpus: Path, tmp_path: Path) -> None:
    args = _args(corpus, tmp_path / "bin")
    args[args.index("--validpref") + 1] = f"{corpus / 'valid'},{corpus / 'test'}"
    assert _run(*args).exit_code == 0
    assert (tmp_path / "bin" / "valid1.de.bin").is_file()


def test_jsonl_fields(jsonl_corpus: Path, tmp_path: Path) -> None:
    result = _run("--jsonl-fields", "dialogue,summary", "--trainpref", str(jsonl_corpus / "train"),
                  "--validpref", str(jsonl_corpus / "dev"), "--destdir", str(tmp_path / "bin"), "--vocab-size", "80")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "bin" / "valid.tgt.idx").is_file()


def test_pretext_builds_warm_up_pairs_with_a_given_subword_model(jsonl_corpus: Path, tmp_path: Path) -> None:
    common = ["--jsonl-fields", "dialogue,summary", "--trainpref", str(jsonl_corpus / "train"),
              "--validpref", str(jsonl_corpus / "dev"), "--vocab-size", "80"]
    assert _run(*common, "--destdir", str(tmp_path / "sum")).exit_code == 0
    result = _run(*common, "--destdir", str(tmp_path / "warm"), "--pretext", "principal",
                  "--spm-model", str(tmp_path / "sum" / "spm.model"))
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((tmp_path / "warm" / "manifest.json").read_text())
    assert manifest["options"]["pretext"] == "principal"
    assert manifest["splits"]["train"]["pairs"] == 3 * 200  # 2-turn dialogues: each turn alone and the whole
    assert (tmp_path / "warm" / "spm.model").read_bytes() == (tmp_path / "sum" / "spm.model").read_bytes()


@pytest.mark.parametrize(
    ("setup", "extra", "pattern"),
    [
        (lambda raw, d: (raw / "valid.en").write_text("x\n"), [], r"line counts differ: .*valid\.de has 40 lines, .*valid\.en has 1"),
        (lambda raw, d: (raw / "test.en").unlink(), [], r"file not found: .*test\.en"),
        (lambda raw, d: (raw / "valid.de").write_bytes(b"ok\n" * 39 + b"\xe9t\xe9\n"), [], r"valid\.de:40: invalid UTF-8"),
        (lambda raw, d: [(raw / f"valid.{x}").write_text("") for x in ("de", "en")], [], r"empty corpus"),
        (lambda raw, d: (d.mkdir(), (d / "notes.txt").write_text("keep")), [], r"not a convtrans data directory"),
        (lambda raw, d: None, ["--model-type", "word"], r"--model-type must be one of unigram, bpe"),
        (lambda raw, d: None, ["--jsonl-fields", "a"], r"--jsonl-fields needs two"),
        (lambda raw, d: None, ["--pretext", "lead"], r"--pretext must be one of principal"),
    ],
    ids=["mismatch", "missing", "utf8", "empty", "foreign-dir", "bad-option", "bad-fields", "bad-pretext"],
)
def test_bad_input_gives_one_line_error(corpus: Path, tmp_path: Path, setup, extra, pattern) -> None:
    dest = tmp_path / "bin"
    setup(corpus, dest)
    _assert_one_line_error(_run(*_args(corpus, dest), *extra), pattern)


def test_different_data_needs_force(corpus: Path, tmp_path: Path) -> None:
    dest = tmp_path / "bin"
    assert _run(*_args(corpus, dest)).exit_code == 0
    _assert_one_line_error(_run(*_args(corpus, dest), "--lowercase"), r"already holds different data; use --force")
    assert _run(*_args(corpus, dest), "--lowercase", "--force").exit_code == 0
    assert json.loads((dest / "manifest.json").read_text())["options"]["lowercase"] is True
