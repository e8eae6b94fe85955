"""The compiled CPU decode engine: a model's encoder, first state and decode step as ONNX Runtime
sessions (MLAS kernels, int8 GEMMs, the whole graph in C++), built once per model and machine and
cached on disk. graphs.py builds the graphs, store.py caches them, runtime.py runs them behind the
model interface generate.py uses; `engine_model` is what the inference loader calls.

    model = engine_model(checkpoint, "int8", lambda: load_model(path)[0])   # None: take the fallback

The search loop stays convtrans' own (generate.py), so every search option works unchanged.
$CONVTRANS_ENGINE=off turns the engine off (the traced PyTorch path runs instead, as it does where
onnxruntime is not installed or a model cannot be exported).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from convtrans.checkpoint import Checkpoint
    from convtrans.engine.runtime import EngineModel
    from convtrans.model import EncoderDecoder


def available() -> bool:
    """Whether the engine can run here: onnx and onnxruntime installed, not turned off."""
    if os.environ.get("CONVTRANS_ENGINE", "auto").lower() in ("off", "0", "no", "false", "none"):
        return False
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))


def engine_model(checkpoint: Checkpoint, precision: str,
                 build_model: Callable[[], EncoderDecoder]) -> EngineModel | None:
    """The checkpoint's engine in `precision` ("int8" or "fp32"), built (from `build_model()`) on
    first use; None when this model cannot be built (the caller takes its fallback)."""
    from convtrans.engine import graphs
    from convtrans.engine.runtime import EngineModel
    from convtrans.engine.store import BuildFailed, engine_folder

    try:
        folder = engine_folder(checkpoint.path, precision, lambda dest: graphs.build(build_model(), dest, precision))
    except BuildFailed:
        return None
    return EngineModel(checkpoint.model_config, folder)
