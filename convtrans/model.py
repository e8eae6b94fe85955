"""EncoderDecoder: the one seq2seq skeleton every zoo model shares; only the token mixer differs.

    embeddings (× √d, + positions, dropout)
    encoder layer: x ← x + drop(mixer(x)); x ← x + drop(ffn(x))          (LayerNorm pre or post)
    decoder layer: x ← x + drop(self_mixer(x)); x ← x + drop(cross_attn(x, enc)); x ← x + drop(ffn(x))
    output projection (optionally tied to the embeddings)

`forward` trains on whole sequences; `decode_step` continues a DecoderCache by the new tokens
(step-by-step decoding gives the same logits as `forward`). Padding masks are True at pads.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from convtrans.config import ModelConfig
from convtrans.nn.attention import MultiheadAttention, xavier_linear
from convtrans.nn.cache import AttnCache, DecoderCache
from convtrans.nn.conv import ConvMixer
from convtrans.nn.lsra import LSRAMixer
from convtrans.nn.synthesizer import SynthesizerMixer


def _attention(cfg: ModelConfig, side: str, layer: int, causal: bool) -> nn.Module:
    return _AttentionMixer(d_model=cfg.d_model, heads=getattr(cfg, f"{side}_heads"), dropout=cfg.attention_dropout,
                           causal=causal)


def _conv(kind: str) -> Callable[[ModelConfig, str, int, bool], nn.Module]:
    def build(cfg: ModelConfig, side: str, layer: int, causal: bool) -> nn.Module:
        return ConvMixer(d_model=cfg.d_model, conv_dim=cfg.conv_width, heads=getattr(cfg, f"{side}_heads"),
                         kernel_size=cfg.kernel_size(side, layer), kind=kind, glu=getattr(cfg, f"{side}_glu"),
                         causal=causal, weight_dropout=cfg.weight_dropout, input_dropout=cfg.input_dropout,
                         dropconnect_per_position=cfg.lightconv_dropconnect == "position")
    return build


def _synthesizer(cfg: ModelConfig, side: str, layer: int, causal: bool) -> nn.Module:
    return SynthesizerMixer(d_model=cfg.d_model, heads=getattr(cfg, f"{side}_heads"), parts=cfg.synth_parts,
                            max_len=cfg.synth_max_len, factors=cfg.synth_factors, rank=cfg.synth_rank,
                            dropout=cfg.attention_dropout, causal=causal)


def _lsra(cfg: ModelConfig, side: str, layer: int, causal: bool) -> nn.Module:
    return LSRAMixer(d_model=cfg.d_model, attn_dim=cfg.lsra_attention_width, heads=cfg.lsra_heads,
                     conv_heads=cfg.lsra_conv_branch_heads,
                     kernel_size=cfg.kernel_size(side, layer), conv_kind=cfg.lsra_conv, glu=getattr(cfg, f"{side}_glu"),
                     causal=causal, attention_dropout=cfg.attention_dropout, weight_dropout=cfg.weight_dropout,
                     dropconnect_per_position=cfg.lightconv_dropconnect == "position")


class _AttentionMixer(nn.Module):
    """Self-attention with the mixer signature (x, pad_mask, cache) -> (y, cache)."""

    def __init__(self, *, d_model: int, heads: int, dropout: float, causal: bool) -> None:
        super().__init__()
        self.causal = causal
        self.attn = MultiheadAttention(width=d_model, heads=heads, dropout=dropout)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None,
                cache: AttnCache | None = None) -> tuple[torch.Tensor, AttnCache | None]:
        return self.attn(x, pad_mask, causal=self.causal, cache=cache)

    def empty_state(self, batch: int, like: torch.Tensor) -> AttnCache:
        return self.attn.empty_state(batch, like)


# The token mixers: name -> builder(config, "encoder" | "decoder", layer index, causal). The names are
# config.MIXERS (which validates them); tests/unit/test_model.py checks that the two agree.
MIXERS: dict[str, Callable[[ModelConfig, str, int, bool], nn.Module]] = {
    "attention": _attention,
    "lightconv": _conv("lightconv"),
    "dynamicconv": _conv("dynamicconv"),
    "synthesizer": _synthesizer,
    "lsra": _lsra,
}


def _unchanged(x: torch.Tensor) -> torch.Tensor:
    """Dropout in eval mode, without nn.Module's call machinery (a decode step calls it 15 times)."""
    return x


