"""`convtrans preprocess`: raw parallel text (or JSON lines) → a data directory.

The data directory holds the sentencepiece model(s), vocabularies, every split as memory-mapped
token arrays (`{split}.{side}.bin/.idx`) and `manifest.json`. It is built in a temporary sibling
directory and moved into place at the end, so an interrupted run never leaves half a directory
and an existing one is only replaced when it holds the same data or `force` is given.

Two passes stream over the corpus: the first validates and normalizes text into temporary files
(which is also what sentencepiece trains on), the second encodes, filters and binarizes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np

from convtrans import __version__
from convtrans.atomic import replace_directory
from convtrans.data.binarize import TokenArrayWriter, dtype_for_vocab
from convtrans.data.corpus import read_jsonl_field, read_lines, read_pairs, resolve, sha256_file
from convtrans.data.pretext import PRETEXTS, pretext_pairs
from convtrans.data.tokenize import SubwordTokenizer, TextProcessor, train_sentencepiece
from convtrans.errors import UserError, describe_os_error
from convtrans.locking import data_dir_lock

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
MODEL_TYPES = ("unigram", "bpe")
# sentencepiece's trained model depends on its thread count; fixing it keeps outputs identical
# across machines (the encode pass may use any number of threads).
SPM_TRAIN_THREADS = 8
CHUNK = 20_000

Progress = Callable[..., None]  # (task description, lines done so far, total=None) -> None


@dataclass(frozen=True)
class PreprocessOptions:
    """Everything that determines the output of preprocess (bar the input bytes)."""

    source_lang: str
    target_lang: str
    trainpref: str | None = None
    validpref: tuple[str, ...] = ()
    testpref: tuple[str, ...] = ()
    jsonl_fields: tuple[str, str] | None = None  # (source field, target field) of JSON-lines input
    vocab_size: int = 8000
    model_type: str = "unigram"
    character_coverage: float = 1.0
    separate_vocab: bool = False
    spm_models: tuple[str, ...] = ()  # reuse: one joint model, or source then target model
    moses: bool = False
    lowercase: bool = False
    max_len: int | None = None  # train only: drop pairs with a side longer than this (subwords)
    max_len_ratio: float | None = None  # train only: drop pairs whose length ratio exceeds this
    pretext: str | None = None  # replace every pair by warm-up pairs made from its source (data/pretext.py)

    def validate(self) -> None:
        if self.source_lang == self.target_lang:
            raise UserError(f"source and target side must differ (both are {self.source_lang!r})")
        if self.trainpref is None and not self.spm_models:
            raise UserError("--trainpref is required unless --spm-model gives the subword model(s)")
        if self.trainpref is None and not (self.validpref or self.testpref):
            raise UserError("nothing to do: give --trainpref, --validpref or --testpref")
        if self.model_type not in MODEL_TYPES:
            raise UserError(f"--model-type must be one of {', '.join(MODEL_TYPES)}, got {self.model_type!r}")
        if self.vocab_size < 8:
            raise UserError(f"--vocab-size must be at least 8, got {self.vocab_size}")
        if not 0.9 <= self.character_coverage <= 1.0:
            raise UserError(f"--character-coverage must be in [0.9, 1.0], got {self.character_coverage}")
        if len(self.spm_models) > 2:
            raise UserError("--spm-model takes one joint model or two (source, target)")
        if self.max_len is not None and self.max_len < 1:
            raise UserError(f"--max-len must be positive, got {self.max_len}")
        if self.max_len_ratio is not None and self.max_len_ratio < 1:
            raise UserError(f"--max-len-ratio must be >= 1, got {self.max_len_ratio}")
        if self.pretext is not None and self.pretext not in PRETEXTS:
            raise UserError(f"--pretext must be one of {', '.join(PRETEXTS)}, got {self.pretext!r}")

    @property
    def sides(self) -> tuple[str, str]:
        return self.source_lang, self.target_lang

    @property
    def joint(self) -> bool:
        return len(self.spm_models) == 1 if self.spm_models else not self.separate_vocab


@dataclass
class SplitInput:
    """One split's input files and how to read them."""

    name: str
    files: tuple[Path, Path]
    read: Callable[[], Iterator[tuple[str, str]]] = field(repr=False)


