"""Checkpoint directories: everything needed to translate with (or resume) a model.

    checkpoint dir = config.json        model config, data info (languages, text options,
                                        tokenizer files), decoding defaults, file checksums
                   + model.safetensors  weights (never pickled)
                   + spm*.model         the sentencepiece model(s)
                   + train_state.pt     optimizer/scheduler/scaler/RNG/data position (resume only;
                                        loaded with torch.load(weights_only=True))

A checkpoint is written into a temporary sibling and renamed into place, so a crash never leaves
a half-written one; config.json carries SHA-256 checksums so a corrupted or truncated file is
refused with a clear message. In a run directory, numbered checkpoints (checkpoint_u000500) are
immutable and `checkpoint_last` / `checkpoint_best` are symlinks swapped atomically.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from convtrans import __version__
from convtrans.atomic import replace_directory
from convtrans.config import GenerateConfig, ModelConfig
from convtrans.errors import UserError, as_os_error, describe_os_error

CONFIG, WEIGHTS, TRAIN_STATE = "config.json", "model.safetensors", "train_state.pt"
FORMAT_VERSION = 1
MAX_CONFIG_BYTES = 1 << 20  # a config.json is a few KB; a larger one is not ours


class CheckpointWriteError(UserError):
    """A checkpoint could not be written (disk full, permissions); nothing half-written is left."""


@dataclass
class DataInfo:
    """What the model needs to know about its data to read and write text."""

    task: str
    source_lang: str
    target_lang: str
    # key -> file name inside the checkpoint: a side's sentencepiece model (key = the side), or the
    # files an imported model's text pipeline reads (dictionaries, BPE codes; data/pipelines.py)
    tokenizers: dict[str, str]
    text: dict[str, dict[str, Any]]  # side -> TextProcessor options, or an imported model's pipeline

    def to_dict(self) -> dict[str, Any]:
        return dict(task=self.task, source_lang=self.source_lang, target_lang=self.target_lang,
                    tokenizers=self.tokenizers, text=self.text)


@dataclass
class Checkpoint:
    path: Path
    model_config: ModelConfig
    data: DataInfo
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form facts (update, metrics, preset)

    def tokenizer_path(self, key: str) -> Path:
        """The file `data.tokenizers[key]` names (a side's subword model, or an imported pipeline's file)."""
        if key not in self.data.tokenizers:
            raise UserError(f"{self.path}: {CONFIG} names no tokenizer file {key!r}")
        return member(self.path, self.data.tokenizers[key])

    @property
    def export(self) -> dict[str, Any] | None:
        """How the graphs of an exported directory were made (None for a regular checkpoint)."""
        return self.extra.get("export")

    def graph_path(self, graph: str) -> Path:
        """The file of one exported graph (encoder, init or step)."""
        assert self.export is not None
        return member(self.path, self.export["graphs"][graph])

    def needed_files(self) -> list[str]:
        """Every file this checkpoint loads: tokenizers, then the weights or the exported graphs."""
        names = list(self.data.tokenizers.values())
        if self.export is None:
            return [*names, WEIGHTS]
        graphs = self.export.get("graphs") if isinstance(self.export, dict) else None
        if not isinstance(graphs, dict):
            raise UserError(f"{self.path}: {CONFIG} describes an export without its graphs")
        return [*names, *graphs.values()]


def member(folder: Path, name: object) -> Path:
    """The regular file `name` inside `folder`; anything else a model or data folder names is refused.

    A model folder is data someone else may have written. A name like `../../x`, an absolute path,
    a symlink leading out, or a device such as /dev/zero (read forever) would make loading it read
    outside the folder, so every file a config.json (or a data manifest) names goes through here.
    """
    folder = Path(folder)
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise UserError(f"{folder}: {name!r} is not the name of a file inside the folder; refusing to read it")
    path = folder / name
    try:
        inside = path.resolve().is_relative_to(folder.resolve())
        mode = path.stat().st_mode if inside else 0
    except FileNotFoundError:
        raise UserError(f"{folder} is incomplete: {name} is missing") from None
    if not inside:
        raise UserError(f"{folder}: {name} leads outside the folder (a symlink?); refusing to read it")
    if not stat.S_ISREG(mode):
        raise UserError(f"{folder}: {name} is not a regular file")
    return path


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save(path: Path, model: torch.nn.Module, model_config: ModelConfig, data: DataInfo, tokenizer_files: dict[str, Path],
         generate: GenerateConfig | None = None, train_state: dict[str, Any] | None = None,
         extra: dict[str, Any] | None = None, overwrite: bool = False, dtype: torch.dtype | None = None,
         documents: dict[str, str] | None = None) -> Path:
    """Write a checkpoint directory atomically. Refuses an existing `path` unless `overwrite`.

    `dtype` (e.g. torch.float16) stores floating-point weights in that type (loading upcasts).
    `documents`: text files to write alongside (file name -> text), e.g. a model card README.md;
    they are checksummed like the rest.
    """
    from safetensors.torch import save_model

    def populate(tmp: Path) -> None:
        weights_model = model if dtype is None else copy.deepcopy(model).to(dtype)
        save_model(weights_model, str(tmp / WEIGHTS), metadata={"format": "pt", "convtrans": __version__})
        for name, text in (documents or {}).items():
            (tmp / Path(name).name).write_text(text, encoding="utf-8")
        if train_state is not None:  # serialized in memory, so a full disk raises a plain OSError on write
            buffer = io.BytesIO()
            torch.save(train_state, buffer)
            (tmp / TRAIN_STATE).write_bytes(buffer.getbuffer())

    return _write(path, populate, model_config, data, tokenizer_files, generate, extra, overwrite)


def save_files(path: Path, files: dict[str, Path], model_config: ModelConfig, data: DataInfo,
               tokenizer_files: dict[str, Path], generate: GenerateConfig | None = None,
               extra: dict[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Like `save`, with ready-made weight files (exported graphs) instead of model.safetensors."""

    def populate(tmp: Path) -> None:
        for name, source in files.items():
            shutil.copyfile(source, tmp / name)

    return _write(path, populate, model_config, data, tokenizer_files, generate, extra, overwrite)