# config.ACTIVATIONS -> the function (the imports map fairseq's and Hugging Face's names onto these).
# gelu_tanh is written out as fairseq's gelu_accurate and HF's gelu_new write it (torch's own
# approximate="tanh" rounds differently, ~1e-5 apart on imported models)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: 0.5 * x * (1.0 + torch.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * torch.pow(x, 3)))),
    "silu": F.silu,
}


class FeedForward(nn.Module):
    def __init__(self, d_model: int, ffn_dim: int, activation_dropout: float, activation: str = "relu") -> None:
        super().__init__()
        self.fc1, self.fc2 = xavier_linear(d_model, ffn_dim), xavier_linear(ffn_dim, d_model)
        self.activation_dropout = activation_dropout
        self.activation = ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.activation(self.fc1(x))
        if self.training:  # in eval dropout is the identity; skipping the call saves a decode step time
            hidden = F.dropout(hidden, self.activation_dropout, True)
        return self.fc2(hidden)


class _Block(nn.Module):
    """Holds one residual sublayer's LayerNorm as `.norm`, so that its weights keep the names the
    checkpoints use (`encoder.0.mix_block.norm.weight`). The residual itself is written out in the
    layers' forward."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)


class EncoderLayer(nn.Module):
    """Token mixer then FFN, each in a residual: pre-norm x + drop(f(LN(x))) or post-norm
    LN(x + drop(f(x)))."""

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.mixer = MIXERS[cfg.encoder_mixer](cfg, "encoder", layer, False)
        self.ffn = FeedForward(cfg.d_model, cfg.encoder_ffn_dim, cfg.activation_dropout, cfg.activation)
        self.mix_block, self.ffn_block = _Block(cfg.d_model), _Block(cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.normalize_before = cfg.normalize_before

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, S, d) → (B, S, d); pad_mask (B, S) is True at pads. With `positions` (the flat
        indices of the real positions, encode's choice), the FFN runs on those positions only."""
        if self.normalize_before:
            x = x + self.drop(self.mixer(self.mix_block.norm(x), pad_mask)[0])
            return x + self.drop(_at_positions(self.ffn, self.ffn_block.norm(x), positions))
        x = self.mix_block.norm(x + self.drop(self.mixer(x, pad_mask)[0]))
        return self.ffn_block.norm(x + self.drop(_at_positions(self.ffn, x, positions)))