@dataclass
class SplitReport:
    """What preprocess did with a split (also stored in the manifest)."""

    name: str
    pairs_in: int
    pairs_out: int
    dropped: dict[str, int]
    sides: dict[str, dict] = field(default_factory=dict)  # per side: length statistics, unk count


def _split_names(kind: str, prefixes: tuple[str, ...]) -> list[tuple[str, str]]:
    """fairseq's convention: the first valid/test set is `valid`, then `valid1`, `valid2`, ..."""
    return [(kind if i == 0 else f"{kind}{i}", prefix) for i, prefix in enumerate(prefixes)]


def _jsonl_pairs(path: Path, src_field: str, tgt_field: str) -> Iterator[tuple[str, str]]:
    return zip(read_jsonl_field(path, src_field), read_jsonl_field(path, tgt_field))


def _text_pairs(src: Path, tgt: Path) -> Iterator[tuple[str, str]]:
    return read_pairs(read_lines(src), read_lines(tgt), (str(src), str(tgt)))


def _pretext_of(read: Callable[[], Iterator[tuple[str, str]]]) -> Iterator[tuple[str, str]]:
    """Warm-up pairs made from the sources of `read`'s pairs (their targets are not used)."""
    return (pair for src, _ in read() for pair in pretext_pairs(src))


def _split_inputs(opts: PreprocessOptions) -> list[SplitInput]:
    named = ([("train", opts.trainpref)] if opts.trainpref else []) + _split_names("valid", opts.validpref)
    named += _split_names("test", opts.testpref)
    splits = []
    for name, prefix in named:
        if opts.jsonl_fields:
            path = resolve(prefix, "jsonl")
            src_field, tgt_field = opts.jsonl_fields
            splits.append(SplitInput(name, (path, path), functools.partial(_jsonl_pairs, path, src_field, tgt_field)))
        else:
            src, tgt = resolve(prefix, opts.source_lang), resolve(prefix, opts.target_lang)
            splits.append(SplitInput(name, (src, tgt), functools.partial(_text_pairs, src, tgt)))
    if opts.pretext:
        for split in splits:
            split.read = functools.partial(_pretext_of, split.read)
    return splits


