"""Model configuration: one frozen dataclass that fully describes an EncoderDecoder.

A config round-trips through JSON (saved in every checkpoint, so a checkpoint loads without the
preset that made it), is read from preset TOML files in models/presets, and takes `key=value`
overrides cast by the field's type. Validation messages name the field.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from convtrans.errors import UserError

FORMAT_VERSION = 1
MIXERS = ("attention", "lightconv", "dynamicconv", "synthesizer", "lsra")
SYNTH_PARTS = ("dense", "random", "fixed_random", "factorized_dense", "factorized_random", "vanilla")
CONV_MIXERS = ("lightconv", "dynamicconv", "lsra")
# FFN activations: fairseq's and Hugging Face's names map onto these (imports/); gelu is the exact
# (erf) one, gelu_tanh its tanh approximation (fairseq gelu_accurate, HF gelu_new), silu = swish
ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu")
# Sinusoid tables: "fairseq" (tensor2tensor's, frequencies 10000^(-i/(half-1))) or "marian"
# (Vaswani's, 10000^(-i/half), which Marian and Hugging Face's MarianMT use); both put sin first
SINUSOIDS = ("fairseq", "marian")
# Beam sizes past a few dozen stop helping translation; 1024 leaves room for n-best lists for
# reranking while a typo (--beam 50000) is refused instead of allocating for minutes. The memory a
# beam needs is checked as well (resources.py), so a large beam on a large vocabulary is refused
# with the number it would take.
MAX_BEAM = 1024
SEARCHES = ("fairseq", "hf")
EARLY_STOPPING = ("heuristic", "true", "never")


_S = TypeVar("_S", bound="_Serializable")


def _fields(obj: Any) -> tuple[dataclasses.Field, ...]:
    """dataclasses.fields of a _Serializable (every subclass is a dataclass; the mixin is not)."""
    return dataclasses.fields(obj)


class _Serializable:
    """to/from dict and JSON with unknown keys refused and values checked against field types,
    plus `key=value` overrides parsed by the field's type (`3,7,15` for tuples)."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in _fields(self)}

    @classmethod
    def from_dict(cls: type[_S], data: dict[str, Any]) -> _S:
        known = {f.name for f in _fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
        return cls(**{k: _cast(cls, k, v) for k, v in data.items()})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls: type[_S], text: str) -> _S:
        return cls.from_dict(json.loads(text))

    def replace(self: _S, **changes: Any) -> _S:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]  # every subclass is a dataclass

    def with_overrides(self: _S, assignments: list[str]) -> _S:
        changes = {}
        for assignment in assignments:
            key, sep, raw = assignment.partition("=")
            key = key.strip()
            if not sep:
                raise UserError(f"--set expects key=value, got {assignment!r}")
            changes[key] = parse_field(type(self), key, raw.strip())
        return self.from_dict({**self.to_dict(), **changes})