def _at_positions(ffn: FeedForward, x: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
    """ffn(x) at the flat `positions` of x (B, S, d), zeros elsewhere (all of it when None).
    A padded batch of sentences is about half padding (Multi30k, 32 sentences: 16 real tokens of 32
    on average); the FFN is two thirds of an encoder layer's multiply-adds and works per position,
    so packing the real positions halves it. What a pad position holds never reaches a real one:
    every mixer masks pads (the conv zeroes them, attention masks them as keys)."""
    if positions is None:
        return ffn(x)
    flat = x.reshape(-1, x.shape[-1])
    out = torch.zeros_like(flat)
    out[positions] = ffn(flat[positions])
    return out.view_as(x)


class DecoderLayer(nn.Module):
    """Causal token mixer, cross-attention to the encoder output, FFN; residuals as EncoderLayer."""

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.mixer = MIXERS[cfg.decoder_mixer](cfg, "decoder", layer, True)
        self.cross = MultiheadAttention(width=cfg.d_model, heads=cfg.cross_heads, dropout=cfg.attention_dropout)
        self.ffn = FeedForward(cfg.d_model, cfg.decoder_ffn_dim, cfg.activation_dropout, cfg.activation)
        self.mix_block, self.cross_block, self.ffn_block = _Block(cfg.d_model), _Block(cfg.d_model), _Block(cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.normalize_before = cfg.normalize_before

    def forward(self, x: torch.Tensor, enc_out: torch.Tensor, enc_mask: torch.Tensor, self_state: Any = None,
                cross_state: AttnCache | None = None) -> tuple[torch.Tensor, Any, AttnCache]:
        """x: (B, t, d) new steps → (B, t, d), new self state, cross keys/values."""
        drop = self.drop if self.training else _unchanged  # decoding: no module call per residual
        if self.normalize_before:
            y, self_state = self.mixer(self.mix_block.norm(x), None, self_state)
            x = x + drop(y)
            y, cross_state = self.cross.cross(self.cross_block.norm(x), enc_out, enc_mask, cross_state)
            x = x + drop(y)
            x = x + drop(self.ffn(self.ffn_block.norm(x)))
        else:
            y, self_state = self.mixer(x, None, self_state)
            x = self.mix_block.norm(x + drop(y))
            y, cross_state = self.cross.cross(x, enc_out, enc_mask, cross_state)
            x = self.cross_block.norm(x + drop(y))
            x = self.ffn_block.norm(x + drop(self.ffn(x)))
        return x, self_state, cross_state


def sinusoidal_positions(length: int, dim: int, style: str = "fairseq") -> torch.Tensor:
    """(length, dim) table: sin on the first half of the channels, cos on the second.

    "fairseq": frequencies exp(-i·ln(10000)/(half-1)), computed in fp32 as fairseq computes them
    (so an imported fairseq model sees its own table bit for bit). "marian": 10000^(-2i/dim), the
    table of Marian and Hugging Face's MarianMT, computed in fp64 and rounded once, as they do."""
    half = dim // 2
    if style == "marian":
        freq64 = torch.pow(10000.0, -2.0 * torch.arange(half, dtype=torch.float64) / dim)
        angles64 = torch.arange(length, dtype=torch.float64).unsqueeze(1) * freq64.unsqueeze(0)
        table = torch.cat([torch.sin(angles64), torch.cos(angles64)], dim=1).float()
        return F.pad(table, (0, dim % 2))
    freq = torch.exp(torch.arange(half, dtype=torch.float) * -(math.log(10000.0) / max(half - 1, 1)))
    angles = torch.arange(length, dtype=torch.float).unsqueeze(1) * freq.unsqueeze(0)  # (L, half)
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return F.pad(table, (0, dim % 2))


class Embedding(nn.Module):
    """Token embedding (× √d unless cfg.scale_embedding is off) plus positions, an optional
    LayerNorm, then dropout. Position p of a sequence reads row p + cfg.position_offset of the
    position table (fairseq counts from pad + 1; its tables have that many extra rows)."""

    def __init__(self, cfg: ModelConfig, vocab: int, max_positions: int, tokens: nn.Embedding | None = None) -> None:
        super().__init__()
        d_model = cfg.d_model
        self.tokens = tokens or _embedding(vocab, d_model, cfg.pad_id)
        self.scale = math.sqrt(d_model) if cfg.scale_embedding else 1.0
        self.dropout, self.max_positions, self.offset = cfg.dropout, max_positions, cfg.position_offset
        rows = max_positions + cfg.position_offset
        if cfg.position_embeddings and cfg.learned_positions:
            self.positions = nn.Embedding(rows, d_model)
            nn.init.normal_(self.positions.weight, std=d_model**-0.5)
        elif cfg.position_embeddings:
            self.register_buffer("table", sinusoidal_positions(rows, d_model, cfg.sinusoid), persistent=False)
        self.norm = nn.LayerNorm(d_model) if cfg.layernorm_embedding else None

    def forward(self, tokens: torch.Tensor, start: int | torch.Tensor = 0) -> torch.Tensor:
        """tokens (B, T) at positions start..start+T-1 → (B, T, d). `start` may be a tensor (export)."""
        if isinstance(start, int) and start + tokens.shape[1] > self.max_positions:
            raise ValueError(f"sequence of {start + tokens.shape[1]} positions exceeds max positions {self.max_positions}")
        x = self.tokens(tokens) * self.scale
        table = self.positions.weight if hasattr(self, "positions") else getattr(self, "table", None)
        if table is not None:
            positions = torch.arange(tokens.shape[1], device=tokens.device) + start + self.offset  # (T,)
            x = x + table.index_select(0, positions)
        if self.norm is not None:
            x = self.norm(x)
        return F.dropout(x, self.dropout, self.training)


def _embedding(vocab: int, d_model: int, pad_id: int) -> nn.Embedding:
    emb = nn.Embedding(vocab, d_model, padding_idx=pad_id)
    nn.init.normal_(emb.weight, std=d_model**-0.5)
    with torch.no_grad():
        emb.weight[pad_id].zero_()
    return emb


class EncoderDecoder(nn.Module):
    """A zoo model built from its ModelConfig."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        cfg = self.config = config
        src_tokens = _embedding(cfg.src_vocab_size, cfg.d_model, cfg.pad_id)
        tgt_tokens = src_tokens if cfg.share_all_embeddings else None
        self.src_embed = Embedding(cfg, cfg.src_vocab_size, cfg.max_source_positions, src_tokens)
        self.tgt_embed = Embedding(cfg, cfg.tgt_vocab_size, cfg.max_target_positions, tgt_tokens)
        self.encoder = nn.ModuleList(EncoderLayer(cfg, i) for i in range(cfg.encoder_layers))
        self.decoder = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.decoder_layers))
        self.encoder_norm = nn.LayerNorm(cfg.d_model) if cfg.normalize_before and cfg.encoder_final_norm else nn.Identity()
        final_norm = cfg.normalize_before and cfg.decoder_final_norm
        self.decoder_norm = nn.LayerNorm(cfg.d_model) if final_norm else nn.Identity()
        self.output = nn.Linear(cfg.d_model, cfg.tgt_vocab_size, bias=cfg.output_bias)
        if cfg.output_bias:
            nn.init.zeros_(self.output.bias)
        if cfg.share_all_embeddings or cfg.share_decoder_input_output_embed:
            self.output.weight = self.tgt_embed.tokens.weight
        else:
            nn.init.normal_(self.output.weight, std=cfg.d_model**-0.5)

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """src (B, S) token ids → encoder output (B, S, d) and its padding mask (B, S)."""
        pad_mask = src.eq(self.config.pad_id)
        x = self.src_embed(src)
        # inference packs the real positions for the FFNs; training keeps the padded layout (its
        # batches are bucketed by length, and its numbers stay exactly those of earlier runs), and so
        # does a meta-device pass (costs.py counts Mult-Adds without data to find pads in)
        packs = not self.training and not src.is_meta and bool(pad_mask.any())
        positions = (~pad_mask).reshape(-1).nonzero().squeeze(1) if packs else None
        for layer in self.encoder:
            x = layer(x, pad_mask, positions)
        return self.encoder_norm(x), pad_mask

    def decode_step(self, tokens: torch.Tensor, enc_out: torch.Tensor, enc_mask: torch.Tensor,
                    cache: DecoderCache | None = None) -> tuple[torch.Tensor, DecoderCache]:
        """Continue decoding by `tokens` (B, t): logits (B, t, V) for the new positions and the cache
        to continue from. With cache=None, decoding starts at position 0."""
        cache = cache or DecoderCache()
        n_layers = len(self.decoder)
        self_states = cache.self_states or [None] * n_layers
        cross_states = cache.cross_states or [None] * n_layers
        x = self.tgt_embed(tokens, start=cache.step)
        new_self, new_cross = [], []
        for layer, self_state, cross_state in zip(self.decoder, self_states, cross_states):
            x, self_state, cross_state = layer(x, enc_out, enc_mask, self_state, cross_state)
            new_self.append(self_state)
            new_cross.append(cross_state)
        logits = self.output(self.decoder_norm(x))
        return logits, DecoderCache(cache.step + tokens.shape[1], new_self, new_cross)

    def init_cache(self, enc_out: torch.Tensor, enc_mask: torch.Tensor) -> DecoderCache:
        """An explicit decode state for position 0 (empty self states, cross keys/values computed).
        decode_step gives the same result from it as from cache=None; exported decoders need it so
        that every step runs the same graph."""
        batch = enc_out.shape[0]
        layers = cast(list[DecoderLayer], list(self.decoder))
        return DecoderCache(0, [cast(Any, layer.mixer).empty_state(batch, enc_out) for layer in layers],
                            [layer.cross.memory_state(enc_out) for layer in layers])

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, T, V) for target inputs tgt_in (B, T) (BOS + target[:-1])."""
        enc_out, enc_mask = self.encode(src)
        return self.decode_step(tgt_in, enc_out, enc_mask)[0]

    def num_parameters(self) -> int:
        """Distinct parameters (tied matrices counted once)."""
        return sum(p.numel() for p in self.parameters())
