"""What a configuration costs: parameters and Mult-Adds, computed on the meta device (no memory,
no compute), so every preset, the 200M-parameter ones included, is measured in seconds.

Mult-Adds follow Lite Transformer's convention (torchprofile on standard modules): the
teacher-forced forward of one sentence pair (30 source and 30 target tokens by default), counting
matrix products, attention and convolutions, excluding embedding lookups and the output
projection over the vocabulary. Dynamic convolution is an elementwise multiply-add that
FlopCounterMode does not see; its B·T·C·K Mult-Adds are added per block.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from convtrans.config import ModelConfig
from convtrans.model import EncoderDecoder
from convtrans.nn.conv import ConvMixer


@dataclass
class Costs:
    parameters: int  # all distinct parameters, tied matrices once
    embedding_parameters: int  # token embeddings and an untied output projection
    mult_adds: int  # per sentence pair of src_len / tgt_len tokens
    tgt_len: int

    @property
    def mult_adds_per_target_token(self) -> float:
        return self.mult_adds / self.tgt_len


def measure(config: ModelConfig, src_len: int = 30, tgt_len: int = 30) -> Costs:
    with torch.device("meta"):
        model = EncoderDecoder(config).eval()
    embeddings = (model.src_embed.tokens, model.tgt_embed.tokens, model.output)
    embedding_params = {id(m.weight): m.weight.numel() for m in embeddings}
    dynamic_macs = 0

    def count_dynamic(module: ConvMixer, inputs: tuple, output: tuple) -> None:
        nonlocal dynamic_macs
        if module.kind == "dynamicconv":
            batch, time, _ = inputs[0].shape
            width = module.linear2.in_features
            dynamic_macs += batch * time * width * module.kernel_size

    hooks = [m.register_forward_hook(count_dynamic) for m in model.modules() if isinstance(m, ConvMixer)]
    src = torch.full((1, src_len), 4, dtype=torch.long, device="meta")
    tgt = torch.full((1, tgt_len), 4, dtype=torch.long, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(src, tgt)
    for hook in hooks:
        hook.remove()
    output_flops = sum(counter.get_flop_counts().get("EncoderDecoder.output", {}).values())
    macs = (counter.get_total_flops() - output_flops) // 2 + dynamic_macs
    return Costs(model.num_parameters(), sum(embedding_params.values()), int(macs), tgt_len)
