"""fairseq training args → ModelConfig, exactly, or a one-line refusal naming the argument.

Three model families are read, by `arch`:
- transformer (fairseq/models/transformer): every `transformer*` arch of the translation task;
- lightconv (fairseq/models/lightconv.py): LightConv and DynamicConv, per side by `*_conv_type`;
- transformer_multibranch_v2 (Lite Transformer's fork): Long-Short Range Attention layers.

A checkpoint stores the args after its arch's defaults were applied, so an arg missing from a file
is one that did not exist when it was written; it gets the value fairseq gives it today (the
behaviour of that older code). Options that change the network in ways convtrans does not build
(adaptive softmax, cross-self-attention, NormFormer scales, layer pruning, ...) are refused, never
approximated; training-only options (dropouts, layerdrop, quant-noise, activation checkpointing)
are read for the record and do not change inference.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from convtrans.config import ModelConfig
from convtrans.errors import UserError

# fairseq's Dictionary: <s>=0, <pad>=1, </s>=2, <unk>=3
FAIRSEQ_BOS, FAIRSEQ_PAD, FAIRSEQ_EOS, FAIRSEQ_UNK = 0, 1, 2, 3
ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_accurate": "gelu_tanh", "gelu_fast": "gelu_tanh", "swish": "silu"}
CONV_TYPES = {"lightweight": "lightconv", "dynamic": "dynamicconv"}
DEFAULT_KERNELS = {"encoder": [3, 7, 15, 31, 31, 31, 31], "decoder": [3, 7, 15, 31, 31, 31]}

# args that must keep their default for the network to be one convtrans builds: name -> allowed
MUST_BE = {
    "adaptive_softmax_cutoff": (None, "", "None"),
    "adaptive_input": (False, None),
    "tie_adaptive_weights": (False, None),  # Lite's fork defaults it to None
    "cross_self_attention": (False,),
    "no_cross_attention": (False,),
    "char_inputs": (False,),
    "encoder_layers_to_keep": (None, ""),
    "decoder_layers_to_keep": (None, ""),
    "scale_attn": (False,),
    "scale_fc": (False,),
    "scale_heads": (False,),
    "scale_resids": (False,),
    "encoder_embed_path": (None, ""),  # only used at init; harmless, but a file we don't have
}


@dataclass
class FairseqModel:
    """What a checkpoint's args say: the family and the config."""

    family: str  # transformer | lightconv | multibranch
    arch: str
    config: ModelConfig
    args: dict[str, Any]


def checkpoint_args(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model args, task args) as flat dicts, from `args` (fairseq <= 0.9) or `cfg` (>= 0.10)."""
    args = state.get("args")
    if isinstance(args, argparse.Namespace):
        flat = vars(args)
        return dict(flat), dict(flat)
    cfg = state.get("cfg")
    if isinstance(cfg, dict) and cfg.get("model") is not None:
        model, task = cfg["model"], cfg.get("task") or {}
        model = vars(model) if isinstance(model, argparse.Namespace) else _flatten(dict(model))
        task = vars(task) if isinstance(task, argparse.Namespace) else dict(task)
        return model, task
    raise UserError("the checkpoint holds neither `args` nor `cfg.model`: no fairseq training args to read")


def _flatten(model: dict[str, Any]) -> dict[str, Any]:
    """A dataclass-registered model's cfg (`encoder: {embed_dim: ...}`) in the legacy flat names."""
    flat = {k: v for k, v in model.items() if not isinstance(v, dict)}
    for side in ("encoder", "decoder"):
        for key, value in (model.get(side) or {}).items():
            flat.setdefault(f"{side}_{key}", value)
    if "_name" in flat:
        flat.setdefault("arch", flat["_name"])
    return flat


