"""`convtrans export`: deployable models (TorchScript or ONNX), averaging, int8 and fp16.

An exported directory is a checkpoint directory whose weights are three graphs instead of
model.safetensors:

    encoder   src (B, S)                                        -> enc_out (B, S, d), enc_mask (B, S)
    init      enc_out, enc_mask                                 -> state_0 .. state_n
    step      tokens (B, 1), step (), enc_out, enc_mask, state  -> logits (B, 1, V), new state

The decode state is explicit: a flat list of batch-first tensors laid out as decode_state.py
describes, so any runtime can run beam search by selecting rows of every state tensor.
config.json keeps the model config, tokenizers and decoding defaults, plus an "export" entry
describing the graphs (their files are checksummed like weights), and `convtrans translate -m
DIR` runs it (exported.py) with the same options and output as the eager model.

Export always runs the PyTorch reference ops (no Triton inside a graph).
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convtrans import checkpoint as ckpt
from convtrans.errors import UserError
from convtrans.inference.decode_state import flat_state, rebuild, structure_of
from convtrans.model import EncoderDecoder
from convtrans.nn.cache import DecoderCache
from convtrans.training.rundir import LAST, numbered_checkpoints

FORMATS = ("checkpoint", "torchscript", "onnx")
GRAPHS = ("encoder", "init", "step")


# ---------------------------------------------------------------------- graph wrappers
class _Encoder(nn.Module):
    def __init__(self, model: EncoderDecoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.encode(src)


class _Init(nn.Module):
    def __init__(self, model: EncoderDecoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, enc_out: torch.Tensor, enc_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(flat_state(self.model.init_cache(enc_out, enc_mask)))


class _Step(nn.Module):
    def __init__(self, model: EncoderDecoder, self_structure: list[Any], cross_structure: list[Any]) -> None:
        super().__init__()
        self.model, self.self_structure, self.cross_structure = model, self_structure, cross_structure

    def forward(self, tokens: torch.Tensor, step: torch.Tensor, enc_out: torch.Tensor, enc_mask: torch.Tensor,
                *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        tensors = list(state)
        self_states = [rebuild(s, tensors) for s in self.self_structure]
        cross_states = [rebuild(s, tensors) for s in self.cross_structure]
        cache = DecoderCache(step, self_states, cross_states)  # type: ignore[arg-type]  # traced: step is a 0-d tensor
        logits, cache = self.model.decode_step(tokens, enc_out, enc_mask, cache)
        return (logits, *flat_state(cache))


def _examples(model: EncoderDecoder) -> dict[str, Any]:
    """Inputs to trace with: batch 2, a padded source, and a state two steps in (non-empty caches)."""
    cfg = model.config
    src = torch.full((2, 6), cfg.eos_id, dtype=torch.long)
    src[:, :5] = torch.arange(5) % max(cfg.src_vocab_size - 4, 1) + 4
    src[1, 3:] = cfg.pad_id
    src[1, 3] = cfg.eos_id
    enc_out, enc_mask = model.encode(src)
    cache = model.init_cache(enc_out, enc_mask)
    tokens = torch.full((2, 1), cfg.start_id, dtype=torch.long)
    for _ in range(2):
        _, cache = model.decode_step(tokens, enc_out, enc_mask, cache)
        tokens = torch.full((2, 1), 4, dtype=torch.long)
    structure = ([structure_of(s) for s in cache.self_states], [structure_of(s) for s in cache.cross_states])
    return dict(src=src, enc_out=enc_out, enc_mask=enc_mask, tokens=tokens, step=torch.tensor(cache.step),
                state=flat_state(cache), structure=structure)


def step_inputs(ex: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    """The step graph's example inputs, in its argument order."""
    return (ex["tokens"], ex["step"], ex["enc_out"], ex["enc_mask"], *ex["state"])


def _state_axes(structure: tuple[list[Any], list[Any]], example: list[torch.Tensor]) -> list[dict[int, str]]:
    """ONNX dynamic axes of each state tensor: batch always; the sequence axis of growing caches."""
    axes = []
    n_self = len(example) - 2 * len(structure[1])
    for i, tensor in enumerate(example):
        dims = {0: "batch"}
        if tensor.dim() == 4:  # (B, H, S, Dh): attention/synthesizer keys and values
            dims[2] = "steps" if i < n_self else "src_len"
        axes.append(dims)
    return axes


