"""fairseq state dict → convtrans state dict: renames, the upgrades fairseq applies on load, checks.

fairseq upgrades old state dicts when it loads them (`upgrade_state_dict_named`); the same rules
are applied here so 2018-2019 files read like current ones:
- `in_proj_weight`/`in_proj_bias` (3C×C, q|k|v stacked) split into q_proj, k_proj, v_proj;
- Transformer layers' `layer_norms.0/1(/2)` renamed to self_attn/(encoder_attn/)final_layer_norm;
- LightConv kernels of shape (H, 1, K) (the TBC module) or (H, K) (the CUDA module) both read;
- `decoder.embed_out` (older) and `decoder.output_projection.weight` (newer) both read.
Ignored on purpose: `*.version` markers, `*.embed_positions._float_tensor` (a dummy of the
sinusoidal table), fairseq 0.12's BetterTransformer copies in encoder layers (`in_proj_weight`,
`fc1_weight`, ... at the layer level) and a tied output projection (a second name for the
embedding, which must equal it). Every other
tensor must be consumed and every convtrans tensor filled with the right shape, else the import
stops with one line naming the tensor.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

from convtrans.errors import UserError
from convtrans.imports.writer import complete_tensors

Rename = Callable[[str], str | None]
IGNORED = (
    re.compile(r"(^|\.)version$"),
    re.compile(r"\.embed_positions\._float_tensor$"),
    # fairseq 0.12's TransformerEncoderLayerBase keeps flat copies of its attention and FFN weights
    # for the BetterTransformer fast path (zeros until a load fills them from the real ones)
    re.compile(r"^encoder\.layers\.\d+\.(in_proj|out_proj|fc1|fc2)_(weight|bias)$"),
)


def split_in_proj(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Old fused attention projections → separate q/k/v (MultiheadAttention.upgrade_state_dict_named)."""
    out = {}
    for name, tensor in state.items():
        match = re.match(r"(.*(?:attn|branches\.\d+))\.in_proj_(weight|bias)$", name)
        if not match:
            out[name] = tensor
            continue
        prefix, kind = match.groups()
        for part, chunk in zip(("q", "k", "v"), tensor.chunk(3, dim=0)):
            out[f"{prefix}.{part}_proj.{kind}"] = chunk.contiguous()
    return out