@dataclass(frozen=True)
class ModelConfig(_Serializable):
    """Every hyperparameter of an encoder-decoder; names follow fairseq where one exists."""

    format_version: int = FORMAT_VERSION
    family: str = "transformer"  # display name of the model family; the mixers decide the structure
    # vocabulary: filled in from the data directory at train time
    src_vocab_size: int = 8000
    tgt_vocab_size: int = 8000
    pad_id: int = 0
    bos_id: int = 2
    eos_id: int = 3
    # the token the decoder starts from (-1: bos_id). fairseq models start from EOS, Marian from pad;
    # the start token is never generated unless it is EOS
    decoder_start_id: int = -1
    # widths and depths
    d_model: int = 512
    encoder_layers: int = 6
    decoder_layers: int = 6
    encoder_ffn_dim: int = 2048
    decoder_ffn_dim: int = 2048
    encoder_heads: int = 8  # heads of the encoder token mixer (attention or conv)
    decoder_heads: int = 8  # heads of the decoder self mixer
    cross_heads: int = 8  # heads of encoder-decoder attention
    # token mixers: attention | lightconv | dynamicconv | synthesizer | lsra
    encoder_mixer: str = "attention"
    decoder_mixer: str = "attention"
    # convolutions (lightconv, dynamicconv and the conv branch of lsra)
    encoder_kernel_sizes: tuple[int, ...] = ()  # one per layer (a single value is broadcast)
    decoder_kernel_sizes: tuple[int, ...] = ()
    encoder_glu: bool = True  # Linear(d → 2·conv_dim) + GLU before the conv, else Linear(d → conv_dim)
    decoder_glu: bool = True
    conv_dim: int = 0  # channels inside a conv block; 0 = d_model
    # Lite Transformer long-short range attention (mixer "lsra")
    lsra_attention_dim: int = 0  # channels of the attention branch; the conv branch gets the rest; 0 = d/2
    lsra_heads: int = 4  # heads of each branch
    lsra_conv: str = "lightconv"  # conv branch: lightconv | dynamicconv
    # Synthesizer (mixer "synthesizer"): logits of the parts are mixed with learned softmax weights
    synth_parts: tuple[str, ...] = ("dense",)
    synth_max_len: int = 512  # l: synthesized logits cover l positions; longer inputs are refused
    synth_factors: tuple[int, int] = (16, 32)  # factorized_dense: a·b = synth_max_len
    synth_rank: int = 16  # factorized_random: R = R1·R2ᵀ with rank k
    # regularization
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0  # after the FFN's ReLU (fairseq's relu_dropout)
    weight_dropout: float = 0.0  # DropConnect on normalized conv kernels
    # LightConv's DropConnect mask: "shared" draws one per (head, tap) for the whole batch (free in a
    # fused kernel); "position" draws one per (batch, step, head, tap), as fairseq's LightConv does
    lightconv_dropconnect: str = "shared"
    input_dropout: float = 0.0  # on the input of a conv block
    # structure
    normalize_before: bool = False  # pre-norm (True) or post-norm (False)
    share_all_embeddings: bool = False  # encoder, decoder and output share one matrix (joint vocab)
    share_decoder_input_output_embed: bool = False
    learned_positions: bool = False  # else sinusoidal
    max_source_positions: int = 1024
    max_target_positions: int = 1024
    # embeddings and output as imported models need them (the defaults are convtrans's own models)
    scale_embedding: bool = True  # token embeddings × √d (fairseq's no_scale_embedding turns it off)
    position_embeddings: bool = True  # fairseq's no_token_positional_embeddings turns positions off
    position_offset: int = 0  # the first position reads row position_offset (fairseq: pad + 1)
    sinusoid: str = "fairseq"  # sinusoid table: fairseq | marian
    layernorm_embedding: bool = False  # LayerNorm after token + position embedding (fairseq, mBART)
    activation: str = "relu"  # FFN activation: relu | gelu | gelu_tanh | silu
    output_bias: bool = False  # a bias on the output projection (Marian's final_logits_bias)
    decoder_final_norm: bool = True  # pre-norm: LayerNorm after the last decoder layer (no_decoder_final_norm)
    encoder_final_norm: bool = True  # pre-norm: LayerNorm after the last encoder layer (pre-2019 fairseq had none)
    lsra_conv_heads: int = 0  # heads of the lsra conv branch; 0 = lsra_heads (Lite's branches may differ)

    def __post_init__(self) -> None:
        for name in ("encoder_kernel_sizes", "decoder_kernel_sizes", "synth_parts", "synth_factors"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        def need(condition: bool, field: str, message: str) -> None:
            if not condition:
                raise UserError(f"config field {field}: {message} (got {getattr(self, field)!r})")

        need(self.format_version == FORMAT_VERSION, "format_version", f"this convtrans reads {FORMAT_VERSION}")
        for field in ("src_vocab_size", "tgt_vocab_size", "d_model", "encoder_layers", "decoder_layers",
                      "encoder_ffn_dim", "decoder_ffn_dim", "encoder_heads", "decoder_heads", "cross_heads",
                      "max_source_positions", "max_target_positions", "lsra_heads", "synth_max_len", "synth_rank"):
            need(getattr(self, field) > 0, field, "must be positive")
        for field in ("pad_id", "bos_id", "eos_id"):
            valid_id = 0 <= getattr(self, field) < min(self.src_vocab_size, self.tgt_vocab_size)
            need(valid_id, field, "must be a valid token id")
        need(self.decoder_start_id == -1 or 0 <= self.decoder_start_id < self.tgt_vocab_size, "decoder_start_id",
             "must be -1 (bos_id) or a valid target token id")
        need(self.activation in ACTIVATIONS, "activation", f"must be one of {', '.join(ACTIVATIONS)}")
        need(self.sinusoid in SINUSOIDS, "sinusoid", f"must be one of {', '.join(SINUSOIDS)}")
        need(self.position_offset >= 0, "position_offset", "must be >= 0")
        need(self.lsra_conv_heads >= 0, "lsra_conv_heads", "must be >= 0")
        for field in ("dropout", "attention_dropout", "activation_dropout", "weight_dropout", "input_dropout"):
            need(0.0 <= getattr(self, field) < 1.0, field, "must be in [0, 1)")
        need(self.conv_dim >= 0, "conv_dim", "must be >= 0")
        for side in ("encoder", "decoder"):
            mixer, heads = getattr(self, f"{side}_mixer"), getattr(self, f"{side}_heads")
            layers = getattr(self, f"{side}_layers")
            need(mixer in MIXERS, f"{side}_mixer", f"must be one of {', '.join(MIXERS)}")
            width = self.conv_width if mixer in ("lightconv", "dynamicconv") else self.d_model
            if mixer != "lsra":
                need(width % heads == 0, f"{side}_heads", f"must divide the mixer width {width}")
            if mixer in CONV_MIXERS:
                kernels = getattr(self, f"{side}_kernel_sizes")
                need(len(kernels) in (1, layers), f"{side}_kernel_sizes", f"needs 1 or {side}_layers={layers} values")
                need(all(k >= 1 for k in kernels), f"{side}_kernel_sizes", "kernel sizes must be positive")
                if side == "encoder":
                    need(all(k % 2 == 1 for k in kernels), "encoder_kernel_sizes", "must be odd (centered padding K//2)")
        need(self.d_model % self.cross_heads == 0, "cross_heads", f"must divide d_model={self.d_model}")
        if "lsra" in (self.encoder_mixer, self.decoder_mixer):
            attn = self.lsra_attention_width
            need(0 < attn < self.d_model, "lsra_attention_dim", f"must be in (0, d_model={self.d_model})")
            need(attn % self.lsra_heads == 0, "lsra_heads", "must divide the attention branch width")
            need((self.d_model - attn) % self.lsra_conv_branch_heads == 0,
                 "lsra_conv_heads" if self.lsra_conv_heads else "lsra_heads", "must divide the conv branch width")
            need(self.lsra_conv in ("lightconv", "dynamicconv"), "lsra_conv", "must be lightconv or dynamicconv")
        need(self.lightconv_dropconnect in ("shared", "position"), "lightconv_dropconnect", "must be shared or position")
        if "synthesizer" in (self.encoder_mixer, self.decoder_mixer):
            need(len(self.synth_parts) > 0 and all(p in SYNTH_PARTS for p in self.synth_parts), "synth_parts",
                 f"each part must be one of {', '.join(SYNTH_PARTS)}")
            need(len(set(self.synth_parts)) == len(self.synth_parts), "synth_parts", "parts must not repeat")
            need(len(self.synth_factors) == 2 and self.synth_factors[0] * self.synth_factors[1] == self.synth_max_len,
                 "synth_factors", f"needs two numbers whose product is synth_max_len={self.synth_max_len}")
        if self.share_all_embeddings:
            need(self.src_vocab_size == self.tgt_vocab_size, "share_all_embeddings", "needs a joint vocabulary")

    # ------------------------------------------------------------------ derived values
    @property
    def conv_width(self) -> int:
        return self.conv_dim or self.d_model

    @property
    def lsra_attention_width(self) -> int:
        return self.lsra_attention_dim or self.d_model // 2

    @property
    def lsra_conv_branch_heads(self) -> int:
        return self.lsra_conv_heads or self.lsra_heads

    @property
    def start_id(self) -> int:
        """The token the decoder reads first."""
        return self.bos_id if self.decoder_start_id < 0 else self.decoder_start_id

    @property
    def max_source_len(self) -> int:
        """The most source subwords the encoder reads (one more position holds EOS); a synthesizer
        encoder's logits also cover only synth_max_len positions."""
        positions = self.max_source_positions
        if self.encoder_mixer == "synthesizer":
            positions = min(positions, self.synth_max_len)
        return positions - 1

    @property
    def max_target_len(self) -> int:
        """The most target subwords the decoder writes before EOS (position 0 holds BOS); a
        synthesizer decoder is also bound by synth_max_len."""
        positions = self.max_target_positions
        if self.decoder_mixer == "synthesizer":
            positions = min(positions, self.synth_max_len)
        return positions - 1

    def kernel_size(self, side: str, layer: int) -> int:
        kernels = getattr(self, f"{side}_kernel_sizes")
        return kernels[0] if len(kernels) == 1 else kernels[layer]



@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    """A config class's field types (resolving them costs ~1 ms; every field of every load asks)."""
    return typing.get_type_hints(cls)


def _field_type(cls: type, name: str) -> Any:
    hints = _type_hints(cls)
    if name not in hints:
        raise UserError(f"unknown config field {name!r}")
    return hints[name]


def _cast(cls: type, name: str, value: Any) -> Any:
    """Check a JSON/TOML value against the field's type (lists become tuples, ints may be floats)."""
    hint = _field_type(cls, name)

    def scalar(kind: type, item: Any) -> Any:
        if kind is float and type(item) is int:
            return float(item)
        if type(item) is not kind:
            raise UserError(f"config field {name}: expected {_type_name(hint)}, got {value!r}")
        return item

    if typing.get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config field {name}: expected a list, got {value!r}")
        return tuple(scalar(typing.get_args(hint)[0], item) for item in value)
    return scalar(hint, value)


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))


