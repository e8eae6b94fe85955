"""Read a fairseq `.pt` checkpoint without unpickling anything but data.

A fairseq checkpoint is a pickle. Unpickling runs whatever callables it names, so a downloaded
file could run code; this reader never does that. It uses `torch.load(weights_only=True)` (which
rebuilds only tensors and plain containers) and allows exactly the further names fairseq's
checkpoints contain:

- `argparse.Namespace`: the training args of fairseq <= 0.9 (`args`), and `cfg["model"]` of the
  legacy-registered archs (transformer, lightconv) in >= 0.10;
- `fairseq.meters.AverageMeter | TimeMeter | StopwatchMeter` (2019-era files store their training
  meters in extra_state): bound to an inert class that keeps nothing, so no fairseq code runs;
- numpy's scalar/array rebuilders (numpy values in extra_state), which build arrays only.

Anything else is refused, naming the globals, before anything is built. The globals are listed
from the pickle's opcodes first (torch's scanner, for zip files); for a legacy (pre-1.6) file the
restricted unpickler itself refuses the first unknown name.
"""

from __future__ import annotations

import argparse
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from convtrans.errors import UserError


class InertMeter:
    """Stands in for fairseq's training meters: accepts their pickled state and keeps none of it."""

    def __setstate__(self, state: object) -> None:
        del state


FAIRSEQ_METERS = ("AverageMeter", "TimeMeter", "StopwatchMeter")


def allowed_globals() -> list[Any]:
    """What torch.serialization.safe_globals gets: callables, or (stand-in, pickled name) pairs."""
    allowed: list[Any] = [argparse.Namespace]
    allowed += [(InertMeter, f"fairseq.meters.{name}") for name in FAIRSEQ_METERS]
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - torch installs numpy
        return allowed
    multiarray = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core; files name either
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed += [(multiarray.multiarray._reconstruct, f"{module}._reconstruct"),
                    (multiarray.multiarray.scalar, f"{module}.scalar")]
    allowed += [(np.ndarray, "numpy.ndarray"), (np.dtype, "numpy.dtype")]
    return allowed


def _allowed_names() -> set[str]:
    names = set()
    for item in allowed_globals():
        names.add(item[1] if isinstance(item, tuple) else f"{item.__module__}.{item.__qualname__}")
    return names


def _unsafe_globals(path: Path) -> list[str]:
    """The names a zip checkpoint's pickle refers to that weights_only would refuse (and we allow none of)."""
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except (RuntimeError, pickle.UnpicklingError, ValueError, OSError, zipfile.BadZipFile):
        return []  # the load below reports what is wrong with the file
    allowed = _allowed_names()
    return sorted(name for name in found if name not in allowed)


def stored_bytes(path: Path) -> int:
    """What loading allocates: the zip entries' uncompressed sizes (a zip could compress), or the
    file's size for a legacy (pre-1.6) file, whose storages are stored raw."""
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                return sum(info.file_size for info in archive.infolist())
        except (zipfile.BadZipFile, OSError):
            pass
    return path.stat().st_size


def check_memory(path: Path, available: int | None = None) -> None:
    """Refuse, before reading, a checkpoint whose tensors would not fit in the free memory."""
    from convtrans.resources import available_bytes, human_bytes

    needed = stored_bytes(path)
    free = available if available is not None else available_bytes("cpu")
    if free is not None and needed > free:
        raise UserError(f"{path}: loading it needs {human_bytes(needed)} but {human_bytes(free)} of memory is free")


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's top-level dict (args/cfg, model state dict, ...), loaded on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}" if not path.exists() else f"{path}: not a regular file")
    check_memory(path)
    refused = _unsafe_globals(path) if zipfile.is_zipfile(path) else []
    if refused:
        raise UserError(f"{path}: refusing to unpickle {', '.join(refused)}: not a class fairseq checkpoints need, "
                        "and unpickling it could run code (weights are read with torch.load(weights_only=True))")
    try:
        with torch.serialization.safe_globals(allowed_globals()):
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        name = re.search(r"GLOBAL ([\w.]+)", str(err))
        if name is None:  # not a refused global: a damaged or foreign file
            detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(err))
            why = detail.group(1).strip() if detail else str(err).strip().splitlines()[0]
            raise UserError(f"{path}: not a readable PyTorch checkpoint ({why[:120]})") from None
        raise UserError(f"{path}: refusing to unpickle {name.group(1)}: not a class fairseq checkpoints need, and "
                        "unpickling it could run code (weights are read with torch.load(weights_only=True))") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({str(err).strip().splitlines()[0][:120]})") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise UserError(f"{path}: not a fairseq checkpoint (no 'model' state dict at the top level)")
    return state
