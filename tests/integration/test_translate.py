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

    argv = ["translate", "--device", "cpu", *(args if args and args[0] == "-m" else ["-m", str(model_dir), *args])]
    result = CliRunner().invoke(app, argv, input=stdin)
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert re.search(pattern, result.stderr), result.stderr


def test_summarize_reads_documents_and_jsonl(model_dir: Path, tmp_path: Path) -> None:
    """A JSON-lines field and plain lines summarize alike, through the same path as the API, and
    the length and repetition options hold."""
    from convtrans.inference.translator import Summarizer

    documents = ["Der mann läuft.", "Ein hund spielt im park."]
    records, plain = tmp_path / "docs.jsonl", tmp_path / "docs.txt"
    records.write_text("".join(json.dumps({"doc": d}) + "\n" for d in documents))
    plain.write_text("".join(d + "\n" for d in documents))
    options = ["summarize", "-m", str(model_dir), "--device", "cpu", "--min-len", "4", "--no-repeat-ngram", "2"]
    from_jsonl = CliRunner().invoke(app, [*options, "-i", str(records), "--jsonl-field", "doc"])
    from_lines = CliRunner().invoke(app, [*options, "-i", str(plain)])
    assert from_jsonl.exit_code == from_lines.exit_code == 0, from_jsonl.stderr + from_lines.stderr
    summaries = from_jsonl.stdout.splitlines()
    assert summaries == from_lines.stdout.splitlines() and len(summaries) == 2
    summarizer = Summarizer(model_dir, device="cpu")
    assert summaries == summarizer.summarize(documents, min_len=4, no_repeat_ngram=2)
    for result in summarizer.translate_batch(documents, summarizer.search_config(min_len=4, no_repeat_ngram=2)):
        bigrams = list(zip(result.tokens, result.tokens[1:]))
        assert len(result.tokens) >= 4 and len(bigrams) == len(set(bigrams))


def test_precision_option_picks_the_exact_or_the_int8_path(model_dir: Path) -> None:
    """--precision fp32 is the API's exact path (same texts and scores); the default decodes on
    int8 (the engine, or fbgemm without it) and stays close; an unknown precision is refused in one line before loading."""
    from convtrans.inference import int8
    from convtrans.inference.translator import Translator

    text = "Der mann läuft.\nEin hund spielt im park.\n"
    exact = _translate(model_dir, text, "--precision", "fp32", "--scores")
    assert exact.exit_code == 0, exact.stderr
    api = Translator(model_dir, device="cpu", precision="fp32").translate_batch(text.splitlines())
    assert exact.stdout.splitlines() == [f"{r.score:.4f}\t{r.text}" for r in api]
    default = _translate(model_dir, text, "--scores")
    assert default.exit_code == 0, default.stderr
    from convtrans import engine
    from convtrans.engine.runtime import EngineModel

    default_model = Translator(model_dir, device="cpu").model
    if engine.available():  # the compiled int8 engine (convtrans/engine)
        assert isinstance(default_model, EngineModel)
    elif int8.available():
        assert isinstance(default_model.model.output, int8.Int8Linear)
    for a, b in zip(default.stdout.splitlines(), exact.stdout.splitlines()):
        assert abs(float(a.split("\t")[0]) - float(b.split("\t")[0])) < 0.1
    bad = _translate(model_dir, text, "--precision", "int4")
    assert bad.exit_code == 1 and "unknown --precision 'int4'" in bad.stderr and "Traceback" not in bad.stderr