def parse_field(cls: type, name: str, raw: str) -> Any:
    """Parse a command-line string for a field of `cls` by its type."""
    hint = _field_type(cls, name)
    origin = typing.get_origin(hint)
    try:
        if origin is tuple:
            item = typing.get_args(hint)[0]
            return tuple(item(part.strip()) for part in raw.split(",") if part.strip())
        if hint is bool:
            lowered = raw.lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return lowered in ("true", "1", "yes")
        return hint(raw)
    except (TypeError, ValueError):
        raise UserError(f"{name}={raw!r}: expected {_type_name(hint)}") from None


@dataclass(frozen=True)
class TrainConfig(_Serializable):
    """How to train: optimizer, schedule, batching, precision, checkpointing (fairseq names).

    Presets carry the paper recipe in a [train] table; the CLI overrides single fields.
    """

    lr: float = 5e-4
    lr_scheduler: str = "inverse_sqrt"  # inverse_sqrt | cosine | fixed
    warmup_updates: int = 4000
    warmup_init_lr: float = 1e-7
    min_lr: float = 1e-7  # cosine: floor of the schedule
    lr_period_updates: int = 0  # cosine: length of the first period after warmup (0 = until max_update)
    adam_betas: tuple[float, float] = (0.9, 0.98)
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    clip_norm: float = 0.0  # 0 = no clipping
    label_smoothing: float = 0.1
    max_tokens: int = 4096  # per batch, source or target side, whichever is longer (padding included)
    update_freq: int = 1  # gradient accumulation: batches per update
    max_update: int = 0  # 0 = no limit
    max_epoch: int = 0  # 0 = no limit
    stop_time_hours: float = 0.0  # stop after this much training wall-clock time, across resumes (0 = no limit)
    seed: int = 1
    amp: str = "off"  # off | bf16 | fp16 (with a dynamic loss scaler)
    validate_interval_updates: int = 0  # 0 = validate at the end of each epoch
    save_interval_updates: int = 0  # 0 = save at each validation
    keep_last: int = 5  # numbered checkpoints kept besides checkpoint_last/checkpoint_best
    patience: int = 0  # stop after this many validations without improvement (0 = never)
    best_metric: str = "auto"  # loss | bleu | rouge | auto (bleu for translation, rouge for summaries)
    valid_beam: int = 1  # beam for validation decoding (1 = greedy)
    valid_max_sentences: int = 0  # decode at most this many valid sentences for BLEU/ROUGE (0 = all)
    log_interval: int = 50  # updates between JSON log lines
    max_nonfinite: int = 10  # stop after this many consecutive non-finite losses

    def __post_init__(self) -> None:
        if isinstance(self.adam_betas, list):
            object.__setattr__(self, "adam_betas", tuple(self.adam_betas))
        checks = [
            (self.lr > 0, "lr", "must be positive"),
            (self.lr_scheduler in ("inverse_sqrt", "cosine", "fixed"), "lr_scheduler",
             "must be inverse_sqrt, cosine or fixed"),
            (self.warmup_updates >= 0, "warmup_updates", "must be >= 0"),
            (0 <= self.label_smoothing < 1, "label_smoothing", "must be in [0, 1)"),
            (self.max_tokens > 0, "max_tokens", "must be positive"),
            (self.update_freq >= 1, "update_freq", "must be >= 1"),
            (self.max_update >= 0 and self.max_epoch >= 0, "max_update", "limits must be >= 0"),
            (self.amp in ("off", "bf16", "fp16"), "amp", "must be off, bf16 or fp16"),
            (self.keep_last >= 0, "keep_last", "must be >= 0"),
            (self.best_metric in ("auto", "loss", "bleu", "rouge"), "best_metric", "must be auto, loss, bleu or rouge"),
            (self.valid_beam >= 1, "valid_beam", "must be >= 1"),
            (self.clip_norm >= 0 and self.weight_decay >= 0, "clip_norm", "clip_norm and weight_decay must be >= 0"),
        ]
        for ok, field, message in checks:
            if not ok:
                raise UserError(f"train field {field}: {message} (got {getattr(self, field)!r})")


