"""Where built engines live: one folder per model, precision and software version, in a cache that
survives the process, so a model is built once per machine and every later run only loads it.

    folder = engine_folder(checkpoint_path, "int8", build=lambda dest: graphs.build(model(), dest, "int8"))

Location: $CONVTRANS_ENGINE_CACHE, else $XDG_CACHE_HOME/convtrans/engines, else
~/.cache/convtrans/engines. Key: the sha256 of the checkpoint's config.json (which records the
sha256 of every weight file, so new weights are a new key), the precision, and the versions of
convtrans, torch (the exporter) and onnxruntime (the quantizer, the runtime).

Why it is safe to load what is there: a folder is written under a temporary name and renamed into
place once complete (a crashed build leaves no half folder under the key), and manifest.json
records the sha256 of each graph, checked at every load; a folder that fails the check is rebuilt.
A cache that cannot be written (read-only home, full disk) costs a build per process in a
temporary folder, never an error. A model the exporter fails on is recorded (`failed.txt`), so
later runs take the fallback path at once instead of failing the same way again.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

from convtrans.checkpoint import CONFIG, file_digest
from convtrans.engine.graphs import GRAPHS
from convtrans.errors import UserError

FORMAT = 2  # the layout of an engine folder; bump to invalidate every cached engine
MANIFEST = "manifest.json"
FAILED = "failed.txt"


class BuildFailed(Exception):
    """The exporter or quantizer could not make this model's graphs (the caller falls back).
    `lasting`: the model itself is the cause (recorded, not tried again); a full disk or a
    memory error is not (the next run tries again)."""

    def __init__(self, reason: str, lasting: bool = True) -> None:
        super().__init__(reason)
        self.lasting = lasting


def cache_root() -> Path:
    explicit = os.environ.get("CONVTRANS_ENGINE_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "convtrans" / "engines"


def engine_key(checkpoint_path: Path, precision: str) -> str:
    import onnxruntime
    import torch

    import convtrans

    digest = hashlib.sha256((Path(checkpoint_path) / CONFIG).read_bytes())
    digest.update(json.dumps([FORMAT, precision, convtrans.__version__, torch.__version__,
                              onnxruntime.__version__]).encode())
    return digest.hexdigest()[:40]


def engine_folder(checkpoint_path: Path, precision: str, build: Callable[[Path], None]) -> Path:
    """The folder of this model's engine, built with `build(folder)` if it is not cached (or is
    damaged). Raises BuildFailed when building fails, now or on an earlier run."""
    key = engine_key(checkpoint_path, precision)
    root = cache_root()
    folder = root / key
    if verified(folder):
        return folder
    failure = root / f"{key}.{FAILED}"
    if failure.is_file():
        raise BuildFailed(failure.read_text(encoding="utf-8", errors="replace")[:500])
    try:
        root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
    except OSError:  # the cache cannot be written: build for this process only
        return _build_temporary(build, key)
    try:
        _build_into(work, build)
        if folder.exists():  # damaged (failed the check above): move it aside, then remove it
            stale = root / f".stale-{uuid.uuid4().hex}"
            folder.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            work.rename(folder)
        except OSError:  # another process put its build there first: use that one
            if not verified(folder):
                raise
        return folder
    except BuildFailed as err:
        if err.lasting:
            _record_failure(failure, str(err))
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def verified(folder: Path) -> bool:
    """Whether `folder` holds a complete engine whose files match their recorded checksums."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        return all(file_digest(folder / f"{name}.onnx") == manifest["sha256"][name] for name in GRAPHS)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _build_into(folder: Path, build: Callable[[Path], None]) -> None:
    try:
        build(folder)
    except UserError:  # the checkpoint itself is refused (weights, size): the fallback would refuse it too
        raise
    except (OSError, MemoryError) as err:  # this machine now, not the model: try again next run
        raise BuildFailed(_reason(err), lasting=False) from err
    except Exception as err:  # noqa: BLE001 - any exporter/quantizer failure means: this model has no engine
        raise BuildFailed(_reason(err)) from err
    manifest = {"format": FORMAT, "sha256": {name: file_digest(folder / f"{name}.onnx") for name in GRAPHS}}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")


def _reason(err: BaseException) -> str:
    first_line = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {first_line}"[:500]


def _build_temporary(build: Callable[[Path], None], key: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=f"convtrans-engine-{key[:12]}-"))
    _build_into(folder, build)
    atexit.register(shutil.rmtree, folder, True)  # removed at exit (ignore_errors)
    return folder


def _record_failure(path: Path, reason: str) -> None:
    try:
        path.write_text(reason + "\n", encoding="utf-8")
    except OSError:
        pass  # an unwritable cache only means the next run tries again

