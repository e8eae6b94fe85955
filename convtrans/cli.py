"""The `convtrans` command line: one thin function per subcommand, options → library call.

Heavy libraries (torch, sentencepiece, sacrebleu) are imported inside the commands so that
`convtrans --help` stays fast. Errors in what the user gave (`UserError`, unreadable files)
become one line on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from convtrans.errors import UserError

app = typer.Typer(
    name="convtrans",
    help="Train and run LightConv, DynamicConv, Synthesizer, Lite Transformer and Transformer "
    "models for translation and summarization.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def friendly_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user-facing failures into `error: ...` on stderr and exit 1; Ctrl-C exits 130 and
    SIGTERM 143 after cleaning up (temporary files, locks); a closed stdout (`| head`) stops the
    command at once, silently, with 141 as it would for any Unix filter."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from convtrans.errors import StdoutClosed, Terminated, describe_os_error

        in_main_thread = threading.current_thread() is threading.main_thread()  # signal handlers live there
        previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
        try:
            return command(*args, **kwargs)
        except UserError as err:
            message = str(err)
        except (BrokenPipeError, StdoutClosed):
            _silence_stdout()
            raise typer.Exit(141) from None
        except OSError as err:
            message = describe_os_error(err)
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        except Terminated:
            typer.echo("terminated", err=True)
            raise typer.Exit(143) from None
        finally:
            if in_main_thread:
                signal.signal(signal.SIGTERM, previous)
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(1)

    return wrapper


def _raise_terminated(signum: int, frame: Any) -> None:  # noqa: ARG001 - signal handler signature
    from convtrans.errors import Terminated

    raise Terminated


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush into the closed pipe is quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a real file (a test runner's buffer)
        pass


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip()) if value else ()


@app.command()
@friendly_errors
def preprocess(
    destdir: Annotated[Path, typer.Option("--destdir", "-d", help="Output data directory.")],
    source_lang: Annotated[str | None, typer.Option("--source-lang", "-s", help="Source suffix, e.g. de.")] = None,
    target_lang: Annotated[str | None, typer.Option("--target-lang", "-t", help="Target suffix, e.g. en.")] = None,
    trainpref: Annotated[str | None, typer.Option(help="Train prefix: reads PREFIX.SRC and PREFIX.TGT (.gz too).")] = None,
    validpref: Annotated[str | None, typer.Option(help="Valid prefix(es), comma-separated.")] = None,
    testpref: Annotated[str | None, typer.Option(help="Test prefix(es), comma-separated.")] = None,
    jsonl_fields: Annotated[
        str | None, typer.Option(help="JSON-lines input PREFIX.jsonl: source and target field, e.g. dialogue,summary.")
    ] = None,
    vocab_size: Annotated[int, typer.Option(help="Subword vocabulary size (per model).")] = 8000,
    model_type: Annotated[str, typer.Option(help="Sentencepiece model type: unigram or bpe.")] = "unigram",
    character_coverage: Annotated[float, typer.Option(help="Sentencepiece character coverage.")] = 1.0,
    separate_vocab: Annotated[bool, typer.Option(help="One subword model per side instead of a joint one.")] = False,
    spm_model: Annotated[
        list[Path] | None, typer.Option(help="Reuse a sentencepiece model (give twice: source, target).")
    ] = None,
    moses: Annotated[bool, typer.Option(help="Moses punctuation normalization and tokenization first.")] = False,
    lowercase: Annotated[bool, typer.Option(help="Lowercase all text.")] = False,
    max_len: Annotated[int | None, typer.Option(help="Train only: drop pairs with a side longer than this.")] = None,
    max_len_ratio: Annotated[float | None, typer.Option(help="Train only: drop pairs with a longer length ratio.")] = None,
    pretext: Annotated[
        str | None, typer.Option(help="Warm-up data instead of the pairs: 'principal' (copy each document's salient units; targets are not used).")
    ] = None,
    workers: Annotated[int, typer.Option(help="Threads for encoding.")] = min(4, os.cpu_count() or 1),
    force: Annotated[bool, typer.Option(help="Replace a data directory that holds different data.")] = False,
) -> None:
    """Learn subword models and binarize a parallel corpus into a data directory."""
    from convtrans.console import progress_callback, stderr
    from convtrans.data.preprocess import PreprocessOptions
    from convtrans.data.preprocess import preprocess as run_preprocess

    fields = _csv(jsonl_fields)
    if jsonl_fields is not None and len(fields) != 2:
        raise UserError(f"--jsonl-fields needs two comma-separated names (source,target), got {jsonl_fields!r}")
    if not fields and (source_lang is None or target_lang is None):
        raise UserError("--source-lang and --target-lang are required (or --jsonl-fields for JSON lines)")
    opts = PreprocessOptions(
        source_lang=source_lang or "src", target_lang=target_lang or "tgt", trainpref=trainpref,
        validpref=_csv(validpref), testpref=_csv(testpref), jsonl_fields=(fields[0], fields[1]) if fields else None,
        vocab_size=vocab_size, model_type=model_type, character_coverage=character_coverage,
        separate_vocab=separate_vocab, spm_models=tuple(str(p) for p in spm_model or ()), moses=moses,
        lowercase=lowercase, max_len=max_len, max_len_ratio=max_len_ratio, pretext=pretext,
    )
    started = time.perf_counter()
    with progress_callback() as progress:
        reports = run_preprocess(opts, destdir, force=force, threads=workers, progress=progress,
                                 notify=lambda message: stderr.print(message))
    for r in reports:
        dropped = ", ".join(f"{v} {k}" for k, v in r.dropped.items() if v) or "none"
        tokens = " / ".join(f"{side} {stats['tokens']:,}" for side, stats in r.sides.items())
        stderr.print(f"{r.name}: {r.pairs_out:,} of {r.pairs_in:,} pairs kept (dropped: {dropped}); "
                     f"tokens {tokens}")
    stderr.print(f"wrote {destdir} in {time.perf_counter() - started:.1f}s")


@app.command()
@friendly_errors
def score(
    hyp: Annotated[Path, typer.Argument(help="Hypothesis file (.gz ok), or - for stdin.")],
    refs: Annotated[list[Path], typer.Argument(help="Reference file(s), line-parallel to HYP.")],
    metrics: Annotated[str, typer.Option("--metrics", "-m", help="Comma-separated: bleu,chrf,ter,rouge.")] = "bleu,chrf",
    tokenize: Annotated[str | None, typer.Option("--tokenize", "-tok", help="sacrebleu tokenizer (13a, intl, zh, char, none, ...).")] = None,
    lowercase: Annotated[bool, typer.Option("--lowercase", "-lc", help="Case-insensitive BLEU and chrF.")] = False,
    chrf_word_order: Annotated[int, typer.Option(help="chrF word n-gram order (2 = chrF++).")] = 0,
    ter_case_sensitive: Annotated[bool, typer.Option(help="Case-sensitive TER (sacrebleu's default is not).")] = False,
    rouge_stemmer: Annotated[bool, typer.Option(help="Porter stemming in ROUGE.")] = False,
    baseline: Annotated[Path | None, typer.Option(help="Baseline hypotheses: paired bootstrap test against them.")] = None,
    bootstrap_samples: Annotated[int, typer.Option(help="Resamples for --baseline.")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Score hypotheses against references: BLEU, chrF, TER (sacrebleu) and ROUGE (rouge-score)."""
    from dataclasses import asdict

    from convtrans.data.corpus import read_lines
    from convtrans.scoring import ScoreOptions, check_lengths, compare
    from convtrans.scoring import score as run_score

    if [hyp, *refs, baseline].count(Path("-")) > 1:
        raise UserError("only one input can be read from stdin (-)")
    opts = ScoreOptions(metrics=_csv(metrics), tokenize=tokenize, lowercase=lowercase,
                        chrf_word_order=chrf_word_order,
                        ter_case_sensitive=ter_case_sensitive, rouge_stemmer=rouge_stemmer,
                        bootstrap_samples=bootstrap_samples)
    opts.validate()
    hyp_lines = list(read_lines(hyp))
    ref_lines = [list(read_lines(ref)) for ref in refs]
    check_lengths(hyp_lines, ref_lines, [str(hyp), *map(str, refs)])
    results = run_score(hyp_lines, ref_lines, opts)
    comparisons = []
    if baseline is not None:
        base_lines = list(read_lines(baseline))
        check_lengths(base_lines, ref_lines, [str(baseline), *map(str, refs)])
        comparisons = compare(hyp_lines, base_lines, ref_lines, opts)
    if as_json:
        payload: dict[str, Any] = {"hyp": str(hyp), "refs": [str(r) for r in refs], "scores": [asdict(r) for r in results]}
        if baseline is not None:
            payload["baseline"] = str(baseline)
            payload["comparison"] = [{**asdict(c), "significant": c.significant} for c in comparisons]
        typer.echo(json.dumps(payload, indent=2))
        return
    for r in results:
        typer.echo(r.text)
        typer.echo(f"  signature: {r.signature}")
    if comparisons:
        typer.echo(f"paired bootstrap vs {baseline} ({bootstrap_samples} resamples, 95% CI):")
        for c in comparisons:
            verdict = "significant" if c.significant else "not significant"
            typer.echo(f"  {c.name}: {c.system:.2f} (mean {c.system_mean:.2f} ± {c.system_ci:.2f}) "
                       f"vs baseline {c.baseline:.2f}, p = {c.p_value:.4f}: {verdict}")


