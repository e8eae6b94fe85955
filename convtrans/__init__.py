"""convtrans: lightweight and dynamic convolutions, Synthesizers, Lite Transformers and a
Transformer baseline for translation and summarization.

The Python API (the CLI runs on it):

    import convtrans
    translator = convtrans.Translator()                       # the shipped de->en model, offline
    translator.translate(["Ein Mann fährt Fahrrad."])         # ['A man is riding a bicycle.']
    for result in translator.translate_iterable(open("in.de")):  # streaming, results in input order
        print(result.text, result.score, result.alternatives)    # n-best: Translator(n_best=3)
    convtrans.Summarizer().summarize(["#Person1#: Hi ..."])   # the shipped dialogue summarizer
    convtrans.load("runs/x/checkpoint_best")                  # Translator or Summarizer by task

Names are imported on first use, so `import convtrans` (and `convtrans --help`) stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC = {
    "Translator": "convtrans.inference.translator",
    "Summarizer": "convtrans.inference.translator",
    "Translation": "convtrans.inference.translator",
    "load": "convtrans.inference.translator",
    "ModelConfig": "convtrans.config",
    "GenerateConfig": "convtrans.config",
    "TrainConfig": "convtrans.config",
    "UserError": "convtrans.errors",
}
__all__ = ["GenerateConfig", "ModelConfig", "Summarizer", "TrainConfig", "Translation", "Translator", "UserError", "load",
           "__version__"]
assert set(__all__) == {"__version__", *_PUBLIC}

if TYPE_CHECKING:
    from convtrans.config import GenerateConfig, ModelConfig, TrainConfig
    from convtrans.errors import UserError
    from convtrans.inference.translator import Summarizer, Translation, Translator, load


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'convtrans' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
