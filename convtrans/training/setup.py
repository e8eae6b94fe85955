"""From `convtrans train` options to a running Trainer: resolve configs, show progress, report.

Precedence, lowest first: dataclass defaults < the preset's [train]/[generate] tables < the
--config TOML < command-line options. A run directory with checkpoints resumes from the newest one
that verifies (rundir.py): the model config comes from the checkpoint, the training config from
its saved state, and options given on the command line (e.g. a larger --max-update) override it.

--init-from starts a new run from another run's weights (fine-tuning, or continuing after a
self-supervised warm-up on the same data): the architecture and decoding defaults come from that
checkpoint, the optimizer, schedule and counters start fresh. It must share the data's vocabulary.
Once the new run has a checkpoint_last, resuming wins and --init-from is not read again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convtrans.config import GenerateConfig, ModelConfig, TrainConfig, load_preset, preset_recipe, tomllib
from convtrans.errors import UserError
from convtrans.training.rundir import RunPlan, plan_run


@dataclass
class TrainRequest:
    data_dir: Path | None
    arch: str | None
    save_dir: Path | None
    config_file: Path | None = None
    overrides: list[str] = field(default_factory=list)
    train_options: dict[str, Any] = field(default_factory=dict)
    model_options: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    valid_metric: bool = True
    init_from: Path | None = None
    restart: bool = False  # set the previous run's checkpoints and log aside and start over


def _read_config_file(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"--config file not found: {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{path}: invalid TOML ({err})") from None
    unknown = sorted(set(raw) - {"arch", "data_dir", "save_dir", "set", "train", "model", "generate"})
    if unknown:
        raise UserError(f"{path}: unknown key(s) {', '.join(unknown)} (allowed: arch, data_dir, save_dir, set, "
                        "[train], [model], [generate])")
    return raw


def run_paths(request: TrainRequest) -> tuple[dict[str, Any], Path, Path]:
    """The --config tables, the data directory and the run directory of a request."""
    file_cfg = _read_config_file(request.config_file)
    data_dir = request.data_dir or (Path(file_cfg["data_dir"]) if "data_dir" in file_cfg else None)
    save_dir = request.save_dir or (Path(file_cfg["save_dir"]) if "save_dir" in file_cfg else None)
    if data_dir is None:
        raise UserError("missing DATA_DIR (or data_dir in --config)")
    if save_dir is None:
        raise UserError("missing --save-dir (or save_dir in --config)")
    if save_dir.exists() and not save_dir.is_dir():
        raise UserError(f"--save-dir {save_dir} exists and is not a directory")
    return file_cfg, data_dir, save_dir


def resolve(request: TrainRequest, plan: RunPlan | None = None,
            paths: tuple[dict[str, Any], Path, Path] | None = None
            ) -> tuple[Any, Path, ModelConfig, TrainConfig, GenerateConfig, str]:
    """The data dir, run dir and the three configs this request trains with; `plan` says whether
    (and from which checkpoint) the run resumes."""
    from convtrans import checkpoint as ckpt
    from convtrans.data.datadir import DataDir

    file_cfg, data_dir, save_dir = paths or run_paths(request)
    plan = plan if plan is not None else plan_run(save_dir, request.restart)
    data = DataDir(data_dir)
    if "train" not in data.splits or "valid" not in data.splits:
        raise UserError(f"{data_dir} needs train and valid splits (has: {', '.join(data.splits)})")
    train_fields = {**file_cfg.get("train", {}), **request.train_options}
    if plan.resume_from is not None:
        checkpoint = ckpt.read(plan.resume_from, verify=False)  # verified when the plan was made
        state = ckpt.load_train_state(plan.resume_from)
        stored = json.loads(state["train_config"])
        stored.pop("average_last", None)  # a recipe note that runs of convtrans 0.1.0 stored; no longer a field
        train_cfg = TrainConfig.from_dict({**stored, **train_fields})
        preset = checkpoint.extra.get("preset", "")
        return data, save_dir, checkpoint.model_config, train_cfg, checkpoint.generate, preset
    if request.init_from is not None:
        return (data, save_dir, *_from_init_checkpoint(request, data, file_cfg, train_fields))
    arch = request.arch or file_cfg.get("arch")
    if arch is None:
        raise UserError("missing --arch (see `convtrans train --list-archs`)")
    src_vocab, tgt_vocab = data.vocab_sizes()
    ids = data.special_ids()
    fields = dict(src_vocab_size=src_vocab, tgt_vocab_size=tgt_vocab, pad_id=ids["pad"], bos_id=ids["bos"],
                  eos_id=ids["eos"], **file_cfg.get("model", {}), **request.model_options)
    overrides = list(file_cfg.get("set", [])) + request.overrides
    try:
        model_cfg = load_preset(arch, overrides, **fields)
    except UserError as err:
        if "share_all_embeddings" in str(err):
            raise UserError(f"{err}; the data has separate vocabularies: add --set share_all_embeddings=false") from None
        raise
    preset_train, preset_generate = preset_recipe(arch)
    train_cfg = TrainConfig.from_dict({**preset_train.to_dict(), **train_fields})
    generate = GenerateConfig.from_dict({**preset_generate.to_dict(), **file_cfg.get("generate", {})})
    return data, save_dir, model_cfg, train_cfg, generate, str(arch)


def _from_init_checkpoint(request: TrainRequest, data: Any, file_cfg: dict[str, Any],
                          train_fields: dict[str, Any]) -> tuple[ModelConfig, TrainConfig, GenerateConfig, str]:
    """Model, training and decoding configs of a run that starts from --init-from's weights."""
    from convtrans import checkpoint as ckpt

    if request.arch or "arch" in file_cfg:
        raise UserError("--init-from takes the architecture from the checkpoint; leave out --arch")
    assert request.init_from is not None
    source = ckpt.read(request.init_from)
    if source.export:
        raise UserError(f"{request.init_from} is an exported model; --init-from needs a training checkpoint")
    for side, data_side in ((source.data.source_lang, data.source_lang), (source.data.target_lang, data.target_lang)):
        if ckpt.file_digest(source.tokenizer_path(side)) != ckpt.file_digest(data.tokenizer_file(data_side)):
            raise UserError(f"{request.init_from} was trained with a different {side} vocabulary than {data.path}; "
                            "preprocess with its sentencepiece model (--spm-model)")
    model_cfg = source.model_config.with_overrides(list(file_cfg.get("set", [])) + request.overrides)
    model_cfg = model_cfg.replace(**{**file_cfg.get("model", {}), **request.model_options})
    preset = source.extra.get("preset", "")
    recipe = preset_recipe(preset)[0].to_dict() if preset else {}
    train_cfg = TrainConfig.from_dict({**recipe, **train_fields})
    return model_cfg, train_cfg, source.generate, preset