@app.command()
@friendly_errors
def train(
    data_dir: Annotated[Path | None, typer.Argument(help="Preprocessed data directory.")] = None,
    arch: Annotated[str | None, typer.Option("--arch", "-a", help="Preset name (see --list-archs) or .toml file.")] = None,
    save_dir: Annotated[Path | None, typer.Option("--save-dir", "-o", help="Run directory (resumes from its newest intact checkpoint).")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="TOML with arch, [train], [model], [generate] tables.")] = None,
    init_from: Annotated[Path | None, typer.Option(help="Start a new run from this checkpoint's weights and architecture (fresh optimizer and schedule; same vocabulary).")] = None,
    restart: Annotated[bool, typer.Option("--restart", help="Start over in a run directory that has checkpoints (they are moved into a set-aside folder, not deleted).")] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Model field override key=value (repeatable).")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Tokens per batch (with padding).")] = None,
    update_freq: Annotated[int | None, typer.Option(help="Batches per update (gradient accumulation).")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    lr_scheduler: Annotated[str | None, typer.Option(help="inverse_sqrt, cosine or fixed.")] = None,
    warmup_updates: Annotated[int | None, typer.Option(help="Linear warmup updates.")] = None,
    max_update: Annotated[int | None, typer.Option(help="Stop after this many updates.")] = None,
    max_epoch: Annotated[int | None, typer.Option(help="Stop after this many epochs.")] = None,
    stop_time_hours: Annotated[float | None, typer.Option(help="Stop after this much training time (hours).")] = None,
    label_smoothing: Annotated[float | None, typer.Option(help="Label smoothing epsilon.")] = None,
    dropout: Annotated[float | None, typer.Option(help="Model dropout.")] = None,
    attention_dropout: Annotated[float | None, typer.Option(help="Attention dropout.")] = None,
    weight_dropout: Annotated[float | None, typer.Option(help="DropConnect on conv kernels.")] = None,
    weight_decay: Annotated[float | None, typer.Option(help="Decoupled weight decay.")] = None,
    clip_norm: Annotated[float | None, typer.Option(help="Gradient clipping norm (0 = off).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    amp: Annotated[str | None, typer.Option(help="Mixed precision: off, bf16 or fp16 (loss-scaled).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    keep_last: Annotated[int | None, typer.Option(help="Numbered checkpoints to keep.")] = None,
    patience: Annotated[int | None, typer.Option(help="Stop after N validations without improvement.")] = None,
    validate_interval_updates: Annotated[int | None, typer.Option(help="Validate every N updates (0 = each epoch).")] = None,
    save_interval_updates: Annotated[int | None, typer.Option(help="Also save every N updates.")] = None,
    valid_bleu: Annotated[bool, typer.Option(help="Decode the valid split for BLEU (ROUGE on summaries).")] = True,
    valid_beam: Annotated[int | None, typer.Option(help="Beam for validation decoding (1 = greedy).")] = None,
    valid_max_sentences: Annotated[int | None, typer.Option(help="Decode at most N valid sentences.")] = None,
    log_interval: Annotated[int | None, typer.Option(help="Updates between metrics.jsonl lines.")] = None,
    list_archs: Annotated[bool, typer.Option("--list-archs", help="List the presets with parameters and Mult-Adds.")] = False,
    vocab_size: Annotated[int, typer.Option(help="--list-archs: vocabulary size of both sides.")] = 32768,
    src_vocab_size: Annotated[int | None, typer.Option(help="--list-archs: source vocabulary (default: --vocab-size).")] = None,
    tgt_vocab_size: Annotated[int | None, typer.Option(help="--list-archs: target vocabulary (default: --vocab-size).")] = None,
    sentence_len: Annotated[int, typer.Option(help="--list-archs: tokens per side for Mult-Adds.")] = 30,
) -> None:
    """Train a zoo model on a preprocessed data directory (`--list-archs` lists the presets).

    Multi-GPU / multi-node: `torchrun --nproc_per_node N -m convtrans train ...`.
    """
    if list_archs:
        _print_archs(src_vocab_size or vocab_size, tgt_vocab_size or vocab_size, sentence_len)
        return
    from convtrans.console import TrainDisplay
    from convtrans.training.setup import TrainRequest, run_train

    train_options = dict(max_tokens=max_tokens, update_freq=update_freq, lr=lr, lr_scheduler=lr_scheduler,
                         warmup_updates=warmup_updates, max_update=max_update, max_epoch=max_epoch,
                         stop_time_hours=stop_time_hours,
                         label_smoothing=label_smoothing, weight_decay=weight_decay, clip_norm=clip_norm, seed=seed,
                         amp=amp, keep_last=keep_last, patience=patience,
                         validate_interval_updates=validate_interval_updates,
                         save_interval_updates=save_interval_updates, valid_beam=valid_beam,
                         valid_max_sentences=valid_max_sentences, log_interval=log_interval)
    model_options = dict(dropout=dropout, attention_dropout=attention_dropout, weight_dropout=weight_dropout)
    request = TrainRequest(
        data_dir=data_dir, arch=arch, save_dir=save_dir, config_file=config, overrides=list(set_ or []),
        train_options={k: v for k, v in train_options.items() if v is not None},
        model_options={k: v for k, v in model_options.items() if v is not None},
        device=device, valid_metric=valid_bleu, init_from=init_from, restart=restart,
    )
    with TrainDisplay() as display:
        code = run_train(request, report=display)
    if code:
        raise typer.Exit(code)


def _print_archs(src_vocab: int, tgt_vocab: int, sentence_len: int) -> None:
    """A table of every preset: family, mixers, parameters and Mult-Adds (stdout)."""
    from rich.console import Console
    from rich.table import Table

    from convtrans.config import list_presets, load_preset, read_preset
    from convtrans.costs import measure

    table = Table(title=f"convtrans presets (vocab {src_vocab}/{tgt_vocab}; Mult-Adds for a "
                  f"{sentence_len}+{sentence_len}-token pair, output projection excluded)")
    for column in ("preset", "family", "layers", "d", "params", "non-emb params", "Mult-Adds", "per tgt token"):
        table.add_column(column, justify="left" if column in ("preset", "family") else "right")
    for name in list_presets():
        fields: dict[str, Any] = {"src_vocab_size": src_vocab, "tgt_vocab_size": tgt_vocab}
        if read_preset(name).get("share_all_embeddings") and src_vocab != tgt_vocab:
            fields["tgt_vocab_size"] = src_vocab  # a shared matrix needs one vocabulary
        config = load_preset(name, **fields)
        costs = measure(config, sentence_len, sentence_len)
        table.add_row(name, config.family, f"{config.encoder_layers}+{config.decoder_layers}", str(config.d_model),
                      f"{costs.parameters / 1e6:.2f}M", f"{(costs.parameters - costs.embedding_parameters) / 1e6:.2f}M",
                      f"{costs.mult_adds / 1e6:.1f}M", f"{costs.mult_adds_per_target_token / 1e6:.2f}M")
    Console(width=200).print(table)


def _generation_overrides(**options: Any) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}


def _run_generation(task: str, model: str | None, input_path: Path | None, output: Path | None,
                    overrides: dict[str, Any], n_best: int, scores: bool, batch_tokens: int, device: str,
                    jsonl_field: str | None = None, split: bool = True, precision: str = "auto") -> None:
    """The translate/summarize loop: stream lines through Translator.translate_iterable (the same
    path as the Python API), write one output line per input line (n-best: Moses format)."""
    from convtrans.console import stderr
    from convtrans.inference.textio import OutputSink, input_lines, stdin_has_data, stop_when_stdout_closes
    from convtrans.inference.translator import Summarizer, Translator

    def warn_truncated(line: int, length: int, limit: int) -> None:
        stderr.print(f"warning: line {line} has {length:,} subwords but the model reads at most {limit:,}: "
                     f"the last {length - limit:,} were dropped")

    def note_cut(line: int, length: int, limit: int) -> None:
        what = f"a sentence of {length:,} subwords" if task == "translate" else f"{length:,} subwords"
        done = "it was translated in pieces" if task == "translate" else "summarized in chunks"
        stderr.print(f"note: line {line} has {what}, more than the model reads at once ({limit:,}): {done}")

    from convtrans.inference.int8 import check_precisions

    check_precisions((precision,))
    interactive = input_path is None or str(input_path) == "-"
    with OutputSink(output) as sink, stop_when_stdout_closes():  # a bad --output fails before any work
        kind = Summarizer if task == "summarize" else Translator
        translator = kind(model, device, batch_tokens=batch_tokens, on_truncate=warn_truncated, split=split,
                          on_cut=note_cut, precision=precision)
        config = translator.search_config(**overrides, n_best=max(n_best, 1))
        window = 1 if interactive and sys.stdin.isatty() else 256
        results = translator.translate_iterable(input_lines(input_path, jsonl_field), window, config,
                                                more_waiting=stdin_has_data if interactive else None)
        for line_no, result in enumerate(results):
            if n_best > 1:  # a blank line has no alternatives, so it gives no n-best entries
                sink.write_lines(f"{line_no} ||| {text} ||| {score:.4f}" for text, score in result.alternatives)
            elif result.blank:
                sink.write_lines([""])  # a blank line stays blank, score or not
            else:
                sink.write_lines([f"{result.score:.4f}\t{result.text}" if scores else result.text])


@app.command()
@friendly_errors
def translate(
    model: Annotated[str | None, typer.Option("--model", "-m", help="Checkpoint dir or shipped model name (default: the shipped de-en model).")] = None,
    input_path: Annotated[Path | None, typer.Option("--input", "-i", help="Input file (.gz ok; default stdin).")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output file (default stdout).")] = None,
    beam: Annotated[int | None, typer.Option(help="Beam size.")] = None,
    lenpen: Annotated[float | None, typer.Option(help="Length penalty.")] = None,
    n_best: Annotated[int, typer.Option(help="Print the N best per line, Moses n-best format `LINE ||| text ||| score`.")] = 1,
    scores: Annotated[bool, typer.Option("--scores", help="Prefix each line with its score and a tab.")] = False,
    min_len: Annotated[int | None, typer.Option(help="Minimum output subwords.")] = None,
    max_len_a: Annotated[float | None, typer.Option(help="Max length = a * source length + b.")] = None,
    max_len_b: Annotated[int | None, typer.Option(help="Max length = a * source length + b.")] = None,
    no_repeat_ngram: Annotated[int | None, typer.Option(help="Block repeated n-grams of this size.")] = None,
    sampling: Annotated[bool | None, typer.Option("--sampling/--no-sampling", help="Sample instead of beam search.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.")] = None,
    top_k: Annotated[int | None, typer.Option(help="Sampling: top-k.")] = None,
    top_p: Annotated[float | None, typer.Option(help="Sampling: nucleus mass.")] = None,
    seed: Annotated[int | None, typer.Option(help="Sampling seed.")] = None,
    batch_tokens: Annotated[int, typer.Option(help="Source tokens per batch.")] = 4096,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    split: Annotated[bool, typer.Option("--split/--no-split", help="Translate each sentence of a line (and an over-long sentence in pieces), then join them; --no-split reads a line as one sentence and drops what is over the model's limit.")] = True,
    precision: Annotated[str, typer.Option(help="auto: int8 weights on a CPU (faster, within a tested bound); fp32: exact.")] = "auto",
) -> None:
    """Translate lines from stdin or a file; line N in gives line N out (empty lines stay empty).
    Each line is split into sentences, translated, and joined back with its own spacing."""
    overrides = _generation_overrides(beam=beam, lenpen=lenpen, min_len=min_len, max_len_a=max_len_a, max_len_b=max_len_b,
                                      no_repeat_ngram=no_repeat_ngram, sampling=sampling, temperature=temperature,
                                      top_k=top_k, top_p=top_p, seed=seed)
    _run_generation("translate", model, input_path, output, overrides, n_best, scores, batch_tokens, device,
                    split=split, precision=precision)


@app.command()
@friendly_errors
def summarize(
    model: Annotated[str | None, typer.Option("--model", "-m", help="Checkpoint dir or shipped model name (default: the shipped summarizer).")] = None,
    input_path: Annotated[Path | None, typer.Option("--input", "-i", help="Documents, one per line (.gz ok; default stdin).")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output file (default stdout).")] = None,
    jsonl_field: Annotated[str | None, typer.Option(help="Read JSON lines and summarize this field.")] = None,
    beam: Annotated[int | None, typer.Option(help="Beam size.")] = None,
    lenpen: Annotated[float | None, typer.Option(help="Length penalty.")] = None,
    min_len: Annotated[int | None, typer.Option(help="Minimum summary subwords.")] = None,
    max_len_a: Annotated[float | None, typer.Option(help="Max length = a * source length + b.")] = None,
    max_len_b: Annotated[int | None, typer.Option(help="Max length = a * source length + b.")] = None,
    no_repeat_ngram: Annotated[int | None, typer.Option(help="Block repeated n-grams (trigram blocking: 3).")] = None,
    max_source_len: Annotated[int | None, typer.Option(help="Read documents in pieces of at most this many subwords (with --no-split: truncate them to it).")] = None,
    scores: Annotated[bool, typer.Option("--scores", help="Prefix each line with its score and a tab.")] = False,
    batch_tokens: Annotated[int, typer.Option(help="Source tokens per batch.")] = 8192,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    split: Annotated[bool, typer.Option("--split/--no-split", help="Summarize a document longer than the model reads in chunks and join the summaries; --no-split truncates it.")] = True,
    precision: Annotated[str, typer.Option(help="auto: int8 weights on a CPU (faster, within a tested bound); fp32: exact.")] = "auto",
) -> None:
    """Summarize documents (one per line, or a JSON-lines field); one summary line per document."""
    overrides = _generation_overrides(beam=beam, lenpen=lenpen, min_len=min_len, max_len_a=max_len_a, max_len_b=max_len_b,
                                      no_repeat_ngram=no_repeat_ngram, max_source_len=max_source_len)
    _run_generation("summarize", model, input_path, output, overrides, 1, scores, batch_tokens, device, jsonl_field,
                    split=split, precision=precision)


@app.command()
@friendly_errors
def export(
    sources: Annotated[list[Path], typer.Argument(help="A checkpoint dir, a run dir, or several checkpoints to average.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="checkpoint, torchscript or onnx.")] = "torchscript",
    average: Annotated[int, typer.Option(help="Average the N newest checkpoints of a run dir.")] = 0,
    quantize: Annotated[str | None, typer.Option(help="int8: dynamic int8 Linear layers (TorchScript, CPU).")] = None,
    fp16: Annotated[bool, typer.Option("--fp16", help="Store weights in fp16 (half the size).")] = False,
    force: Annotated[bool, typer.Option(help="Replace an existing output directory.")] = False,
) -> None:
    """Export for deployment (TorchScript / ONNX graphs with explicit decode state), average
    checkpoints, quantize to int8 or halve to fp16. `convtrans translate -m OUT` runs the result."""
    from convtrans.console import stderr
    from convtrans.inference.export import describe
    from convtrans.inference.export import export as run_export

    stderr.print(describe(run_export(sources, out, fmt, average, quantize, fp16, force)))





import_app = typer.Typer(help="Import models trained elsewhere (fairseq, Lite Transformer, OPUS-MT/Marian) as convtrans "
                         "model folders.", no_args_is_help=True)
app.add_typer(import_app, name="import")


@import_app.command("fairseq")
@friendly_errors
def import_fairseq(
    checkpoint: Annotated[Path, typer.Argument(help="The fairseq checkpoint (.pt); read without unpickling code.")],
    dict_dir: Annotated[Path, typer.Option(help="Folder with the model's dict.<lang>.txt files.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The convtrans model folder to write.")],
    source_lang: Annotated[str | None, typer.Option(help="Source language (default: the checkpoint's).")] = None,
    target_lang: Annotated[str | None, typer.Option(help="Target language (default: the checkpoint's).")] = None,
    tokenizer: Annotated[str, typer.Option(help="moses (sacremoses, as fairseq's --tokenizer moses) or none.")] = "moses",
    bpe: Annotated[str | None, typer.Option(help="subword_nmt, fastbpe or sentencepiece (none if not given).")] = None,
    bpe_codes: Annotated[Path | None, typer.Option(help="The BPE codes file (or sentencepiece model).")] = None,
    lowercase: Annotated[bool, typer.Option("--lowercase", help="The model was trained on lowercased text (IWSLT14).")] = False,
    task: Annotated[str, typer.Option(help="translation, or summarization (CNN-DM models).")] = "translation",
    license_text: Annotated[str | None, typer.Option("--license", help="Licence terms to write into the model card.")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
) -> None:
    """Convert a fairseq Transformer, LightConv/DynamicConv or Lite Transformer checkpoint exactly."""
    from convtrans.console import stderr
    from convtrans.imports.fairseq import FairseqImport
    from convtrans.imports.fairseq import import_fairseq as run_import

    options = FairseqImport(checkpoint=checkpoint, dict_dir=dict_dir, out=out, source_lang=source_lang,
                            target_lang=target_lang, tokenizer=tokenizer, bpe=bpe, bpe_codes=bpe_codes,
                            lowercase=lowercase, task=task, license=license_text, overwrite=force)
    stderr.print(f"wrote {run_import(options)}")


@import_app.command("marian")
@friendly_errors
def import_marian(
    hf_dir: Annotated[Path, typer.Argument(help="A MarianMT model folder in the Hugging Face layout (OPUS-MT).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The convtrans model folder to write.")],
    source_lang: Annotated[str | None, typer.Option(help="Source language (default: from the folder's tokenizer config).")] = None,
    target_lang: Annotated[str | None, typer.Option(help="Target language (default: from the folder's tokenizer config).")] = None,
    license_text: Annotated[str | None, typer.Option("--license", help="Licence terms to write into the model card (OPUS-MT: CC-BY 4.0).")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
) -> None:
    """Convert an OPUS-MT / MarianMT model (config.json, weights, source/target.spm, vocab.json) exactly."""
    from convtrans.console import stderr
    from convtrans.imports.marian import MarianImport
    from convtrans.imports.marian import import_marian as run_import

    options = MarianImport(hf_dir=hf_dir, out=out, source_lang=source_lang, target_lang=target_lang,
                           license=license_text, overwrite=force)
    stderr.print(f"wrote {run_import(options)}")


@app.command()
@friendly_errors
def plot(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories (each with its metrics.jsonl).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the PNG files.")] = Path("plots"),
    metric: Annotated[str, typer.Option(help="Validation metric to draw: loss, nll, ppl, bleu or rouge.")] = "loss",
    results: Annotated[Path | None, typer.Option(help="A results JSON (rows with label, test_bleu, mult_adds, decode_tokens_per_s) for the BLEU vs cost plots.")] = None,
) -> None:
    """Draw validation curves of training runs (and BLEU vs cost from a results table) as PNG
    files; needs the `plot` extra (matplotlib)."""
    from convtrans.console import stderr
    from convtrans.plot import plot_runs

    if metric not in ("loss", "nll", "ppl", "bleu", "rouge"):
        raise UserError(f"--metric must be loss, nll, ppl, bleu or rouge, got {metric!r}")
    for path in plot_runs(run_dirs, out, metric, results):
        stderr.print(f"wrote {path}")


bench_app = typer.Typer(help="Benchmarks: conv kernels (Triton vs PyTorch) and layers.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("kernels")
@friendly_errors
def bench_kernels(
    shapes: Annotated[str, typer.Option(help="Comma-separated BxTxC shapes.")] = "32x512x512,32x512x1024,8x2048x1024",
    kernels: Annotated[str, typer.Option(help="Comma-separated kernel sizes K.")] = "3,7,15,31",
    ops: Annotated[str, typer.Option(help="Comma-separated ops: lightconv,dynamicconv.")] = "lightconv,dynamicconv",
    dtype: Annotated[str, typer.Option(help="fp32, bf16 or fp16.")] = "bf16",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda (Triton columns need cuda).")] = "auto",
    heads: Annotated[int | None, typer.Option(help="Heads H (default C/64).")] = None,
    repeats: Annotated[int, typer.Option(help="Timed calls per measurement (median).")] = 20,
    warmup: Annotated[int, typer.Option(help="Untimed calls first.")] = 5,
    peak_gbs: Annotated[float | None, typer.Option(help="Peak memory bandwidth in GB/s (default: by GPU name).")] = None,
    layers: Annotated[bool, typer.Option("--layers", help="Also time a DynamicConv mixer vs self-attention of equal width.")] = False,
    json_out: Annotated[Path | None, typer.Option(help="Also write the results as JSON to this file.")] = None,
) -> None:
    """Time forward and forward+backward of the conv ops: Triton vs the PyTorch reference (and conv1d)."""
    from rich.console import Console

    from convtrans.bench.kernels import kernel_options, run_kernel_bench, write_json
    from convtrans.console import kernel_table, layer_table, stderr

    opts = kernel_options(shapes, kernels, ops, dtype, device, heads, repeats, warmup, peak_gbs, layers)
    report = run_kernel_bench(opts, progress=lambda what: stderr.print(f"timing {what}"))
    console = Console(width=200)
    console.print(kernel_table(report))
    if layers:
        console.print(layer_table(report))
    if json_out is not None:
        write_json(report, json_out)


@bench_app.command("decode")
@friendly_errors
def bench_decode(
    input_path: Annotated[Path, typer.Option("--input", "-i", help="Source sentences, one per line (.gz ok).")],
    model: Annotated[list[str] | None, typer.Option("--model", "-m", help="Model(s) to time side by side (default: the shipped translator).")] = None,
    beams: Annotated[str, typer.Option(help="Comma-separated beam sizes.")] = "1,5",
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated sentences per batch.")] = "1,64",
    max_sentences: Annotated[int, typer.Option(help="Use the first N lines.")] = 500,
    threads: Annotated[int | None, typer.Option(help="torch intra-op threads.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "cpu",
    json_out: Annotated[Path | None, typer.Option(help="Also write the results as JSON to this file.")] = None,
    output_length: Annotated[int, typer.Option(help="Force every output to exactly N subwords, so models run the same decode steps (0 = off).")] = 0,
    precision: Annotated[str, typer.Option(help="Comma-separated translate --precision values to time each model at (auto, int8, fp32).")] = "auto",
) -> None:
    """Sentences/s and tokens/s of translate for each model, beam size and batch size."""
    import itertools

    from rich.console import Console

    from convtrans.bench.decode import run_decode_bench, write_json
    from convtrans.console import decode_table, stderr
    from convtrans.data.corpus import read_lines
    from convtrans.zoo import default_model

    lines = [line for line in itertools.islice(read_lines(input_path), max_sentences) if line.strip()]
    if not lines:
        raise UserError(f"{input_path} has no sentences to translate")
    from convtrans.inference.int8 import check_precisions

    precisions = _csv(precision)
    check_precisions(precisions)
    models = list(model or [str(default_model("translate"))])
    rows = run_decode_bench(models, lines, [int(b) for b in _csv(beams)], [int(b) for b in _csv(batch_sizes)], device,
                            threads, progress=lambda what: stderr.print(f"timing {what}"), output_length=output_length,
                            precisions=precisions)
    Console(width=200).print(decode_table(rows))
    if json_out is not None:
        write_json(rows, json_out)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
