"""Corpus metrics through the reference libraries: sacrebleu (BLEU, chrF, TER) and rouge-score.

Nothing here re-implements a metric; this module only picks options, collects signatures and
formats results, so scores equal what the libraries report on the same text. Paired bootstrap
resampling for BLEU/chrF/TER is sacrebleu's own; for ROUGE it follows the same procedure
(`sacrebleu.significance._paired_bs_test`) on per-segment F1, since rouge-score has none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from convtrans.errors import UserError

METRICS = ("bleu", "chrf", "ter", "rouge")
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
BOOTSTRAP_SEED = 12345  # sacrebleu's default SACREBLEU_SEED


@dataclass(frozen=True)
class ScoreOptions:
    metrics: tuple[str, ...] = ("bleu", "chrf")
    tokenize: str | None = None  # sacrebleu tokenizer; None = its default (13a, or zh/ja-mecab by language)
    lowercase: bool = False
    chrf_word_order: int = 0  # 2 gives chrF++
    ter_case_sensitive: bool = False  # sacrebleu's TER default is case-insensitive
    rouge_stemmer: bool = False
    bootstrap_samples: int = 1000

    def validate(self) -> None:
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            raise UserError(f"unknown metric {', '.join(unknown) or '(none)'}; choose from {', '.join(METRICS)}")
        if self.tokenize is not None:
            from sacrebleu.metrics.bleu import _TOKENIZERS

            if self.tokenize not in _TOKENIZERS:
                raise UserError(f"unknown --tokenize {self.tokenize!r}; choose from {', '.join(_TOKENIZERS)}")
            check_tokenizer_available(self.tokenize)
        if self.bootstrap_samples < 1:
            raise UserError("--bootstrap-samples must be positive")


# sacrebleu tokenizers that need an optional extra of sacrebleu's
TOKENIZER_EXTRAS = {"ja-mecab": "sacrebleu[ja]", "ko-mecab": "sacrebleu[ko]"}


def check_tokenizer_available(name: str) -> None:
    """Refuse a sacrebleu tokenizer that would download a model or lacks its extra, in one line.

    The SentencePiece tokenizers (spm, flores101, flores200, spBLEU-1K) download their model on
    first use; convtrans never touches the network at run time, so they work only once the model
    is in sacrebleu's cache folder. The MeCab tokenizers need packages sacrebleu leaves optional.
    """
    import os

    from sacrebleu.tokenizers import tokenizer_spm
    from sacrebleu.utils import SACREBLEU_DIR

    if name in tokenizer_spm.SPM_MODELS:
        url = tokenizer_spm.SPM_MODELS[name]["url"]
        model = os.path.join(SACREBLEU_DIR, "models", os.path.basename(url))
        if not os.path.isfile(model):
            raise UserError(f"--tokenize {name} needs sacrebleu's SentencePiece model {model}, which is not there; "
                            f"convtrans does not download at run time: fetch {url} to that path first")
    elif name in TOKENIZER_EXTRAS:
        from sacrebleu.metrics.bleu import _get_tokenizer

        try:
            _get_tokenizer(name)()
        except (ImportError, RuntimeError):
            raise UserError(f"--tokenize {name} needs extra packages: pip install '{TOKENIZER_EXTRAS[name]}'") from None


@dataclass
class MetricResult:
    """One corpus score; `details` holds the metric's own breakdown (n-gram precisions, P/R, ...)."""

    name: str
    score: float
    signature: str = ""
    text: str = ""  # the library's own one-line rendering, e.g. "BLEU = 34.2 67.1/41.0/..."
    details: dict = field(default_factory=dict)


@dataclass
class Comparison:
    """Paired bootstrap of a system against a baseline for one metric."""

    name: str
    baseline: float
    system: float
    system_mean: float
    system_ci: float  # half-width of the 95% interval around system_mean
    p_value: float

    def __post_init__(self) -> None:
        # sacrebleu's test centres the resampled |differences| and counts those strictly above the
        # observed one, so two equal scores give p = 1/(n+1) ("significant"). Equal scores are no
        # evidence of a difference: report p = 1.
        if self.system == self.baseline:
            self.p_value = 1.0

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05


def check_lengths(hyps: Sequence[str], refs: Sequence[Sequence[str]], names: Sequence[str]) -> None:
    """Refuse hypothesis/reference streams of different lengths, naming the files."""
    for name, ref in zip(names[1:], refs):
        if len(ref) != len(hyps):
            raise UserError(f"line counts differ: {names[0]} has {len(hyps)} lines, {name} has {len(ref)}")
    if not hyps:
        raise UserError(f"nothing to score: {names[0]} is empty")


def _sacrebleu_metrics(opts: ScoreOptions) -> dict[str, Any]:
    """The sacrebleu metric objects for the requested metrics, keyed by our metric name."""
    from sacrebleu.metrics import BLEU, CHRF, TER

    metrics: dict[str, Any] = {}
    if "bleu" in opts.metrics:
        metrics["bleu"] = BLEU(tokenize=opts.tokenize, lowercase=opts.lowercase)
    if "chrf" in opts.metrics:
        metrics["chrf"] = CHRF(word_order=opts.chrf_word_order, lowercase=opts.lowercase)
    if "ter" in opts.metrics:
        metrics["ter"] = TER(case_sensitive=opts.ter_case_sensitive)
    return metrics


