"""Memory a model or a decode needs, checked against what the machine has before allocating.

A config.json with `d_model: 65536`, a vocabulary of 2^31-1 or 100,000 layers, or `--beam 50000`,
would otherwise allocate for minutes and take the machine down before failing with a traceback.
Every model is measured here first, without allocating: one encoder and one decoder layer are
built on PyTorch's meta device (shapes only) and scaled by the layer counts, plus embeddings and
position tables. A model that does not fit is refused in one line naming the field most out of
the ordinary and the memory it would take.

Estimates are of fp32 tensors that are certain to be allocated (weights, buffers, and for
training their gradients and Adam's two moments); activations come on top. They are meant to
refuse what can never fit, not to predict the peak to the byte.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from convtrans.config import ModelConfig
from convtrans.errors import UserError

FP32 = 4
# Deeper than any published seq2seq model (DeepNet trained 1,000 layers); each layer also costs
# Python objects and build time that the tensor estimate does not see.
MAX_LAYERS = 1000
# Training keeps, per parameter, the weight, its gradient and Adam's two moments.
TRAINING_COPIES = 4
# Share of the free memory a decode batch may plan to use (the rest is for the model, the
# allocator's slack and everything else on the machine).
DECODE_SHARE = 0.5
# Width-like fields and their ordinary values (ModelConfig's defaults), for naming the culprit.
_WIDTH_FIELDS = ("d_model", "encoder_ffn_dim", "decoder_ffn_dim", "conv_dim", "lsra_attention_dim", "synth_max_len",
                 "synth_rank", "encoder_heads", "decoder_heads", "cross_heads", "lsra_heads")


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(count) < 1000 or unit == "PB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} PB"  # pragma: no cover - the loop always returns


# ---------------------------------------------------------------------- what the machine has
def pick_device(requested: str = "auto", local_rank: int | None = None) -> torch.device:
    """The device for `--device auto|cpu|cuda[:N]`: auto takes CUDA when there is one. Under
    torchrun (`local_rank` given) each process takes its own GPU."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cpu":
        return torch.device("cpu")
    if not requested.startswith("cuda"):
        raise UserError(f"--device must be auto, cpu or cuda, got {requested!r}")
    if not torch.cuda.is_available():
        raise UserError("--device cuda requested but no CUDA device is available")
    if local_rank is not None:
        return torch.device("cuda", local_rank)
    return torch.device(requested) if ":" in requested else torch.device("cuda", torch.cuda.current_device())


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_bytes(device: torch.device | str = "cpu") -> int | None:
    """Free memory on `device`: the GPU's free memory, or on the CPU the smallest of the kernel's
    MemAvailable and a cgroup (container) limit minus its usage. None when nothing can be read."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    candidates = []
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    candidates.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < 1 << 60:
            candidates.append(max(limit - usage, 0))
    if not candidates:
        try:
            candidates.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
    return min(candidates)


# ---------------------------------------------------------------------- what a model needs
@dataclass(frozen=True)
class Footprint:
    """Elements (fp32 values) of a model's parameters and buffers, by the field that scales them."""

    parts: dict[str, int]  # field name -> elements it accounts for
    parameters: int

    @property
    def elements(self) -> int:
        return sum(self.parts.values())


def _elements(module: torch.nn.Module) -> tuple[int, int]:
    """(parameter elements, buffer elements) of a module, tied tensors once."""
    params = {id(p): p.numel() for p in module.parameters()}
    buffers = {id(b): b.numel() for b in module.buffers()}
    return sum(params.values()), sum(buffers.values())


def footprint(config: ModelConfig) -> Footprint:
    """What the model `config` describes holds, measured without allocating (see the module docstring)."""
    from convtrans.model import DecoderLayer, EncoderLayer

    one_layer: dict[str, Any] = {"encoder_layers": 1, "decoder_layers": 1}
    for side in ("encoder", "decoder"):  # the widest kernel stands for every layer: an upper bound
        kernels = getattr(config, f"{side}_kernel_sizes")
        if kernels:
            one_layer[f"{side}_kernel_sizes"] = (max(kernels),)
    single = dataclasses.replace(config, **one_layer)
    with torch.device("meta"):
        enc_params, enc_buffers = _elements(EncoderLayer(single, 0))
        dec_params, dec_buffers = _elements(DecoderLayer(single, 0))
    d = config.d_model
    src_tokens = config.src_vocab_size * d
    tgt_tokens = 0 if config.share_all_embeddings else config.tgt_vocab_size * d
    output = 0 if (config.share_all_embeddings or config.share_decoder_input_output_embed) else config.tgt_vocab_size * d
    output += config.tgt_vocab_size if config.output_bias else 0
    final_norms = config.normalize_before * (config.encoder_final_norm + config.decoder_final_norm)
    norms = 2 * d * (final_norms + 2 * config.layernorm_embedding)  # LayerNorm weight + bias each
    rows = config.position_offset if config.position_embeddings else 0
    positions = {"max_source_positions": (config.max_source_positions + rows) * d * config.position_embeddings,
                 "max_target_positions": (config.max_target_positions + rows) * d * config.position_embeddings}
    parts = {
        "encoder_layers": config.encoder_layers * (enc_params + enc_buffers),
        "decoder_layers": config.decoder_layers * (dec_params + dec_buffers),
        "src_vocab_size": src_tokens,
        "tgt_vocab_size": tgt_tokens + output,
        **positions,
        "d_model": norms,
    }
    learned = sum(positions.values()) if config.learned_positions else 0
    parameters = (config.encoder_layers * enc_params + config.decoder_layers * dec_params + src_tokens + tgt_tokens
                  + output + norms + learned)
    return Footprint(parts, parameters)