def _write(path: Path, populate: Any, model_config: ModelConfig, data: DataInfo, tokenizer_files: dict[str, Path],
           generate: GenerateConfig | None, extra: dict[str, Any] | None, overwrite: bool) -> Path:
    """Build the directory aside (weights, tokenizers, then config.json with checksums) and rename it in."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise UserError(f"{path} already exists; refusing to overwrite it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    except OSError as err:
        raise CheckpointWriteError(describe_os_error(err, f"write checkpoint {path}")) from None
    try:
        _populate_and_swap(tmp, path, populate, model_config, data, tokenizer_files, generate, extra)
    except Exception as err:  # safetensors and torch report a full disk in their own exception types
        os_error = as_os_error(err)
        if os_error is None:
            raise
        raise CheckpointWriteError(describe_os_error(os_error, f"write checkpoint {path}")) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _populate_and_swap(tmp: Path, path: Path, populate: Any, model_config: ModelConfig, data: DataInfo,
                       tokenizer_files: dict[str, Path], generate: GenerateConfig | None,
                       extra: dict[str, Any] | None) -> None:
    """Weights, tokenizers, then config.json with every file's checksum; then the rename into place."""
    populate(tmp)
    for name in sorted(set(data.tokenizers.values())):
        side = next(s for s, n in data.tokenizers.items() if n == name)
        shutil.copyfile(tokenizer_files[side], tmp / name)
    for p in tmp.iterdir():
        p.chmod(0o644)  # some writers create 0600 files; a model directory is for sharing
    files = {p.name: file_digest(p) for p in sorted(tmp.iterdir())}
    config = {
        "format_version": FORMAT_VERSION,
        "convtrans_version": __version__,
        "model": model_config.to_dict(),
        "data": data.to_dict(),
        "generate": (generate or GenerateConfig()).to_dict(),
        "extra": extra or {},
        "files": files,
    }
    (tmp / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.chmod(0o755)
    replace_directory(tmp, path)  # an existing one (overwrite) is moved aside only once this one is complete


def read(path: Path, verify: bool = True) -> Checkpoint:
    """Read a checkpoint's config.json (and check every file against its checksum).

    Every file the config names (weights or exported graphs, tokenizers) must be a regular file
    inside the folder with a recorded checksum; `verify=False` skips only reading the files."""
    path = Path(path)
    config_file = path / CONFIG
    if not path.is_dir() or not config_file.is_file():
        raise UserError(f"{path} is not a convtrans checkpoint (no {CONFIG})")
    if config_file.stat().st_size > MAX_CONFIG_BYTES:
        raise UserError(f"{config_file} is {config_file.stat().st_size:,} bytes; a checkpoint config is at most "
                        f"{MAX_CONFIG_BYTES:,}")
    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
        files: dict[str, str] = raw["files"]
        model_config = ModelConfig.from_dict(raw["model"])
        data = DataInfo(**raw["data"])
        generate = GenerateConfig.from_dict(raw.get("generate", {}))
        extra = raw.get("extra", {})
        if not isinstance(files, dict) or not isinstance(data.tokenizers, dict) or not isinstance(extra, dict):
            raise TypeError("files, data.tokenizers and extra must be objects")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as err:
        raise UserError(f"{config_file}: not a valid checkpoint config ({err})") from None
    if raw.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path}: checkpoint format {raw.get('format_version')} is not supported "
                        f"(expected {FORMAT_VERSION})")
    checkpoint = Checkpoint(path, model_config, data, generate, extra)
    unrecorded = sorted(set(checkpoint.needed_files()) - set(files))
    if unrecorded:
        raise UserError(f"{path}: {CONFIG} records no checksum for {', '.join(map(repr, unrecorded))}; refusing to load "
                        "files that cannot be verified")
    for name, digest in files.items():
        file = member(path, name)
        if verify and file_digest(file) != digest:
            raise UserError(f"{path} is corrupted: {name} does not match its checksum (truncated or modified?)")
    return checkpoint


