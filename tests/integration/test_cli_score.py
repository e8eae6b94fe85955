import json
import random
import re
from pathlib import Path

import pytest
import sacrebleu
from rouge_score import rouge_scorer
from typer.testing import CliRunner

from convtrans.cli import app
from tests.conftest import SHARED_DATA, make_pairs

pytestmark = pytest.mark.integration


def _degrade(lines: list[str], rate: float, seed: int) -> list[str]:
    """A fake system output: drop or swap words at `rate`."""
    rng = random.Random(seed)
    out = []
    for line in lines:
        words = [w for w in line.split() if rng.random() > rate]
        if len(words) > 2 and rng.random() < rate:
            i = rng.randrange(len(words) - 1)
            words[i], words[i + 1] = words[i + 1], words[i]
        out.append(" ".join(words))
    return out


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    refs = [en for _, en in make_pairs(200, seed=11)]
    ref2 = [line.replace("The", "A") for line in refs]
    paths = {"ref": refs, "ref2": ref2, "good": _degrade(refs, 0.1, 1), "bad": _degrade(refs, 0.4, 2)}
    for name, lines in paths.items():
        (tmp_path / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return {name: tmp_path / f"{name}.txt" for name in paths}


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _json(*args: str, stdin: str | None = None) -> dict:
    result = CliRunner().invoke(app, ["score", *args, "--json"], input=stdin)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_equals_sacrebleu_api_with_signatures(files) -> None:
    out = _json(str(files["good"]), str(files["ref"]), "-m", "bleu,chrf,ter")
    hyp, refs = _lines(files["good"]), [_lines(files["ref"])]
    expected = {"BLEU": sacrebleu.metrics.BLEU(), "chrF2": sacrebleu.metrics.CHRF(), "TER": sacrebleu.metrics.TER()}
    assert [s["name"] for s in out["scores"]] == list(expected)
    for result, (name, metric) in zip(out["scores"], expected.items()):
        assert result["score"] == metric.corpus_score(hyp, refs).score
        assert result["signature"] == str(metric.get_signature())


def test_options_and_multiple_references_pass_through(files) -> None:
    args = [str(files["good"]), str(files["ref"]), str(files["ref2"])]
    out = _json(*args, "--tokenize", "char", "--lowercase", "--chrf-word-order", "2", "-m", "bleu,chrf,ter",
                "--ter-case-sensitive")
    hyp, refs = _lines(files["good"]), [_lines(files["ref"]), _lines(files["ref2"])]
    bleu = sacrebleu.metrics.BLEU(tokenize="char", lowercase=True)
    chrf = sacrebleu.metrics.CHRF(word_order=2, lowercase=True)
    ter = sacrebleu.metrics.TER(case_sensitive=True)
    assert [s["score"] for s in out["scores"]] == [m.corpus_score(hyp, refs).score for m in (bleu, chrf, ter)]
    assert "nrefs:2" in out["scores"][0]["signature"] and "tok:char" in out["scores"][0]["signature"]
    assert out["scores"][1]["name"] == "chrF2++"


def test_rouge_equals_rouge_score(files) -> None:
    out = _json(str(files["bad"]), str(files["ref"]), str(files["ref2"]), "-m", "rouge", "--rouge-stemmer")
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    per_line = [scorer.score_multi([r1, r2], h) for h, r1, r2 in
                zip(_lines(files["bad"]), _lines(files["ref"]), _lines(files["ref2"]))]
    for result, key in zip(out["scores"], ["rouge1", "rouge2", "rougeL", "rougeLsum"]):
        expected = 100 * sum(s[key].fmeasure for s in per_line) / len(per_line)
        assert result["score"] == pytest.approx(expected, abs=1e-9)
        assert result["details"]["recall"] == pytest.approx(100 * sum(s[key].recall for s in per_line) / len(per_line))


def test_stdin_and_human_output(files) -> None:
    result = CliRunner().invoke(app, ["score", "-", str(files["ref"])], input=files["good"].read_text())
    assert result.exit_code == 0, result.stderr
    bleu = sacrebleu.metrics.BLEU().corpus_score(_lines(files["good"]), [_lines(files["ref"])])
    assert result.stdout.splitlines()[0] == str(bleu)
    assert re.match(r"  signature: nrefs:1\|case:mixed\|eff:no\|tok:13a", result.stdout.splitlines()[1])


def test_paired_bootstrap_against_baseline(files) -> None:
    out = _json(str(files["good"]), str(files["ref"]), "--baseline", str(files["bad"]), "-m", "bleu,chrf,rouge",
                "--bootstrap-samples", "200")
    by_name = {c["name"]: c for c in out["comparison"]}
    assert set(by_name) >= {"BLEU", "chrF2", "ROUGE-1", "ROUGE-L"}
    for comparison in by_name.values():
        assert comparison["system"] > comparison["baseline"] and comparison["significant"]
        assert comparison["p_value"] == pytest.approx(1 / 201)
    # sacrebleu's own paired test gives the same BLEU p-value and CI
    from sacrebleu.significance import PairedTest

    test = PairedTest([("b", _lines(files["bad"])), ("s", _lines(files["good"]))], {"BLEU": sacrebleu.metrics.BLEU()},
                      [_lines(files["ref"])], test_type="bs", n_samples=200)
    _, table = test()
    assert by_name["BLEU"]["p_value"] == table["BLEU"][1].p_value
    assert by_name["BLEU"]["system_ci"] == table["BLEU"][1].ci
    same = _json(str(files["good"]), str(files["ref"]), "--baseline", str(files["good"]), "-m", "rouge",
                 "--bootstrap-samples", "100")
    assert all(not c["significant"] and c["p_value"] == 1.0 for c in same["comparison"])


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["good", "short"], r"line counts differ: .*good\.txt has 200 lines, .*short\.txt has 3"),
        (["good", "ref", "--baseline", "short"], r"line counts differ: .*short\.txt has 3 lines, .*ref\.txt has 200"),
        (["good", "missing"], r"No such file or directory|file not found"),
        (["good", "ref", "-m", "bleu,meteor"], r"unknown metric meteor"),
        (["good", "ref", "--tokenize", "nope"], r"unknown --tokenize 'nope'"),
    ],
)
def test_bad_input_gives_one_line_error(files, tmp_path: Path, args, pattern) -> None:
    (tmp_path / "short.txt").write_text("a\nb\nc\n")
    argv = [str(tmp_path / f"{a}.txt") if a in ("good", "ref", "short", "missing") else a for a in args]
    result = CliRunner().invoke(app, ["score", *argv])
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert re.search(pattern, result.stderr), result.stderr


@pytest.mark.skipif(not (SHARED_DATA / "wmt14_en_de").is_dir(), reason="shared data not present")
def test_real_newstest2014_matches_sacrebleu(tmp_path: Path) -> None:
    ref = SHARED_DATA / "wmt14_en_de" / "newstest2014.de.gz"
    import gzip

    refs = gzip.decompress(ref.read_bytes()).decode().splitlines()[:1000]  # TER is slow; 1,000 real lines
    ref = tmp_path / "ref.de"
    ref.write_text("\n".join(refs) + "\n")
    hyp = tmp_path / "hyp.de"
    hyp.write_text("\n".join(_degrade(refs, 0.2, 3)) + "\n")
    out = _json(str(hyp), str(ref), "-m", "bleu,chrf,ter")
    hyps = _lines(hyp)
    for result, metric in zip(out["scores"], (sacrebleu.metrics.BLEU(), sacrebleu.metrics.CHRF(), sacrebleu.metrics.TER())):
        assert result["score"] == metric.corpus_score(hyps, [refs]).score