def _rouge_segments(hyps: Sequence[str], refs: Sequence[Sequence[str]], stemmer: bool) -> dict[str, np.ndarray]:
    """Per-segment ROUGE (P, R, F) for each type, the best reference by F as rouge-score picks it."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=stemmer)
    out = {t: np.zeros((len(hyps), 3)) for t in ROUGE_TYPES}
    for i, hyp in enumerate(hyps):
        scores = scorer.score_multi([ref[i] for ref in refs], hyp)
        for t in ROUGE_TYPES:
            out[t][i] = (scores[t].precision, scores[t].recall, scores[t].fmeasure)
    return out


def _rouge_name(rouge_type: str) -> str:
    return {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "rougeLsum": "ROUGE-Lsum"}[rouge_type]


def score(hyps: Sequence[str], refs: Sequence[Sequence[str]], opts: ScoreOptions) -> list[MetricResult]:
    """Score hypotheses against one or more reference streams (`refs[k][i]` is ref k of line i)."""
    opts.validate()
    results = []
    for key, metric in _sacrebleu_metrics(opts).items():
        corpus = metric.corpus_score(list(hyps), [list(r) for r in refs])
        details = {}
        if key == "bleu":
            details = {"precisions": corpus.precisions, "bp": corpus.bp, "ratio": corpus.ratio,
                       "sys_len": corpus.sys_len, "ref_len": corpus.ref_len}
        results.append(MetricResult(corpus.name, corpus.score, str(metric.get_signature()), str(corpus), details))
    if "rouge" in opts.metrics:
        segments = _rouge_segments(hyps, refs, opts.rouge_stemmer)
        for rouge_type, prf in segments.items():
            p, r, f = (100 * prf.mean(axis=0)).tolist()
            name = _rouge_name(rouge_type)
            signature = f"rouge-score|stemmer:{'yes' if opts.rouge_stemmer else 'no'}|nrefs:{len(refs)}|agg:mean"
            results.append(MetricResult(name, f, signature, f"{name} = {f:.2f} (P = {p:.2f} R = {r:.2f})",
                                        {"precision": p, "recall": r, "fmeasure": f}))
    return results


def compare(
    hyps: Sequence[str], baseline: Sequence[str], refs: Sequence[Sequence[str]], opts: ScoreOptions
) -> list[Comparison]:
    """Paired bootstrap resampling of `hyps` against `baseline` for every requested metric."""
    from sacrebleu.significance import PairedTest

    opts.validate()
    comparisons = []
    metrics = _sacrebleu_metrics(opts)
    if metrics:
        named = {m.__class__.__name__: m for m in metrics.values()}
        test = PairedTest([("baseline", list(baseline)), ("system", list(hyps))], named,
                          [list(r) for r in refs], test_type="bs", n_samples=opts.bootstrap_samples)
        _, table = test()
        for name, column in table.items():
            if name == "System":
                continue
            base, system = cast(list[Any], column)  # the table's metric columns hold Results
            comparisons.append(Comparison(name, float(base.score), float(system.score), float(system.mean),
                                          float(system.ci), float(system.p_value)))
    if "rouge" in opts.metrics:
        rng = np.random.default_rng(BOOTSTRAP_SEED)
        idxs = rng.choice(len(hyps), size=(opts.bootstrap_samples, len(hyps)), replace=True)
        sys_f = _rouge_segments(hyps, refs, opts.rouge_stemmer)
        base_f = _rouge_segments(baseline, refs, opts.rouge_stemmer)
        for rouge_type in ROUGE_TYPES:
            sys_seg, base_seg = 100 * sys_f[rouge_type][:, 2], 100 * base_f[rouge_type][:, 2]
            comparisons.append(_paired_bootstrap(_rouge_name(rouge_type), sys_seg, base_seg, idxs))
    return comparisons


def _paired_bootstrap(name: str, sys_seg: np.ndarray, base_seg: np.ndarray, idxs: np.ndarray) -> Comparison:
    """sacrebleu's paired bootstrap test (its CI and p-value helpers) for a mean of segment scores."""
    from sacrebleu.significance import _compute_p_value, estimate_ci

    sys_score, base_score = float(sys_seg.mean()), float(base_seg.mean())
    sys_samples, base_samples = sys_seg[idxs].mean(axis=1), base_seg[idxs].mean(axis=1)
    sys_mean, sys_ci = estimate_ci(sys_samples)
    diffs = np.abs(sys_samples - base_samples)
    p_value = _compute_p_value(diffs - diffs.mean(), abs(sys_score - base_score))
    return Comparison(name, base_score, sys_score, float(sys_mean), float(sys_ci), float(p_value))