def load_model(path: Path, device: str | torch.device = "cpu", purpose: str = "inference",
               budget_device: str | torch.device | None = None,
               checkpoint: Checkpoint | None = None) -> tuple[Any, Checkpoint]:
    """Build the model a checkpoint describes and load its weights (in fp32).

    The model's memory for `purpose` ("inference" or "training") is checked against what
    `budget_device` (default: `device`) has free before anything is allocated. `checkpoint`: the
    result of `read(path)` when the caller has it already (it verified the files)."""
    from convtrans.model import EncoderDecoder
    from convtrans.resources import check_fits

    checkpoint = checkpoint or read(path)
    if checkpoint.export:
        raise UserError(f"{path} is an exported model ({checkpoint.export['format']}); it runs with translate, "
                        "not as a checkpoint")
    check_fits(checkpoint.model_config, purpose, torch.device(budget_device or device))
    model = EncoderDecoder(checkpoint.model_config)
    load_weights_into(model, checkpoint.path)
    return model.float().to(device).eval(), checkpoint


def load_weights_into(model: torch.nn.Module, path: Path) -> None:
    """Copy a checkpoint's weights into a built model; every tensor must match by name and shape.

    Shapes are compared from the file's header first, so a config that disagrees with its weights
    is named in one line (the first mismatch) instead of PyTorch's list of every tensor."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_model as load_weights

    file = Path(path) / WEIGHTS
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    try:
        with safe_open(str(file), framework="pt") as weights:
            stored = {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}
    except (SafetensorError, OSError) as err:
        raise UserError(f"{file}: cannot read weights ({err})") from None
    wrong = [name for name in stored if name in expected and stored[name] != expected[name]]
    if wrong:
        more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
        raise UserError(f"{path}: weights do not match the config: {wrong[0]} is {list(stored[wrong[0]])} in "
                        f"{WEIGHTS} but {list(expected[wrong[0]])} in the model{more}")
    try:
        missing, unexpected = load_weights(model, str(file), strict=False)
    except (SafetensorError, OSError, RuntimeError) as err:
        raise UserError(f"{file}: cannot load weights ({str(err).splitlines()[0]})") from None
    if missing or unexpected:
        raise UserError(f"{path}: weights do not match the config (missing {sorted(missing)[:3]}, "
                        f"unexpected {sorted(unexpected)[:3]})")


def load_train_state(path: Path) -> dict[str, Any]:
    """The resume state, loaded without unpickling arbitrary objects."""
    try:
        return torch.load(Path(path) / TRAIN_STATE, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path} holds no {TRAIN_STATE}: it cannot be resumed") from None


def point(link: Path, target: Path) -> None:
    """Make `link` a symlink to `target` (relative), replacing any previous link atomically.

    A run directory copied with `cp -rL` (or through a tool that drops symlinks) holds real
    directories here; a symlink cannot atomically replace a directory, so that directory is kept
    under a free `<name>.old[.N]` name (never deleted: it may be the only copy) before linking."""
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(os.path.relpath(target, link.parent))
    if link.is_dir() and not link.is_symlink():
        aside, n = link.with_name(f"{link.name}.old"), 1
        while aside.exists() or aside.is_symlink():
            aside, n = link.with_name(f"{link.name}.old.{n}"), n + 1
        link.rename(aside)
    os.replace(tmp, link)


def average(paths: list[Path], out: Path, overwrite: bool = False) -> Path:
    """Average the parameters of several checkpoints of one model into a new checkpoint."""
    if len(paths) < 1:
        raise UserError("nothing to average")
    models = [load_model(p) for p in paths]
    first_model, first = models[0]
    for _, other in models[1:]:
        if other.model_config != first.model_config:
            raise UserError(f"cannot average {first.path} and {other.path}: different model configs")
    states = [m.state_dict() for m, _ in models]
    # all means first, then load: tied matrices appear under several names and must not be
    # averaged twice in place
    mean = {name: sum(s[name] for s in states) / len(states) if value.is_floating_point() else value
            for name, value in states[0].items()}
    first_model.load_state_dict(mean)
    tokenizers = {side: first.tokenizer_path(side) for side in first.data.tokenizers}
    extra = {**first.extra, "averaged": [str(p) for p in paths]}
    return save(out, first_model, first.model_config, first.data, tokenizers, first.generate, extra=extra,
                overwrite=overwrite)