@dataclass(frozen=True)
class GenerateConfig(_Serializable):
    """How to decode: search, length limits and constraints (fairseq names)."""

    beam: int = 5
    lenpen: float = 1.0  # score / length**lenpen ranks finished hypotheses
    n_best: int = 1
    min_len: int = 1  # minimum output length in subwords (EOS is blocked before)
    max_len_a: float = 1.2  # maximum output length = max_len_a * source length + max_len_b
    max_len_b: int = 10
    no_repeat_ngram: int = 0  # block repeated n-grams of this size (0 = off)
    sampling: bool = False  # sample instead of beam search
    temperature: float = 1.0
    top_k: int = 0  # sampling: keep the k most likely tokens (0 = all)
    top_p: float = 1.0  # sampling: nucleus mass
    seed: int = 0  # sampling seed
    max_source_len: int = 0  # truncate sources to this many subwords (0 = the model's limit)
    # beam search rules: "fairseq" (done when `beam` hypotheses end) or "hf" (transformers' generate,
    # which imported Marian models were released with: the best `beam` finished by score, stopping
    # by `early_stopping`: heuristic (transformers' False), true, or never)
    search: str = "fairseq"
    early_stopping: str = "heuristic"

    def __post_init__(self) -> None:
        checks = [
            (1 <= self.beam <= MAX_BEAM, "beam", f"must be in [1, {MAX_BEAM}]"),
            (self.search in SEARCHES, "search", f"must be one of {', '.join(SEARCHES)}"),
            (self.early_stopping in EARLY_STOPPING, "early_stopping", f"must be one of {', '.join(EARLY_STOPPING)}"),
            (1 <= self.n_best <= (MAX_BEAM if self.sampling else self.beam), "n_best",
             "must be in [1, beam]" if not self.sampling else f"must be in [1, {MAX_BEAM}]"),
            (self.min_len >= 0, "min_len", "must be >= 0"),
            (self.max_len_a >= 0, "max_len_a", "must be >= 0"),
            (self.max_len_b >= 0, "max_len_b", "must be >= 0"),
            (self.no_repeat_ngram >= 0, "no_repeat_ngram", "must be >= 0"),
            (self.temperature > 0, "temperature", "must be positive"),
            (self.top_k >= 0, "top_k", "must be >= 0"),
            (0 < self.top_p <= 1, "top_p", "must be in (0, 1]"),
            (self.max_source_len >= 0, "max_source_len", "must be >= 0"),
        ]
        for ok, field, message in checks:
            if not ok:
                raise UserError(f"generate field {field}: {message} (got {getattr(self, field)!r})")


