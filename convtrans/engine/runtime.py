"""Running a built engine: its three ONNX Runtime sessions behind the model interface generate.py
uses (config, encode, init_cache, decode_step with a reorderable DecoderCache).

    model = EngineModel(config, graph_dir)      # graph_dir from graphs.build (via store.py)
    hyps = generate([model], src, GenerateConfig(beam=5))

Why a session per thread count: ONNX Runtime fixes a session's intra-op thread pool when it is
created, while convtrans (like torch) lets the caller change `torch.set_num_threads` between calls;
each count gets its own sessions on first use (a few tens of ms from the cached files).

The decode state is the export's flat list (decode_state.py), so beams reorder by selecting rows of
torch tensors as for any other model; tensors cross into ONNX Runtime as numpy views without a copy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from convtrans.config import ModelConfig
from convtrans.inference.decode_state import flat_state, unflatten
from convtrans.nn.cache import DecoderCache

GRAPH_INPUTS = {"encoder": ["src"], "init": ["enc_out", "enc_mask"], "step": ["tokens", "step", "enc_out", "enc_mask"]}


def session_options(threads: int) -> Any:
    """One intra-op thread pool of `threads` whose threads sleep when idle. ONNX Runtime's default
    is to spin: alone, a 160-row step on 2 threads was ~10% faster so (13 vs 14.5 ms), but inside
    a decode the spinning threads take the cores from the search that runs between two steps
    (torch ops on the same 2 cores): whole decodes ran 1.6-2.7x slower at batch 32
    (1,853 vs 4,948 tokens/s at beam 1, batch 32; docs/decode_speed.md)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    # the graphs were optimized when the engine was built (graphs.optimize): loading skips that
    # work (3 sessions: 40 instead of 135 ms, a third of what a one-line translate waits for them)
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # warnings about unused initializers are not the user's concern
    return options


class EngineModel:
    """An engine's encoder / init / step sessions with the EncoderDecoder interface (inference only)."""

    training = False

    def __init__(self, config: ModelConfig, graph_dir: Path) -> None:
        self.config = config
        self.graph_dir = Path(graph_dir)
        self.n_layers = config.decoder_layers
        self._sessions: dict[int, dict[str, Any]] = {}

    def eval(self) -> EngineModel:
        return self

    def sessions(self) -> dict[str, Any]:
        """The sessions for torch's current thread count (created on first use)."""
        import onnxruntime

        threads = torch.get_num_threads()
        if threads not in self._sessions:
            options = session_options(threads)
            self._sessions[threads] = {
                name: onnxruntime.InferenceSession(str(self.graph_dir / f"{name}.onnx"), options,
                                                   providers=["CPUExecutionProvider"])
                for name in GRAPH_INPUTS}
        return self._sessions[threads]

    def _run(self, name: str, *inputs: torch.Tensor) -> list[torch.Tensor]:
        session = self.sessions()[name]
        feed = {feed_name: inputs[i].contiguous().numpy() for feed_name, i in feeds_of(session, name, len(inputs))}
        return [torch.from_numpy(out) for out in session.run(None, feed)]

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        enc_out, enc_mask = self._run("encoder", src)
        return enc_out, enc_mask.bool()

    def init_cache(self, enc_out: torch.Tensor, enc_mask: torch.Tensor) -> DecoderCache:
        return unflatten(0, self._run("init", enc_out, enc_mask), self.n_layers)

    def decode_step(self, tokens: torch.Tensor, enc_out: torch.Tensor, enc_mask: torch.Tensor,
                    cache: DecoderCache | None = None) -> tuple[torch.Tensor, DecoderCache]:
        if cache is None:
            cache = self.init_cache(enc_out, enc_mask)
        flat = flat_state(cache)
        logits, *new_self = self._run("step", tokens, torch.tensor(cache.step), enc_out, enc_mask, *flat)
        cross = flat[len(new_self):]  # the step graph returns self states only (graphs.py); cross ones stay
        return logits, unflatten(cache.step + tokens.shape[1], new_self + cross, self.n_layers)


def feeds_of(session: Any, graph: str, count: int) -> list[tuple[str, int]]:
    """(input name, position among the call's inputs) of each input the session reads: the exporter
    drops inputs a graph does not use (the step reads the cached cross keys, not enc_out).
    Worked out once per session and arity: a decode step is a fraction of a millisecond."""
    cached = getattr(session, "_convtrans_feeds", {})
    if count not in cached:
        names = GRAPH_INPUTS[graph] + ([f"state_{i}" for i in range(count - len(GRAPH_INPUTS[graph]))]
                                       if graph == "step" else [])
        wanted = {arg.name for arg in session.get_inputs()}
        cached[count] = [(feed_name, i) for i, feed_name in enumerate(names) if feed_name in wanted]
        session._convtrans_feeds = cached
    return cached[count]
