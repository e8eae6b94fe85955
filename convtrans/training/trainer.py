"""The one training loop: 1 process, or N processes under torchrun (DistributedDataParallel).

    torchrun --nproc_per_node 4 -m convtrans train data-bin --arch dynamicconv_iwslt_de_en --save-dir runs/x

Never loses a run: checkpoints are written atomically at every validation (and every
save_interval_updates); a run directory that has `checkpoint_last` resumes exactly where it
stopped (weights, optimizer, scaler, RNG states, position in the epoch), bit for bit on CPU;
Ctrl-C and SIGTERM save a checkpoint before exiting; non-finite losses skip the update and, when
they persist, stop the run with a message instead of writing a broken checkpoint.

Gradients are normalized by the number of target tokens in the whole update (all micro-batches of
all processes), so N processes equal one process with update_freq × N.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from convtrans import checkpoint as ckpt
from convtrans.config import GenerateConfig, ModelConfig, TrainConfig
from convtrans.data.batching import collate, make_batches, shard
from convtrans.data.datadir import DataDir, ParallelSplit
from convtrans.errors import UserError, describe_os_error
from convtrans.model import EncoderDecoder
from convtrans.resources import check_fits, pick_device
from convtrans.training.optim import build_optimizer, label_smoothed_nll, learning_rate
from convtrans.training.rundir import BEST, LAST, METRICS_FILE, RunPlan, numbered_checkpoints, numbered_name, set_aside
from convtrans.training.validation import ValidResult, decode_metric, split_loss


class TrainingDiverged(UserError):
    """Raised when losses stay non-finite; nothing is saved."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM arrived; a checkpoint was saved at `update`."""

    def __init__(self, signum: int, update: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}: saved checkpoint_last at update {update}")
        self.signum, self.update = signum, update