Report = Callable[[str, dict[str, Any]], None]  # report(kind, record): rendered by the CLI (console.TrainDisplay)


def run_train(request: TrainRequest, report: Report | None = None) -> int:
    """Train; returns the process exit code (0, or 128 + signal number after an interruption).

    The run directory is locked for the whole run (rank 0 of a torchrun job holds the lock).
    Progress, notes and the summary go to `report` (on rank 0 only)."""
    import contextlib
    import os

    from convtrans.locking import run_dir_lock

    paths = run_paths(request)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    with run_dir_lock(paths[2]) if main_rank else contextlib.nullcontext():
        return _train_locked(request, paths, report or (lambda kind, record: None))


def _train_locked(request: TrainRequest, paths: tuple[dict[str, Any], Path, Path], report: Report) -> int:
    from convtrans.training.trainer import Interrupted, Trainer

    plan = plan_run(paths[2], request.restart)
    data, save_dir, model_cfg, train_cfg, generate, preset = resolve(request, plan, paths)
    trainer = Trainer(data, save_dir, model_cfg, train_cfg, generate, request.device, preset, request.valid_metric,
                      report=report, init_from=request.init_from, plan=plan)
    main = trainer.dist.main
    if main:
        for note in plan.notes:
            report("message", {"message": f"note: {note}"})
        resumed = f" (resuming at update {trainer.state.update} from {plan.resume_from.name})" if plan.resume_from else (
            f" (weights from {request.init_from})" if request.init_from else "")
        params = trainer.model.num_parameters()
        report("start", {"total": train_cfg.max_update or None,
                         "message": f"{model_cfg.family} model ({preset or 'custom'}): {params:,} parameters "
                                    f"({params / 1e6:.2f}M); device {trainer.device}, {trainer.dist.world_size} "
                                    f"process(es){resumed}"})
    try:
        state = trainer.train()
    except Interrupted as err:
        if main:
            report("message", {"message": str(err)})
        return 128 + err.signum
    if main:
        best = trainer.best_checkpoint()
        best_text = (f"; checkpoint_best is update {best[2]} (valid {best[0]} {best[1]:.3f})" if best is not None
                     else "; no validation has improved yet, so there is no checkpoint_best")
        report("message", {"message": f"done: {state.update} updates (epoch {state.epoch}){best_text}; "
                                      f"checkpoints in {save_dir}"})
    return 0
