"""`convtrans translate` / `summarize` on a tiny model trained inside the test run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convtrans.cli import app
from tests.conftest import make_pairs

pytestmark = pytest.mark.integration


def _translate(model_dir: Path, text: str, *args: str):
    return CliRunner().invoke(app, ["translate", "-m", str(model_dir), "--device", "cpu", *args], input=text)


def test_line_n_in_is_line_n_out(model_dir: Path) -> None:
    lines = ["Der mann läuft.", "", "   ", "Ein hund spielt im park.", "", "Die katze sitzt auf dem ball."]
    result = _translate(model_dir, "\n".join(lines) + "\n")
    assert result.exit_code == 0, result.stderr
    out = result.stdout.split("\n")[:-1]
    assert len(out) == len(lines)
    assert [o == "" for o in out] == [line.strip() == "" for line in lines]


def test_files_scores_and_nbest(model_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.de"
    src.write_text("Der mann läuft.\nEin hund.\n")
    out = tmp_path / "out.en"
    assert _translate(model_dir, "", "-i", str(src), "-o", str(out)).exit_code == 0
    plain = out.read_text().splitlines()
    assert len(plain) == 2 and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    scored = _translate(model_dir, src.read_text(), "--scores").stdout.splitlines()
    assert [line.split("\t", 1)[1] for line in scored] == plain and all(float(l.split("\t")[0]) <= 0 for l in scored)
    nbest = _translate(model_dir, src.read_text(), "--n-best", "3", "--beam", "4").stdout.splitlines()
    assert len(nbest) == 6
    assert [line.split(" ||| ")[0] for line in nbest] == ["0", "0", "0", "1", "1", "1"]
    assert nbest[0].split(" ||| ")[1] == plain[0]
    first_scores = [float(line.split(" ||| ")[2]) for line in nbest[:3]]
    assert first_scores == sorted(first_scores, reverse=True)


def test_overlong_lines_are_truncated_with_a_warning(model_dir: Path) -> None:
    long_line = " ".join(["Der mann läuft auf der straße im park."] * 60)
    result = _translate(model_dir, f"Ein hund.\n{long_line}\n")
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2
    match = re.search(r"warning: line 2 has ([\d,]+) subwords but the model reads at most ([\d,]+): "
                      r"the last ([\d,]+) were dropped", result.stderr)
    assert match, result.stderr
    length, limit, dropped = (int(g.replace(",", "")) for g in match.groups())
    config = json.loads((model_dir / "config.json").read_text())["model"]
    assert limit == config["max_source_positions"] - 1 and dropped == length - limit > 0


def test_interactive_pipe_answers_each_line_before_the_next_arrives(model_dir: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "convtrans", "translate", "-m", str(model_dir), "--device", "cpu"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    try:
        for sentence in ("Der mann läuft.", "Ein hund spielt."):
            proc.stdin.write(sentence + "\n")
            proc.stdin.flush()
            started = time.time()
            answer = proc.stdout.readline()  # blocks until this line's translation is flushed
            assert answer.endswith("\n") and time.time() - started < 60
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    assert proc.returncode == 0


def test_batch_and_stream_apis_agree(model_dir: Path) -> None:
    from convtrans.inference.translator import Translator

    translator = Translator(model_dir, device="cpu", batch_tokens=40)
    lines = [de for de, _ in make_pairs(25, seed=9)] + [""]
    batch = [r.text for r in translator.translate_batch(lines)]
    single = [translator.translate_batch([line])[0].text for line in lines]
    stream = [r.text for r in translator.translate_iterable(iter(lines), window=7)]
    assert batch == single == stream


@pytest.mark.parametrize(
    ("args", "stdin", "pattern"),
    [
        (["-m", "/nonexistent/model"], "x\n", r"no model at '/nonexistent/model'"),
        ([], b"ok\n\xff\xfe\n", r"-:2: invalid UTF-8"),
        (["--beam", "0"], "x\n", r"generate field beam: must be in \[1, 1024\]"),
        (["--beam", "50000"], "x\n", r"generate field beam: must be in \[1, 1024\] \(got 50000\)"),
        (["--max-len-b", "-5"], "x\n", r"generate field max_len_b: must be >= 0 \(got -5\)"),
    ],
)
def test_bad_input_gives_one_line_error(model_dir: Path, args, stdin, pattern) -> None:
    import re

    argv = ["translate", "--device", "cpu", *(args if args and args[0] == "-m" else ["-m", str(model_dir), *args])]
    result = CliRunner().invoke(app, argv, input=stdin)
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert re.search(pattern, result.stderr), result.stderr


def test_summarize_reads_documents_and_jsonl(model_dir: Path, tmp_path: Path) -> None:
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"doc": d}) + "\n" for d in ("Der mann läuft.", "Ein hund spielt im park.")))
    result = CliRunner().invoke(app, ["summarize", "-m", str(model_dir), "--device", "cpu", "-i", str(docs),
                                      "--jsonl-field", "doc", "--min-len", "2", "--no-repeat-ngram", "2"])
    assert result.exit_code == 0, result.stderr
    summaries = result.stdout.splitlines()
    assert len(summaries) == 2 and all(len(s.split()) >= 1 for s in summaries)