def _fingerprint(opts: PreprocessOptions, inputs: dict) -> str:
    """Identifies the data a directory holds: the options plus the input files' hashes."""
    blob = json.dumps({"options": asdict(opts), "inputs": inputs}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _check_destdir(destdir: Path, fingerprint: str, force: bool) -> None:
    """Refuse to replace a directory that holds something else."""
    if not destdir.exists():
        return
    if not destdir.is_dir():
        raise UserError(f"--destdir {destdir} exists and is not a directory")
    if not any(destdir.iterdir()):
        return
    manifest = destdir / MANIFEST
    if not manifest.is_file():
        raise UserError(f"--destdir {destdir} is not empty and not a convtrans data directory; choose another")
    try:
        existing = json.loads(manifest.read_text(encoding="utf-8")).get("fingerprint")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        existing = None
    if existing != fingerprint and not force:
        raise UserError(f"--destdir {destdir} already holds different data; use --force to replace it")


def output_names(opts: PreprocessOptions, splits: list[str]) -> set[str]:
    """Every file name preprocess writes into a data directory with these options and splits."""
    src, tgt = opts.sides
    stems = ["spm"] if opts.joint else [f"spm.{src}", f"spm.{tgt}"]
    names = {MANIFEST} | {f"{stem}.{ext}" for stem in stems for ext in ("model", "vocab")}
    return names | {f"{split}.{side}.{ext}" for split in splits for side in (src, tgt) for ext in ("bin", "idx")}


def _written_by_preprocess(destdir: Path) -> set[str]:
    """The names an existing data directory's manifest says preprocess wrote there."""
    try:
        manifest = json.loads((destdir / MANIFEST).read_text(encoding="utf-8"))
        names = {MANIFEST}
        for info in manifest["tokenizers"].values():
            names |= {info["model"], info["vocab"]}
        sides = (manifest["source_lang"], manifest["target_lang"])
        return names | {f"{split}.{side}.{ext}" for split in manifest["splits"] for side in sides for ext in ("bin", "idx")}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # unreadable: judge by the names we use
        return {p.name for p in destdir.iterdir()
                if p.name == MANIFEST or p.suffix in (".bin", ".idx") or p.name.startswith("spm")}


def foreign_entries(destdir: Path, new_outputs: set[str]) -> list[Path]:
    """Files and folders in `destdir` that preprocess did not write: the user's own (notes, scripts).

    They are copied into the rebuilt directory, never deleted; one whose name the new build would
    write is refused up front, before any work."""
    if not destdir.is_dir():
        return []
    ours = _written_by_preprocess(destdir)
    foreign = sorted(p for p in destdir.iterdir() if p.name not in ours)
    clashes = [p.name for p in foreign if p.name in new_outputs]
    if clashes:
        raise UserError(f"--destdir {destdir} holds {', '.join(clashes)}, which preprocess did not write and would "
                        "now overwrite; move it away first")
    return foreign


def _length_stats(lengths: np.ndarray) -> dict:
    if len(lengths) == 0:
        return {"sequences": 0, "tokens": 0}
    return {
        "sequences": int(len(lengths)),
        "tokens": int(lengths.sum()),
        "min": int(lengths.min()),
        "max": int(lengths.max()),
        "mean": round(float(lengths.mean()), 2),
        "p50": int(np.percentile(lengths, 50, method="nearest")),
        "p95": int(np.percentile(lengths, 95, method="nearest")),
        "p99": int(np.percentile(lengths, 99, method="nearest")),
    }


class _Preprocessor:
    """Runs the two passes inside a work directory."""

    def __init__(self, opts: PreprocessOptions, work: Path, threads: int, progress: Progress) -> None:
        self.opts, self.work, self.threads, self.progress = opts, work, threads, progress
        self.text = {side: TextProcessor(side, opts.moses, opts.lowercase) for side in opts.sides}

    def text_path(self, split: str, side: str) -> Path:
        return self.work / "text" / f"{split}.{side}.txt"

    def normalize(self, split: SplitInput) -> int:
        """Pass 1: validate, normalize and store a split as one example per line; returns pairs."""
        (self.work / "text").mkdir(exist_ok=True)
        src_side, tgt_side = self.opts.sides
        count = 0
        with (
            open(self.text_path(split.name, src_side), "w", encoding="utf-8", newline="\n") as src_out,
            open(self.text_path(split.name, tgt_side), "w", encoding="utf-8", newline="\n") as tgt_out,
        ):
            for src, tgt in split.read():
                src_out.write(self.text[src_side].pre(src) + "\n")
                tgt_out.write(self.text[tgt_side].pre(tgt) + "\n")
                count += 1
                if count % 1000 == 0:
                    self.progress(f"reading {split.name}", count)
        self.progress(f"reading {split.name}", count)
        if count == 0:
            raise UserError(f"empty corpus: {split.files[0]} has no lines")
        return count

    def tokenizers(self) -> dict[str, SubwordTokenizer]:
        """Copy the given subword model(s) or train new ones on the train split."""
        opts, (src, tgt) = self.opts, self.opts.sides
        names = {src: "spm.model", tgt: "spm.model"} if opts.joint else {src: f"spm.{src}.model", tgt: f"spm.{tgt}.model"}
        if opts.spm_models:
            given = {src: opts.spm_models[0], tgt: opts.spm_models[-1]}
            for side, name in names.items():
                SubwordTokenizer(Path(given[side]))  # validates before copying
                shutil.copyfile(given[side], self.work / name)
        else:
            self.progress("training sentencepiece", 0, 1)
            groups = {"spm": [src, tgt]} if opts.joint else {f"spm.{s}": [s] for s in (src, tgt)}
            for prefix, group in groups.items():
                inputs = [self.text_path("train", side) for side in group]
                train_sentencepiece(
                    inputs, self.work / prefix, opts.vocab_size, opts.model_type,
                    opts.character_coverage, threads=SPM_TRAIN_THREADS,
                )
            self.progress("training sentencepiece", 1, 1)
        tokenizers = {side: SubwordTokenizer(self.work / name) for side, name in names.items()}
        for side, name in names.items():
            (self.work / name).with_suffix(".vocab").write_text(tokenizers[side].vocab_text(), encoding="utf-8")
        return tokenizers

    def _keep(self, src_len: int, tgt_len: int, dropped: dict[str, int]) -> bool:
        opts = self.opts
        if src_len == 0 or tgt_len == 0:
            dropped["empty"] += 1
        elif opts.max_len is not None and max(src_len, tgt_len) > opts.max_len:
            dropped["max_len"] += 1
        elif opts.max_len_ratio is not None and max(src_len, tgt_len) / min(src_len, tgt_len) > opts.max_len_ratio:
            dropped["ratio"] += 1
        else:
            return True
        return False

    def binarize(self, split: str, pairs: int, tokenizers: dict[str, SubwordTokenizer], dtype: str) -> SplitReport:
        """Pass 2: encode to subword ids, filter (train only), write token arrays."""
        src_side, tgt_side = self.opts.sides
        dropped = {"empty": 0, "max_len": 0, "ratio": 0}
        lengths: dict[str, list[int]] = {src_side: [], tgt_side: []}
        unks = {src_side: 0, tgt_side: 0}
        done = 0
        with (
            open(self.text_path(split, src_side), encoding="utf-8", newline="\n") as src_in,
            open(self.text_path(split, tgt_side), encoding="utf-8", newline="\n") as tgt_in,
            TokenArrayWriter(self.work / f"{split}.{src_side}", dtype) as src_out,
            TokenArrayWriter(self.work / f"{split}.{tgt_side}", dtype) as tgt_out,
        ):
            while chunk := [line.rstrip("\n") for line in islice(src_in, CHUNK)]:
                tgt_chunk = [line.rstrip("\n") for line in islice(tgt_in, len(chunk))]
                src_ids = tokenizers[src_side].encode(chunk, self.threads)
                tgt_ids = tokenizers[tgt_side].encode(tgt_chunk, self.threads)
                if split == "train":
                    kept = [self._keep(len(s), len(t), dropped) for s, t in zip(src_ids, tgt_ids)]
                    src_ids = [s for s, k in zip(src_ids, kept) if k]
                    tgt_ids = [t for t, k in zip(tgt_ids, kept) if k]
                for side, ids, writer in ((src_side, src_ids, src_out), (tgt_side, tgt_ids, tgt_out)):
                    writer.add(ids)
                    lengths[side].extend(len(seq) for seq in ids)
                    unk = tokenizers[side].unk_id
                    unks[side] += sum(seq.count(unk) for seq in ids)
                done += len(chunk)
                self.progress(f"encoding {split}", done, pairs)
        stats = {
            side: {**_length_stats(np.asarray(lengths[side], dtype=np.int64)), "unk": unks[side]}
            for side in (src_side, tgt_side)
        }
        if split == "train" and not lengths[src_side]:
            raise UserError(f"all {pairs} training pairs were filtered out ({dropped})")
        return SplitReport(split, pairs, len(lengths[src_side]), dropped, stats)


def preprocess(
    opts: PreprocessOptions,
    destdir: Path,
    force: bool = False,
    threads: int = 1,
    progress: Progress = lambda *report: None,
    notify: Callable[[str], None] = lambda message: None,
) -> list[SplitReport]:
    """Build the data directory `destdir`; returns a report per split. Holds the directory's lock
    throughout: a second preprocess on the same --destdir is refused, naming this one's PID."""
    opts.validate()
    splits = _split_inputs(opts)
    if opts.trainpref is None:
        for path in opts.spm_models:
            if not Path(path).is_file():
                raise UserError(f"file not found: {path}")
    inputs = {
        split.name: {side: {"path": str(path), "sha256": sha256_file(path)} for side, path in zip(opts.sides, split.files)}
        for split in splits
    }
    spm_hashes = [sha256_file(Path(p)) for p in opts.spm_models if Path(p).is_file()]
    fingerprint = _fingerprint(opts, {"corpus": inputs, "spm": spm_hashes})
    destdir = Path(destdir)
    with data_dir_lock(destdir):
        _check_destdir(destdir, fingerprint, force)
        keep = foreign_entries(destdir, output_names(opts, [split.name for split in splits]))
        _remove_leftovers(destdir)
        try:
            reports = _build(opts, splits, inputs, fingerprint, destdir, keep, threads, progress)
        except OSError as err:
            raise UserError(describe_os_error(err, f"write data directory {destdir}")) from None
    if keep:
        notify(f"kept {len(keep)} file(s) in {destdir} that preprocess did not write: {', '.join(p.name for p in keep)}")
    return reports


def _remove_leftovers(destdir: Path) -> None:
    """Work and old directories of a preprocess that was killed (kill -9 runs no cleanup). Only
    called under the directory's lock, so no live preprocess owns them."""
    for pattern in (f".{destdir.name}.tmp-*", f".{destdir.name}.old-*"):
        for stale in destdir.parent.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)