@dataclass
class RunState:
    """Where the run is; saved in train_state.pt so a resumed run continues exactly."""

    update: int = 0
    epoch: int = 1
    batch_in_epoch: int = 0  # micro-batches of this rank's shard consumed in the current epoch
    best: float | None = None
    bad_validations: int = 0
    last_saved: int = -1
    last_validated: int = -1  # update of the newest validation (-1: none yet)
    best_update: int | None = None  # update of the validation that set `best`
    train_seconds: float = 0.0  # wall-clock time spent training, summed over resumes
    history: list[dict[str, Any]] = field(default_factory=list)  # validation results


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> Distributed:
    """Join the torchrun process group when launched by torchrun (env RANK/WORLD_SIZE)."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return Distributed()
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _all_sum(values: list[float], dist_info: Distributed, device: torch.device) -> list[float]:
    if dist_info.world_size == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


@dataclass
class _Meter:
    """Wall-clock and throughput bookkeeping of one `train()` call (not saved: a resumed run
    starts a fresh window)."""

    started: float = field(default_factory=time.perf_counter)
    last_tick: float = field(default_factory=time.perf_counter)
    window_start: float = field(default_factory=time.perf_counter)
    window_tokens: float = 0.0
    nonfinite: int = 0  # consecutive skipped updates


class _StopSignal:
    """Turns SIGINT/SIGTERM into a flag the loop checks between updates."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # a second Ctrl-C: give up at once
            raise KeyboardInterrupt
        self.signum = signum

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    def __init__(self, data: DataDir, run_dir: Path, model_config: ModelConfig, cfg: TrainConfig,
                 generate_config: GenerateConfig, device: str = "auto", preset: str = "", valid_metric: bool = True,
                 report: Any = None, init_from: Path | None = None, plan: RunPlan | None = None) -> None:
        self.data, self.run_dir, self.cfg, self.gen = data, Path(run_dir), cfg, generate_config
        self.plan = plan or RunPlan()
        self.dist = setup_distributed(device)
        self.device = pick_device(device, self.dist.local_rank if self.dist.world_size > 1 else None)
        self.preset, self.valid_metric = preset, valid_metric
        self.report = report or (lambda kind, payload: None)  # progress display hook (rank 0)
        self.ids = data.special_ids()
        self.state = RunState()
        torch.manual_seed(cfg.seed)
        if self.plan.resume_from is not None:
            self.model, checkpoint = ckpt.load_model(self.plan.resume_from, purpose="training", budget_device=self.device)
            self.model_config = checkpoint.model_config
            self._resume_state: dict[str, Any] | None = ckpt.load_train_state(self.plan.resume_from)
        else:
            self.model_config = model_config
            check_fits(model_config, "training", self.device)
            self.model = EncoderDecoder(model_config)
            if init_from is not None:  # a new run that starts from another run's weights
                ckpt.load_weights_into(self.model, init_from)
            self._resume_state = None
        self.model.to(self.device).train()
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        self.ddp = (torch.nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)
                    if self.dist.world_size > 1 else None)
        self.optimizer = build_optimizer(self.model, cfg)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16")
        if self._resume_state is not None:
            self._restore(self._resume_state)

    # ------------------------------------------------------------------ state
    def _train_state(self) -> dict[str, Any]:
        rng = torch.get_rng_state()
        states = [rng]
        if self.dist.world_size > 1:
            gathered: list[Any] = [None] * self.dist.world_size
            dist.all_gather_object(gathered, rng)
            states = gathered
        return {
            "run": {k: v for k, v in asdict(self.state).items() if k != "history"},
            "history": json.dumps(self.state.history),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "rng": states,
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "train_config": self.cfg.to_json(),
        }

    def _restore(self, saved: dict[str, Any]) -> None:
        self.state = RunState(**saved["run"], history=json.loads(saved["history"]))
        self.optimizer.load_state_dict(saved["optimizer"])
        if saved["scaler"]:
            self.scaler.load_state_dict(saved["scaler"])
        if len(saved["rng"]) != self.dist.world_size:
            raise UserError(f"checkpoint was written by {len(saved['rng'])} processes; resume with the same number")
        torch.set_rng_state(saved["rng"][self.dist.rank])
        if saved["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["cuda_rng"])

    # ------------------------------------------------------------------ checkpoints and logs
    def _log(self, record: dict[str, Any]) -> None:
        if self.dist.main:
            try:
                with open(self.run_dir / METRICS_FILE, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record) + "\n")
            except OSError as err:
                message = describe_os_error(err, f"write {self.run_dir / METRICS_FILE}")
                raise UserError(message + self._resume_hint()) from None
            self.report(record["type"], record)

    def _resume_hint(self) -> str:
        saved = self.state.last_saved
        return f"; rerunning the command resumes from update {saved}" if saved > 0 else ""

    def _truncate_log(self) -> None:
        """After a crash the log may run past the checkpoint we resume from: drop those lines."""
        path = self.run_dir / METRICS_FILE
        if not self.dist.main or not path.is_file():
            return
        keep = [line for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("update", 0) <= self.state.update]
        path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")

    def save(self, improved: bool = False) -> None:
        state = self._train_state()  # every rank takes part in gathering RNG states
        previous_save, self.state.last_saved = self.state.last_saved, self.state.update
        if not self.dist.main:
            return
        name = self.run_dir / numbered_name(self.state.update)
        sides = (self.data.source_lang, self.data.target_lang)
        data_info = ckpt.DataInfo(
            task=self.data.task, source_lang=self.data.source_lang, target_lang=self.data.target_lang,
            tokenizers={side: self.data.tokenizer_file(side).name for side in sides},
            text={side: asdict(self.data.text_processor(side)) for side in sides},
        )
        tokenizer_files = {side: self.data.tokenizer_file(side) for side in data_info.tokenizers}
        state["run"]["last_saved"] = self.state.update
        extra = {"update": self.state.update, "epoch": self.state.epoch, "preset": self.preset,
                 "valid": self.state.history[-1] if self.state.history else None}
        try:
            ckpt.save(name, self.model, self.model_config, data_info, tokenizer_files, self.gen, state, extra,
                      overwrite=True)
        except ckpt.CheckpointWriteError as err:
            self.state.last_saved = previous_save
            raise ckpt.CheckpointWriteError(str(err) + self._resume_hint()) from None
        ckpt.point(self.run_dir / LAST, name)
        if improved:  # only a validated checkpoint can be the best one
            ckpt.point(self.run_dir / BEST, name)
        self._prune()

    def _prune(self) -> None:
        """Keep the newest keep_last numbered checkpoints plus whatever last/best point to."""
        numbered = numbered_checkpoints(self.run_dir)
        pinned = {(self.run_dir / link).resolve() for link in (LAST, BEST) if (self.run_dir / link).exists()}
        keep = set(numbered[max(0, len(numbered) - self.cfg.keep_last):]) if self.cfg.keep_last else set()
        for path in numbered:
            if path not in keep and path.resolve() not in pinned:
                shutil.rmtree(path, ignore_errors=True)

    # ------------------------------------------------------------------ validation
    def validate(self) -> ValidResult:
        model = self.model
        max_src, max_tgt = self.model_config.max_source_len, self.model_config.max_target_len
        split = self.data.split("valid")
        loss, nll = split_loss(model, split, self.ids, self.cfg.max_tokens, self.cfg.label_smoothing, self.device,
                               max_src, max_tgt)
        result = ValidResult(loss, nll)
        if self.valid_metric and self._metric_name() != "loss":
            gen = self.gen.replace(beam=self.cfg.valid_beam, n_best=1, sampling=False)
            result.metric_name, result.metric = decode_metric(model, self.data, split, gen, self.device,
                                                              self.cfg.valid_max_sentences, self.cfg.max_tokens)
        return result

    def _metric_name(self) -> str:
        if self.cfg.best_metric != "auto":
            return self.cfg.best_metric
        if not self.valid_metric:
            return "loss"
        return "rouge" if self.data.task == "summarization" else "bleu"

    def _after_validation(self, result: ValidResult) -> bool:
        """Record a validation; returns whether it is the best so far."""
        value = result.loss if self._metric_name() == "loss" else result.metric
        better = value is not None and (self.state.best is None or (
            value < self.state.best if self._metric_name() == "loss" else value > self.state.best))
        if better:
            self.state.best, self.state.bad_validations, self.state.best_update = value, 0, self.state.update
        else:
            self.state.bad_validations += 1
        self.state.last_validated = self.state.update
        record = {"type": "valid", "update": self.state.update, "epoch": self.state.epoch, "loss": result.loss,
                  "nll": result.nll, "ppl": round(result.ppl, 3), "best_metric": self._metric_name(),
                  "best": self.state.best}
        if result.metric_name:
            record[result.metric_name] = result.metric
        self.state.history.append(record)
        self._log(record)
        return better

    # ------------------------------------------------------------------ the loop
    def _micro_batches(self) -> tuple[ParallelSplit, list[np.ndarray]]:
        split = self.data.split("train")
        max_src, max_tgt = self.model_config.max_source_len, self.model_config.max_target_len
        batches, skipped = make_batches(split.src.lengths(), split.tgt.lengths(), self.cfg.max_tokens, self.cfg.seed,
                                        self.state.epoch, max_src, max_tgt)
        if skipped and self.state.batch_in_epoch == 0 and self.dist.main:
            message = f"skipped {skipped} training pairs longer than the model's positions or --max-tokens"
            self.report("warning", {"message": message})
        return split, shard(batches, self.dist.rank, self.dist.world_size)

    def _update(self, split: ParallelSplit, group: list[np.ndarray]) -> dict[str, float] | None:
        """One optimizer update over a group of micro-batches; None when it was skipped."""
        module = self.ddp or self.model
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = nll_sum = 0.0
        tokens = 0.0
        for i, indices in enumerate(group):
            batch = collate(split, indices, self.ids["pad"], self.ids["bos"], self.ids["eos"]).to(self.device)
            sync = self.ddp is None or i == len(group) - 1
            context = self.ddp.no_sync() if self.ddp is not None and not sync else contextlib.nullcontext()
            with context:
                with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                    logits = module(batch.src, batch.tgt_in)
                loss, nll = label_smoothed_nll(logits, batch.tgt_out, self.cfg.label_smoothing, self.ids["pad"])
                self.scaler.scale(loss).backward()
            loss_sum, nll_sum, tokens = loss_sum + loss.item(), nll_sum + nll.item(), tokens + batch.n_tokens
        loss_sum, nll_sum, tokens = _all_sum([loss_sum, nll_sum, float(tokens)], self.dist, self.device)
        if not math.isfinite(loss_sum):
            return None
        self.scaler.unscale_(self.optimizer)
        factor = self.dist.world_size / max(tokens, 1.0)  # DDP averaged over ranks; make it a per-token mean
        for p in self.model.parameters():
            if p.grad is not None:
                p.grad.mul_(factor)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_norm or float("inf"))
        if not self.scaler.is_enabled() and not math.isfinite(float(grad_norm)):
            return None  # an overflowing gradient would poison Adam's moments: skip (fp16 leaves this to the scaler)
        for group_ in self.optimizer.param_groups:
            group_["lr"] = learning_rate(self.cfg, self.state.update + 1)
        scale_before = self.scaler.get_scale() if self.scaler.is_enabled() else None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if scale_before is not None and self.scaler.get_scale() < scale_before:
            return None  # fp16 overflow: the scaler skipped the step and backed off
        return {"loss": loss_sum / tokens, "nll": nll_sum / tokens, "tokens": tokens, "grad_norm": float(grad_norm)}

    def _done(self) -> bool:
        cfg = self.cfg
        return bool((cfg.max_update and self.state.update >= cfg.max_update)
                or (cfg.max_epoch and self.state.epoch > cfg.max_epoch)
                or (cfg.stop_time_hours and self.state.train_seconds >= cfg.stop_time_hours * 3600)
                or (cfg.patience and self.state.bad_validations >= cfg.patience))

    def train(self) -> RunState:
        """Run until max_update / max_epoch / stop_time_hours / patience; returns the final state."""
        if self.dist.main:
            self._tidy_run_dir()
        stop = _StopSignal()
        self._meter = _Meter()
        try:
            while not self._done():
                if self._run_epoch(stop):
                    self._end_epoch()
            if self.state.last_validated != self.state.update:  # the final weights are always validated
                self.save(self._after_validation(self.validate()))
        finally:
            stop.restore()
        return self.state

    def _run_epoch(self, stop: _StopSignal) -> bool:
        """Updates from the current position to the end of the epoch (True), or until a limit is
        reached on the way (False)."""
        split, batches = self._micro_batches()
        for first in range(self.state.batch_in_epoch, len(batches), self.cfg.update_freq):
            group = batches[first : first + self.cfg.update_freq]
            self._stop_if_asked(stop)
            stats = self._update(split, group)
            self.state.batch_in_epoch = first + len(group)
            if self._skipped(stats):
                continue
            assert stats is not None
            self.state.update += 1
            self._log_progress(stats)
            self._validate_or_save_on_schedule()
            if self._done():
                return False
        return True

    def _end_epoch(self) -> None:
        self.state.epoch += 1
        self.state.batch_in_epoch = 0
        if not self.cfg.validate_interval_updates:
            self.save(self._after_validation(self.validate()))

    def _stop_if_asked(self, stop: _StopSignal) -> None:
        """Account the time since the last update; on Ctrl-C / SIGTERM (on any rank), save and stop."""
        now = time.perf_counter()  # one collective per update: stop flag and elapsed time
        stop_flag, elapsed = _all_sum([1.0 if stop.signum else 0.0, now - self._meter.last_tick], self.dist, self.device)
        self.state.train_seconds += elapsed / self.dist.world_size
        self._meter.last_tick = now
        if stop_flag:
            self.save()
            raise Interrupted(stop.signum or signal.SIGTERM, self.state.update)

    def _skipped(self, stats: dict[str, float] | None) -> bool:
        """Whether the update was skipped (non-finite loss or gradient); too many in a row stop the run."""
        if stats is not None:
            self._meter.nonfinite = 0
            return False
        self._meter.nonfinite += 1
        self._log({"type": "skip", "update": self.state.update, "reason": "non-finite loss or gradient"})
        if self._meter.nonfinite >= self.cfg.max_nonfinite:
            raise TrainingDiverged(f"training diverged: {self._meter.nonfinite} consecutive updates had a non-finite "
                                   f"loss (last good update {self.state.update}); lower --lr or use --amp bf16")
        return True

    def _log_progress(self, stats: dict[str, float]) -> None:
        meter, update = self._meter, self.state.update
        meter.window_tokens += stats["tokens"]
        if update % self.cfg.log_interval and update != 1:
            return
        now = time.perf_counter()
        self._log({"type": "train", "update": update, "epoch": self.state.epoch, "loss": stats["loss"],
                   "nll": stats["nll"], "ppl": round(math.exp(min(stats["nll"], 50)), 3),
                   "lr": learning_rate(self.cfg, update), "grad_norm": round(stats["grad_norm"], 4),
                   "tokens_per_s": round(meter.window_tokens / max(now - meter.window_start, 1e-9), 1),
                   "elapsed_s": round(now - meter.started, 1)})
        meter.window_tokens, meter.window_start = 0.0, now

    def _validate_or_save_on_schedule(self) -> None:
        update, cfg = self.state.update, self.cfg
        if cfg.validate_interval_updates and update % cfg.validate_interval_updates == 0:
            self.save(self._after_validation(self.validate()))
        elif cfg.save_interval_updates and update % cfg.save_interval_updates == 0:
            self.save()

    def _tidy_run_dir(self) -> None:
        """Before the first write (rank 0, under the run directory's lock): move aside what the run
        plan says, remove temporary files of a killed run, cut the log back to the resumed update."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.plan.set_aside:
            folder = set_aside(self.run_dir, self.plan.set_aside)
            self.report("warning", {"message": f"moved {', '.join(p.name for p in self.plan.set_aside)} into {folder}"})
        for stale in self.run_dir.glob(".checkpoint_*"):  # a temp dir or link left by a killed run
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() and not stale.is_symlink() else stale.unlink()
        self._truncate_log()

    def best_checkpoint(self) -> tuple[str, float, int] | None:
        """(metric name, value, update) of the checkpoint that checkpoint_best points to."""
        if self.state.best is None or self.state.best_update is None:
            return None
        return self._metric_name(), self.state.best, self.state.best_update