def rename_transformer_layer_norms(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Transformer layers' old `layer_norms.N` names (TransformerEncoder/DecoderLayer upgrades)."""
    names = {"encoder": ("self_attn_layer_norm", "final_layer_norm"),
             "decoder": ("self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm")}
    out = {}
    for name, tensor in state.items():
        match = re.match(r"(encoder|decoder)\.layers\.(\d+)\.layer_norms\.(\d+)\.(weight|bias)$", name)
        if match:
            side, layer, index, kind = match.groups()
            name = f"{side}.layers.{layer}.{names[side][int(index)]}.{kind}"
        out[name] = tensor
    return out


def _attention(prefix_to: str, rest: str) -> str | None:
    match = re.match(r"(q_proj|k_proj|v_proj|out_proj)\.(weight|bias)$", rest)
    return f"{prefix_to}.{match.group(1)}.{match.group(2)}" if match else None


def _embeddings(name: str) -> str | None:
    table = {
        "encoder.embed_tokens.weight": "src_embed.tokens.weight",
        "decoder.embed_tokens.weight": "tgt_embed.tokens.weight",
        "encoder.embed_positions.weight": "src_embed.positions.weight",
        "decoder.embed_positions.weight": "tgt_embed.positions.weight",
        "encoder.layernorm_embedding.weight": "src_embed.norm.weight",
        "encoder.layernorm_embedding.bias": "src_embed.norm.bias",
        "decoder.layernorm_embedding.weight": "tgt_embed.norm.weight",
        "decoder.layernorm_embedding.bias": "tgt_embed.norm.bias",
        "encoder.layer_norm.weight": "encoder_norm.weight",
        "encoder.layer_norm.bias": "encoder_norm.bias",
        "decoder.layer_norm.weight": "decoder_norm.weight",
        "decoder.layer_norm.bias": "decoder_norm.bias",
        "decoder.embed_out": "output.weight",
        "decoder.output_projection.weight": "output.weight",
    }
    return table.get(name)


LAYER_PARTS = {
    # fairseq layer submodule -> convtrans layer submodule (the parts every family shares)
    "fc1": "ffn.fc1", "fc2": "ffn.fc2",
    "final_layer_norm": "ffn_block.norm",
    "self_attn_layer_norm": "mix_block.norm",
    "conv_layer_norm": "mix_block.norm",
    "encoder_attn_layer_norm": "cross_block.norm",
}


def transformer_rename(name: str) -> str | None:
    """A Transformer or LightConv tensor name in convtrans's names (None: not one we know)."""
    if (mapped := _embeddings(name)) is not None:
        return mapped
    match = re.match(r"(encoder|decoder)\.layers\.(\d+)\.(.+)$", name)
    if not match:
        return None
    side, layer, rest = match.groups()
    prefix = f"{side}.{layer}"
    part, _, leaf = rest.rpartition(".")
    if part in LAYER_PARTS:
        return f"{prefix}.{LAYER_PARTS[part]}.{leaf}"
    if rest.startswith("self_attn.branches."):  # Lite Transformer: branch 0 attention, branch 1 conv
        branch, _, leaf_name = rest[len("self_attn.branches."):].partition(".")
        if branch == "0":
            return _attention(f"{prefix}.mixer.attention", leaf_name)
        conv = {"linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias", "weight_linear.weight"}
        if branch == "1" and leaf_name in conv:
            return f"{prefix}.mixer.conv.{leaf_name}"
        if branch == "1" and leaf_name == "weight":
            return f"{prefix}.mixer.conv.weight"
        return None
    if rest.startswith("self_attn."):
        return _attention(f"{prefix}.mixer.attn", rest[len("self_attn."):])
    if rest.startswith("encoder_attn."):
        return _attention(f"{prefix}.cross", rest[len("encoder_attn."):])
    # LightConv / DynamicConv blocks
    lightconv = {"linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"}
    if rest in lightconv:
        return f"{prefix}.mixer.{rest}"
    if rest == "conv.weight":
        return f"{prefix}.mixer.weight"
    if rest == "conv.weight_linear.weight":
        return f"{prefix}.mixer.weight_linear.weight"
    match = re.match(r"layer_norms\.([01])\.(weight|bias)$", rest)  # LightConv encoder layers keep these names
    if match and side == "encoder":
        return f"{prefix}.{('mix_block', 'ffn_block')[int(match.group(1))]}.norm.{match.group(2)}"
    return None


def convert(state: dict[str, torch.Tensor], expected: dict[str, torch.Size], rename: Rename,
            tied: dict[str, str]) -> dict[str, torch.Tensor]:
    """convtrans tensors from a fairseq state dict: every expected name filled with its shape.

    `tied`: convtrans names that are another name's tensor (filled from it; the fairseq tensor
    under that name, if any, is a second name for the same weights and must equal it)."""
    state = rename_transformer_layer_norms(split_in_proj(state))
    out: dict[str, torch.Tensor] = {}
    aliases: list[tuple[str, str, torch.Tensor]] = []  # (fairseq name, convtrans name, tensor) of tied copies
    for name, tensor in state.items():
        if any(pattern.search(name) for pattern in IGNORED):
            continue
        ours = rename(name)
        if ours is None:
            raise UserError(f"cannot import this checkpoint: tensor {name} {list(tensor.shape)} has no place in the "
                            "model its args describe")
        if ours in tied:
            aliases.append((name, ours, tensor))  # a second name of a tied matrix (checked below)
            continue
        if ours in out:
            raise UserError(f"cannot import this checkpoint: tensors for {ours} appear twice (e.g. {name})")
        if ours.endswith(("mixer.weight", "mixer.conv.weight")) and tensor.dim() == 3:  # LightConv TBC kernel (H, 1, K)
            tensor = tensor.squeeze(1)
        out[ours] = tensor.float()
    for name, ours, tensor in aliases:
        source = out.get(tied[ours])
        if source is not None and (tensor.shape != source.shape or not torch.equal(tensor.float(), source)):
            raise UserError(f"cannot import this checkpoint: {name} differs from {tied[ours]} though the args tie them")
    return complete_tensors(out, expected, tied, "checkpoint", "the checkpoint", "the args give")