def _build(opts: PreprocessOptions, splits: list[SplitInput], inputs: dict, fingerprint: str, destdir: Path,
           keep: list[Path], threads: int, progress: Progress) -> list[SplitReport]:
    """Both passes in a work directory beside `destdir`, then the manifest, then the swap."""
    destdir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{destdir.name}.tmp-", dir=destdir.parent))
    try:
        runner = _Preprocessor(opts, work, threads, progress)
        counts = {split.name: runner.normalize(split) for split in splits}
        tokenizers = runner.tokenizers()
        dtype = dtype_for_vocab(max(len(t) for t in tokenizers.values()))
        reports, manifest_splits = [], {}
        for split in splits:
            report = runner.binarize(split.name, counts[split.name], tokenizers, dtype)
            reports.append(report)
            manifest_splits[split.name] = {
                "pairs": report.pairs_out,
                "pairs_in": report.pairs_in,
                "dropped": report.dropped,
                "inputs": inputs[split.name],
                "sides": report.sides,
            }
        shutil.rmtree(work / "text")
        manifest = {
            "format_version": FORMAT_VERSION,
            "convtrans_version": __version__,
            "task": "summarization" if opts.jsonl_fields else "translation",
            "source_lang": opts.source_lang,
            "target_lang": opts.target_lang,
            "dtype": dtype,
            "tokenizers": {
                side: {
                    "model": tok.path.name,
                    "vocab": tok.path.with_suffix(".vocab").name,
                    "size": len(tok),
                    "sha256": sha256_file(tok.path),
                    "special_ids": {"pad": tok.pad_id, "unk": tok.unk_id, "bos": tok.bos_id, "eos": tok.eos_id},
                }
                for side, tok in tokenizers.items()
            },
            "text": {side: asdict(proc) for side, proc in runner.text.items()},
            "options": asdict(opts),
            "splits": manifest_splits,
            "fingerprint": fingerprint,
        }
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        for entry in keep:  # the user's own files: copied (not moved), so a kill at any moment loses none
            if entry.is_dir() and not entry.is_symlink():
                shutil.copytree(entry, work / entry.name, symlinks=True)
            else:
                shutil.copy2(entry, work / entry.name, follow_symlinks=False)
        work.chmod(0o755)  # mkdtemp creates 0700; a data directory is an ordinary directory
        replace_directory(work, destdir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return reports