class _Args:
    """Typed access to the args with the refusal wording in one place."""

    def __init__(self, args: dict[str, Any]) -> None:
        self.args = args

    def get(self, name: str, default: Any) -> Any:
        value = self.args.get(name, default)
        return default if value is None and default is not None else value

    def same(self, a: str, b: str, default_a: Any, default_b: Any | None = None) -> Any:
        va, vb = self.get(a, default_a), self.get(b, default_a if default_b is None else default_b)
        if va != vb:
            refuse(a, f"{a}={va!r} differs from {b}={vb!r}; convtrans uses one value for both")
        return va


def refuse(arg: str, why: str) -> None:
    raise UserError(f"cannot import this checkpoint: argument {arg}: {why}")


def _check_defaults(args: _Args) -> None:
    for name, allowed in MUST_BE.items():
        value = args.args.get(name, allowed[0])
        if value not in allowed:
            refuse(name, f"{value!r} is not supported (convtrans builds only {allowed[0]!r})")


def _kernels(args: _Args, side: str) -> tuple[int, ...]:
    raw = args.get(f"{side}_kernel_size_list", DEFAULT_KERNELS[side])
    kernels = [int(k) for k in (raw if isinstance(raw, (list, tuple)) else [raw])]
    layers = int(args.get(f"{side}_layers", 0))
    kernels = kernels * layers if len(kernels) == 1 else kernels[:layers] if len(kernels) > layers else kernels
    if len(kernels) != layers:
        refuse(f"{side}_kernel_size_list", f"{len(kernels)} kernel sizes for {layers} layers")
    if side == "encoder" and any(k % 2 == 0 for k in kernels):
        refuse("encoder_kernel_size_list", "an even encoder kernel pads asymmetrically; convtrans pads K//2 on both sides")
    return tuple(kernels)


def _common(args: _Args, family: str, src_vocab: int, tgt_vocab: int) -> dict[str, Any]:
    """The fields every family reads the same way."""
    _check_defaults(args)
    d = int(args.get("encoder_embed_dim", 512))
    for name in ("decoder_embed_dim", "decoder_input_dim", "decoder_output_dim"):
        if int(args.get(name, d)) != d:
            refuse(name, f"{args.get(name, d)} differs from encoder_embed_dim={d} (projections between widths are "
                         "not supported)")
    normalize_before = args.same("encoder_normalize_before", "decoder_normalize_before", False)
    learned = args.same("encoder_learned_pos", "decoder_learned_pos", False)
    return dict(
        family=family,
        src_vocab_size=src_vocab, tgt_vocab_size=tgt_vocab,
        pad_id=FAIRSEQ_PAD, bos_id=FAIRSEQ_BOS, eos_id=FAIRSEQ_EOS, decoder_start_id=FAIRSEQ_EOS,
        d_model=d,
        encoder_layers=int(args.get("encoder_layers", 6)), decoder_layers=int(args.get("decoder_layers", 6)),
        encoder_ffn_dim=int(args.get("encoder_ffn_embed_dim", 2048)),
        decoder_ffn_dim=int(args.get("decoder_ffn_embed_dim", args.get("encoder_ffn_embed_dim", 2048))),
        encoder_heads=int(args.get("encoder_attention_heads", 8)),
        decoder_heads=int(args.get("decoder_attention_heads", 8)),
        cross_heads=int(args.get("decoder_attention_heads", 8)),
        dropout=float(args.get("dropout", 0.1)),
        attention_dropout=float(args.get("attention_dropout", 0.0)),
        activation_dropout=float(args.get("activation_dropout", args.get("relu_dropout", 0.0)) or 0.0),
        normalize_before=bool(normalize_before),
        share_all_embeddings=bool(args.get("share_all_embeddings", False)),
        share_decoder_input_output_embed=bool(args.get("share_decoder_input_output_embed", False)),
        learned_positions=bool(learned),
        position_embeddings=not bool(args.get("no_token_positional_embeddings", False)),
        position_offset=FAIRSEQ_PAD + 1,
        max_source_positions=int(args.get("max_source_positions", 1024)),
        max_target_positions=int(args.get("max_target_positions", 1024)),
    )