class _Graphs(nn.Module):
    """The three entry points as methods of one module, so one TorchScript file stores the
    parameters once."""

    def __init__(self, model: EncoderDecoder, self_structure: list[Any], cross_structure: list[Any]) -> None:
        super().__init__()
        self.encoder, self.initial = _Encoder(model), _Init(model)
        self.stepper = _Step(model, self_structure, cross_structure)

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(src)

    def init(self, enc_out: torch.Tensor, enc_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.initial(enc_out, enc_mask)

    def step(self, tokens: torch.Tensor, step: torch.Tensor, enc_out: torch.Tensor, enc_mask: torch.Tensor,
             *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.stepper(tokens, step, enc_out, enc_mask, *state)


def _trace_torchscript(model: EncoderDecoder, out: Path, ex: dict[str, Any]) -> None:
    import warnings

    graphs = _Graphs(model, *ex["structure"])
    inputs = {"encode": (ex["src"],), "init": (ex["enc_out"], ex["enc_mask"]),
              "step": step_inputs(ex)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace_module(graphs, inputs, check_trace=False)
    traced.save(str(out / "model.pt"))


def _export_onnx(model: EncoderDecoder, out: Path, ex: dict[str, Any], names: tuple[str, ...] = GRAPHS) -> None:
    """`names`: which of the three graphs to write (the engine writes its own step, engine/graphs.py)."""
    try:
        import onnx  # noqa: F401 - the exporter needs it
    except ImportError:
        raise UserError("ONNX export needs the onnx package: pip install 'convtrans[onnx]'") from None
    n_state = len(ex["state"])
    state_names = [f"state_{i}" for i in range(n_state)]
    new_names = [f"new_state_{i}" for i in range(n_state)]
    state_axes = _state_axes(ex["structure"], ex["state"])

    def axes_of(names: list[str], steps: str) -> dict[str, dict[int, str]]:
        """Dynamic axes of state tensors; the step axis gets its own name per graph input/output."""
        return {n: {k: (steps if v == "steps" else v) for k, v in a.items()} for n, a in zip(names, state_axes)}

    source = {"enc_out": {0: "batch", 1: "src_len"}, "enc_mask": {0: "batch", 1: "src_len"}}
    specs = {
        # wrappers in eval mode: the exporter restores each module's mode afterwards, and a wrapper
        # made in training mode would put the model it wraps into training mode (dropout on)
        "encoder": (_Encoder(model).eval(), (ex["src"],), ["src"], ["enc_out", "enc_mask"],
                    {"src": {0: "batch", 1: "src_len"}, **source}),
        "init": (_Init(model).eval(), (ex["enc_out"], ex["enc_mask"]), ["enc_out", "enc_mask"], state_names,
                 {**source, **axes_of(state_names, "steps0")}),
        "step": (_Step(model, *ex["structure"]).eval(), step_inputs(ex),
                 ["tokens", "step", "enc_out", "enc_mask", *state_names], ["logits", *new_names],
                 {"tokens": {0: "batch"}, **source, "logits": {0: "batch"}, **axes_of(state_names, "steps"),
                  **axes_of(new_names, "steps1")}),
    }
    import warnings

    for name, (module, inputs, input_names, output_names, axes) in specs.items():
        if name not in names:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, inputs, str(out / f"{name}.onnx"), input_names=input_names,
                              output_names=output_names, dynamic_axes=axes, opset_version=17, dynamo=False)
        import onnx

        onnx.checker.check_model(str(out / f"{name}.onnx"))


# ---------------------------------------------------------------------- the export command
def resolve_sources(sources: list[Path], average: int) -> list[Path]:
    """Checkpoint dirs to read: a checkpoint, a run dir (its last, or its `average` newest), or a list."""
    if not sources:
        raise UserError("give a checkpoint directory, a run directory, or several checkpoints to average")
    if len(sources) == 1 and (sources[0] / LAST).exists():
        run = sources[0]
        if average > 1:
            numbered = numbered_checkpoints(run)
            if len(numbered) < average:
                raise UserError(f"--average {average}: {run} holds only {len(numbered)} numbered checkpoints")
            return numbered[-average:]
        return [run / LAST]
    if average > 1 and len(sources) != average and len(sources) != 1:
        raise UserError(f"--average {average} with {len(sources)} checkpoints: give a run directory or exactly the list")
    return sources


def export(sources: list[Path], out: Path, fmt: str = "checkpoint", average: int = 0, quantize: str | None = None,
           fp16: bool = False, force: bool = False) -> dict[str, Any]:
    """Write `out`; returns a report (files, sizes, what was done)."""
    _check_options(fmt, quantize, fp16)
    out = Path(out)
    if out.exists() and not force:
        raise UserError(f"{out} already exists; use --force to replace it")
    paths = resolve_sources([Path(s) for s in sources], average)
    for path in paths:
        ckpt.read(path)  # refuses anything that is not a valid checkpoint, before any work
    with tempfile.TemporaryDirectory(prefix=".export-") as work:
        source = ckpt.average(paths, Path(work) / "averaged") if len(paths) > 1 else paths[0]
        model, checkpoint = ckpt.load_model(source)
        extra = {**checkpoint.extra, "exported_from": [str(p) for p in paths]}
        if fmt == "checkpoint":
            files = _write_checkpoint(model, checkpoint, out, extra, fp16, force)
        else:
            files = _write_graphs(model, checkpoint, out, extra, fmt, quantize, fp16, force, Path(work))
    fp32_bytes = sum(p.numel() * 4 for p in model.parameters())
    size = sum(f.stat().st_size for f in files)
    return {"out": str(out), "format": fmt, "sources": [str(p) for p in paths], "bytes": size,
            "fp32_bytes": fp32_bytes, "reduction": fp32_bytes / max(size, 1), "quantize": quantize, "fp16": fp16}


def _check_options(fmt: str, quantize: str | None, fp16: bool) -> None:
    if fmt not in FORMATS:
        raise UserError(f"unknown --format {fmt!r}; choose from {', '.join(FORMATS)}")
    if quantize not in (None, "int8"):
        raise UserError(f"unknown --quantize {quantize!r}; only int8 is supported")
    if quantize and fmt != "torchscript":
        raise UserError("--quantize int8 applies to --format torchscript (dynamic int8 Linear layers for CPU)")
    if quantize and fp16:
        raise UserError("choose one of --quantize int8 and --fp16")


def _tokenizer_files(checkpoint: ckpt.Checkpoint) -> dict[str, Path]:
    return {side: checkpoint.tokenizer_path(side) for side in checkpoint.data.tokenizers}


def _write_checkpoint(model: EncoderDecoder, checkpoint: ckpt.Checkpoint, out: Path, extra: dict[str, Any],
                      fp16: bool, force: bool) -> list[Path]:
    """A regular checkpoint (averaged and/or halved); returns its weight file."""
    ckpt.save(out, model, checkpoint.model_config, checkpoint.data, _tokenizer_files(checkpoint), checkpoint.generate,
              extra=extra, overwrite=force, dtype=torch.float16 if fp16 else None)
    return [out / ckpt.WEIGHTS]


def _write_graphs(model: EncoderDecoder, checkpoint: ckpt.Checkpoint, out: Path, extra: dict[str, Any], fmt: str,
                  quantize: str | None, fp16: bool, force: bool, work: Path) -> list[Path]:
    """TorchScript or ONNX graphs traced through the reference ops; returns the graph files."""
    from convtrans.ops._backend import use_backend

    graph_dir = work / "graphs"
    graph_dir.mkdir()
    if quantize == "int8":  # the same int8 Linears as translate's default CPU path (int8.py)
        from convtrans.inference.int8 import quantize_linears

        model = quantize_linears(copy.deepcopy(model))
    with use_backend("torch"), torch.no_grad():
        examples = _examples(model)
        (_trace_torchscript if fmt == "torchscript" else _export_onnx)(model, graph_dir, examples)
    if fp16:
        _halve_graphs(graph_dir, fmt)
    graphs = {g: "model.pt" for g in GRAPHS} if fmt == "torchscript" else {g: f"{g}.onnx" for g in GRAPHS}
    info = {"format": fmt, "quantize": quantize, "fp16": fp16, "graphs": graphs}
    ckpt.save_files(out, {p.name: p for p in graph_dir.iterdir()}, checkpoint.model_config, checkpoint.data,
                    _tokenizer_files(checkpoint), checkpoint.generate, extra={**extra, "export": info},
                    overwrite=force)
    return [out / name for name in sorted(set(graphs.values()))]


def _halve_graphs(graph_dir: Path, fmt: str) -> None:
    """Store graph weights in fp16 (the runtime computes in fp32 on CPU)."""
    if fmt == "torchscript":
        for path in graph_dir.glob("*.pt"):
            module = torch.jit.load(str(path))
            module.half()
            module.save(str(path))
        return
    import onnx
    from onnx import numpy_helper

    for path in graph_dir.glob("*.onnx"):
        graph = onnx.load(str(path))
        for init in graph.graph.initializer:
            if init.data_type == onnx.TensorProto.FLOAT:
                init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype("float16"), init.name))
        # a Cast back to fp32 right after each halved initializer keeps the graph's arithmetic fp32
        _cast_initializers_to_float(graph)
        onnx.save(graph, str(path))


def _cast_initializers_to_float(graph: Any) -> None:
    import onnx
    from onnx import helper

    halved = {i.name for i in graph.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16}
    renames = {}
    casts = []
    for name in halved:
        renames[name] = f"{name}__fp32"
        casts.append(helper.make_node("Cast", [name], [renames[name]], to=onnx.TensorProto.FLOAT))
    for node in graph.graph.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
    nodes = casts + list(graph.graph.node)
    del graph.graph.node[:]
    graph.graph.node.extend(nodes)


def describe(report: dict[str, Any]) -> str:
    what = report["format"] + (" int8" if report["quantize"] else "") + (" fp16" if report["fp16"] else "")
    averaged = f", averaged {len(report['sources'])} checkpoints" if len(report["sources"]) > 1 else ""
    return (f"wrote {report['out']} ({what}{averaged}): weights {report['bytes'] / 1e6:.1f} MB vs "
            f"{report['fp32_bytes'] / 1e6:.1f} MB in fp32 ({report['reduction']:.2f}x smaller)")