# ---------------------------------------------------------------------- presets
def presets_dir() -> Path:
    from convtrans.zoo import zoo_dir

    return zoo_dir() / "presets"


def list_presets() -> list[str]:
    return sorted(p.stem for p in presets_dir().glob("*.toml"))


def read_preset(name_or_path: str) -> dict[str, Any]:
    """The raw tables of a preset: top-level model fields plus optional [train] / [generate]."""
    path = Path(name_or_path)
    if not (path.suffix == ".toml" and path.is_file()):
        path = presets_dir() / f"{name_or_path}.toml"
        if not path.is_file():
            raise UserError(f"unknown preset {name_or_path!r}; see `convtrans train --list-archs`")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{path}: invalid TOML ({err})") from None


def load_preset(name_or_path: str, overrides: list[str] | None = None, **fields: Any) -> ModelConfig:
    """A ModelConfig from a preset name (models/presets) or a .toml path, then fields, then overrides."""
    data = {k: v for k, v in read_preset(name_or_path).items() if not isinstance(v, dict)}
    config = ModelConfig.from_dict({**data, **fields})
    return config.with_overrides(overrides or [])


def preset_recipe(name_or_path: str) -> tuple[TrainConfig, GenerateConfig]:
    """The preset's [train] and [generate] tables as configs (defaults where absent)."""
    raw = read_preset(name_or_path)
    return TrainConfig.from_dict(raw.get("train", {})), GenerateConfig.from_dict(raw.get("generate", {}))