def _culprit(config: ModelConfig, fp: Footprint) -> str:
    """The field to name when a model is too large: the largest part, or for layers whose count is
    ordinary, the width field furthest above its default."""
    part = max(fp.parts, key=lambda name: fp.parts[name])
    layers = getattr(config, part, 0) if part.endswith("_layers") else 0
    if part.endswith("_layers") and layers <= 64:
        defaults = ModelConfig()
        ratios = {name: getattr(config, name) / max(getattr(defaults, name), 1) for name in _WIDTH_FIELDS}
        part = max(ratios, key=lambda name: ratios[name])
    return part


def check_fits(config: ModelConfig, purpose: str = "inference", device: torch.device | str = "cpu",
               available: int | None = None) -> int:
    """Refuse a model that cannot fit in `device`'s free memory for `purpose` ("inference" or
    "training"); returns the bytes it needs. `available` overrides the measured free memory."""
    for side in ("encoder", "decoder"):
        layers = getattr(config, f"{side}_layers")
        if layers > MAX_LAYERS:
            raise UserError(f"config field {side}_layers={layers}: more than {MAX_LAYERS} layers is not supported")
    fp = footprint(config)
    copies = TRAINING_COPIES if purpose == "training" else 1
    need = fp.elements * FP32 + (copies - 1) * fp.parameters * FP32
    free = available_bytes(device) if available is None else available
    if free is not None and need > free:
        field = _culprit(config, fp)
        what = "weights, gradients and Adam moments" if purpose == "training" else "weights"
        raise UserError(f"config field {field}={getattr(config, field)}: this model needs {human_bytes(need)} for "
                        f"{purpose} ({fp.parameters / 1e6:,.1f}M parameters: {what}), more than the "
                        f"{human_bytes(free)} free on {torch.device(device).type}")
    return need


# ---------------------------------------------------------------------- what a decode needs
def decode_bytes_per_row(config: ModelConfig, src_len: int, out_len: int) -> int:
    """Bytes one beam row (a hypothesis) holds while decoding: next-token scores over the
    vocabulary (logits, log-probabilities, constrained and ranked copies), every decoder layer's
    self state and cross-attention keys/values, twice over while a beam reorder copies them."""
    d = config.d_model
    if config.decoder_mixer in ("lightconv", "dynamicconv"):
        self_state = max(config.decoder_kernel_sizes or (1,)) * 2 * config.conv_width
    else:  # attention, synthesizer and Lite Transformer keep keys/values of every step
        self_state = 2 * out_len * d
    cross = 2 * src_len * d
    per_layer = 2 * (self_state + cross)
    return FP32 * (5 * config.tgt_vocab_size + config.decoder_layers * per_layer + 2 * out_len)


def sentences_per_batch(config: ModelConfig, beam: int, src_len: int, out_len: int, wanted: int,
                        device: torch.device | str = "cpu", available: int | None = None) -> int:
    """How many sentences of `src_len` subwords (and up to `out_len` output subwords) to decode at
    once with `beam` rows each: at most `wanted`, fewer if memory is short. Refuses a beam whose
    rows for one sentence cannot fit."""
    free = available_bytes(device) if available is None else available
    if free is None:
        return wanted
    per_sentence = beam * decode_bytes_per_row(config, src_len, out_len)
    budget = int(free * DECODE_SHARE)
    if per_sentence > budget:
        raise UserError(f"generate field beam: beam {beam} needs {human_bytes(per_sentence)} to decode one sentence of "
                        f"{src_len} subwords with this model (vocabulary {config.tgt_vocab_size:,}), more than the "
                        f"{human_bytes(budget)} it may use ({DECODE_SHARE:.0%} of the free memory); use a smaller --beam")
    return max(1, min(wanted, budget // per_sentence))
