"""Write an imported model as an ordinary convtrans model folder (safetensors, checksums, card).

The importers only produce a ModelConfig, a name → tensor dict in convtrans's names, the text
pipeline's files and a model card; building the model, checking every tensor against it, and the
atomic, checksummed write are the same for every source and live here.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import torch

from convtrans import checkpoint as ckpt
from convtrans.config import GenerateConfig, ModelConfig
from convtrans.errors import UserError
from convtrans.model import EncoderDecoder
from convtrans.resources import check_fits


def expected_tensors(config: ModelConfig) -> tuple[dict[str, torch.Size], dict[str, str]]:
    """(name -> shape of every tensor the model has, alias name -> the name it is tied to), from a
    shapes-only (meta device) build, so nothing is allocated for a big model."""
    with torch.device("meta"):
        model = EncoderDecoder(config)
    shapes = {name: tensor.shape for name, tensor in model.state_dict(keep_vars=True).items()}
    first: dict[int, str] = {}
    tied: dict[str, str] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        canonical = first.setdefault(id(parameter), name)
        if canonical != name:
            tied[name] = canonical
    return shapes, tied


def complete_tensors(out: dict[str, torch.Tensor], expected: dict[str, torch.Size], tied: dict[str, str], what: str,
                     where: str, gives: str) -> dict[str, torch.Tensor]:
    """The converted tensors in the model's order, tied aliases filled from their canonical name,
    after checking that every expected tensor is there with its shape and nothing else is.
    `what`/`where`/`gives` word the one-line refusals ("checkpoint", "the checkpoint", "the args give")."""
    for alias, canonical in tied.items():
        if canonical in out:
            out[alias] = out[canonical]
    missing = [name for name in expected if name not in out]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UserError(f"cannot import this {what}: {where} has no tensor for {missing[0]}{more}; "
                        "do its settings match the weights?")
    for name, shape in expected.items():
        if tuple(out[name].shape) != tuple(shape):
            raise UserError(f"cannot import this {what}: {name} is {list(out[name].shape)} in {where} but "
                            f"{gives} {list(shape)} (a vocabulary of the wrong size?)")
    extra = sorted(set(out) - set(expected))
    if extra:
        raise UserError(f"cannot import this {what}: tensor {extra[0]} does not belong to the model its settings describe")
    return {name: out[name] for name in expected}


def write_model(out: Path, config: ModelConfig, tensors: dict[str, torch.Tensor], data: ckpt.DataInfo,
                files: dict[str, Path], generate: GenerateConfig, extra: dict[str, Any], card: str,
                overwrite: bool = False) -> Path:
    """Build the model (after checking it fits in memory), load `tensors` strictly and save."""
    check_fits(config, "inference", torch.device("cpu"))
    model = EncoderDecoder(config)
    model.load_state_dict(tensors, strict=True)
    return ckpt.save(out, model.eval(), config, data, files, generate, extra=extra, overwrite=overwrite,
                     documents={"README.md": card})


def today() -> str:
    return datetime.date.today().isoformat()


def card_table(rows: list[tuple[str, str]]) -> str:
    """A two-column markdown table (the model cards' fact sheet)."""
    return "| | |\n|---|---|\n" + "".join(f"| {key} | {value} |\n" for key, value in rows)


def describe(config: ModelConfig) -> str:
    """One line of what was built: widths, depths, mixers, norms, positions, sharing."""
    mixers = config.encoder_mixer if config.encoder_mixer == config.decoder_mixer else (
        f"{config.encoder_mixer} encoder, {config.decoder_mixer} decoder")
    kernels = ""
    if config.encoder_kernel_sizes:
        kernels = f", kernels {list(config.encoder_kernel_sizes)} / {list(config.decoder_kernel_sizes)}"
    positions = ("none" if not config.position_embeddings else "learned" if config.learned_positions
                 else f"sinusoidal ({config.sinusoid})")
    sharing = ("all embeddings shared" if config.share_all_embeddings else
               "decoder input/output tied" if config.share_decoder_input_output_embed else "untied embeddings")
    return (f"d={config.d_model}, FFN {config.encoder_ffn_dim}/{config.decoder_ffn_dim} ({config.activation}), "
            f"{config.encoder_layers}+{config.decoder_layers} layers, {mixers}{kernels}, heads "
            f"{config.encoder_heads}/{config.decoder_heads}/{config.cross_heads}, "
            f"{'pre' if config.normalize_before else 'post'}-norm, positions {positions}, {sharing}")