def _activation(args: _Args) -> str:
    name = args.get("activation_fn", "relu")
    if name not in ACTIVATIONS:
        refuse("activation_fn", f"{name!r} is not one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def transformer_config(args: _Args, src_vocab: int, tgt_vocab: int) -> ModelConfig:
    fields = _common(args, "transformer", src_vocab, tgt_vocab)
    fields.update(activation=_activation(args),
                  scale_embedding=not bool(args.get("no_scale_embedding", False)),
                  layernorm_embedding=bool(args.get("layernorm_embedding", False)),
                  decoder_final_norm=not bool(args.get("no_decoder_final_norm", False)))
    return ModelConfig(**fields)


def lightconv_config(args: _Args, src_vocab: int, tgt_vocab: int) -> ModelConfig:
    fields = _common(args, "", src_vocab, tgt_vocab)
    d = fields["d_model"]
    conv_dim = args.same("encoder_conv_dim", "decoder_conv_dim", d)
    if not args.get("weight_softmax", True):
        refuse("weight_softmax", "False (unnormalized kernels) is not supported; convtrans's convolutions "
                                 "softmax their taps")
    mixers = {}
    for side in ("encoder", "decoder"):
        kind = args.get(f"{side}_conv_type", "dynamic")
        if kind not in CONV_TYPES:
            refuse(f"{side}_conv_type", f"{kind!r} is not lightweight or dynamic")
        mixers[side] = CONV_TYPES[kind]
    family = mixers["encoder"] if mixers["encoder"] == mixers["decoder"] else "lightconv+dynamicconv"
    fields.update(family=family, encoder_mixer=mixers["encoder"], decoder_mixer=mixers["decoder"],
                  encoder_kernel_sizes=_kernels(args, "encoder"), decoder_kernel_sizes=_kernels(args, "decoder"),
                  encoder_glu=bool(args.get("encoder_glu", True)), decoder_glu=bool(args.get("decoder_glu", True)),
                  conv_dim=int(conv_dim) if int(conv_dim) != d else 0,
                  weight_dropout=float(args.get("weight_dropout", fields["attention_dropout"])),
                  input_dropout=float(args.get("input_dropout", 0.1)))
    return ModelConfig(**fields)


def _branches(args: _Args, side: str) -> list[tuple[str, str, int, int]]:
    """Lite's `type:kernel:dim:heads` branch specs of one side."""
    raw = args.get(f"{side}_branch_type", None)
    if not raw:
        refuse(f"{side}_branch_type", "missing: a multibranch layer without branches is a plain Transformer layer")
    specs = []
    for spec in raw:
        parts = str(spec).split(":")
        if len(parts) != 4 or not parts[2].isdigit() or not parts[3].isdigit():
            refuse(f"{side}_branch_type", f"{spec!r} is not type:kernel:dim:heads")
        specs.append((parts[0], parts[1], int(parts[2]), int(parts[3])))
    return specs


def multibranch_config(args: _Args, src_vocab: int, tgt_vocab: int) -> ModelConfig:
    """Lite Transformer: each layer's token mixer is [attention | conv] over split channels (LSRA)."""
    fields = _common(args, "lite_transformer", src_vocab, tgt_vocab)
    if args.get("encoder_decoder_branch_type", None):
        refuse("encoder_decoder_branch_type", "multibranch cross-attention is not supported")
    if not args.get("conv_linear", False):
        refuse("conv_linear", "False: the fork's conv branches need their Linear layers (with_linear)")
    if not args.get("weight_softmax", True):
        refuse("weight_softmax", "False (unnormalized kernels) is not supported")
    if args.get("input_transform", None) not in (None, "", "None", False):
        refuse("input_transform", "embedding input transforms are not supported")
    layouts = {}
    for side in ("encoder", "decoder"):
        branches = _branches(args, side)
        kinds = [kind for kind, *_ in branches]
        if len(branches) != 2 or kinds[0] != "attn" or kinds[1] not in CONV_TYPES:
            refuse(f"{side}_branch_type", f"{kinds} is not [attn, lightweight|dynamic] (the attention branch first)")
        (_, _, attn_dim, attn_heads), (conv_kind, kernel, conv_dim, conv_heads) = branches
        if attn_dim + conv_dim != fields["d_model"]:
            refuse(f"{side}_branch_type", f"branch widths {attn_dim}+{conv_dim} do not add up to {fields['d_model']}")
        layers = fields[f"{side}_layers"]
        kernels = _kernels(args, side) if kernel == "default" else (int(kernel),) * layers
        if side == "encoder" and any(k % 2 == 0 for k in kernels):
            refuse("encoder_kernel_size_list", "an even encoder kernel pads asymmetrically")
        layouts[side] = (attn_dim, attn_heads, CONV_TYPES[conv_kind], conv_heads, kernels)
    if layouts["encoder"][:4] != layouts["decoder"][:4]:
        refuse("decoder_branch_type", "differs from encoder_branch_type in width, heads or conv type; convtrans "
                                      "uses one layout for both")
    attn_dim, attn_heads, conv_kind, conv_heads, _ = layouts["encoder"]
    lightweight = conv_kind == "lightconv"  # the fork's LightweightConv branch has no GLU, whatever *_glu says
    fields.update(encoder_mixer="lsra", decoder_mixer="lsra", lsra_attention_dim=attn_dim, lsra_heads=attn_heads,
                  lsra_conv=conv_kind, lsra_conv_heads=conv_heads if conv_heads != attn_heads else 0,
                  encoder_kernel_sizes=layouts["encoder"][4], decoder_kernel_sizes=layouts["decoder"][4],
                  encoder_glu=bool(args.get("encoder_glu", True)) and not lightweight,
                  decoder_glu=bool(args.get("decoder_glu", True)) and not lightweight,
                  activation=_activation(args),
                  decoder_final_norm=not bool(args.get("no_decoder_final_norm", False)),
                  weight_dropout=float(args.get("weight_dropout", fields["attention_dropout"])))
    return ModelConfig(**fields)


FAMILIES: dict[str, Callable[[_Args, int, int], ModelConfig]] = {
    "transformer": transformer_config,
    "lightconv": lightconv_config,
    "multibranch": multibranch_config,
}


def family_of(arch: str) -> str:
    """Which reader an arch needs, or a one-line refusal."""
    if arch.startswith("lightconv"):
        return "lightconv"
    if arch.startswith("transformer_multibranch_v2"):
        return "multibranch"
    unsupported = ("transformer_lm", "transformer_align", "transformer_wmt_en_de_big_align",
                   "transformer_from_pretrained_xlm", "transformer_multibranch")
    if arch.startswith("transformer") and not arch.startswith(unsupported):
        return "transformer"
    raise UserError(f"cannot import this checkpoint: arch {arch!r} is not a translation Transformer, LightConv/"
                    "DynamicConv or Lite Transformer (transformer_multibranch_v2) arch")


def read_model(state: dict[str, Any], src_vocab: int, tgt_vocab: int,
               readers: dict[str, Callable[[_Args, int, int], ModelConfig]] | None = None) -> FairseqModel:
    """The FairseqModel a checkpoint's args describe, for dictionaries of the given sizes."""
    model_args, _ = checkpoint_args(state)
    arch = str(model_args.get("arch") or model_args.get("_name") or "")
    if not arch:
        raise UserError("cannot import this checkpoint: its args name no arch")
    family = family_of(arch)
    readers = readers or FAMILIES
    if family not in readers:
        raise UserError(f"cannot import this checkpoint: no reader for {family} archs")
    config = readers[family](_Args(model_args), src_vocab, tgt_vocab)
    return FairseqModel(family, arch, config, model_args)


def checkpoint_languages(state: dict[str, Any]) -> tuple[str | None, str | None]:
    """(source, target) language as the checkpoint's task (or older model) args record them."""
    model_args, task_args = checkpoint_args(state)
    return (task_args.get("source_lang") or model_args.get("source_lang"),
            task_args.get("target_lang") or model_args.get("target_lang"))
