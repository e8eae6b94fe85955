"""Where the model zoo (presets and shipped checkpoints) lives, and how a model name is found there.

In a checkout (or an editable install) it is the top-level `models/` folder; in a wheel, hatch
copies that folder into the package as `convtrans/_zoo` (see pyproject.toml). Both are searched
so the same code works in either.
"""

from __future__ import annotations

from pathlib import Path

from convtrans.errors import UserError

CONFIG = "config.json"  # what makes a folder a checkpoint (checkpoint.CONFIG; no torch import here)

_PACKAGE_DIR = Path(__file__).resolve().parent


def zoo_dir() -> Path:
    """The folder holding `presets/` and the shipped checkpoint directories."""
    for candidate in (_PACKAGE_DIR / "_zoo", _PACKAGE_DIR.parent / "models"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("convtrans model zoo not found (expected convtrans/_zoo or models/)")


def resolve_model(name_or_path: str | Path) -> Path:
    """A checkpoint directory: the path itself, or a model shipped in the zoo (models/NAME)."""
    path = Path(name_or_path)
    if (path / CONFIG).is_file():
        return path
    shipped = zoo_dir() / str(name_or_path)
    if (shipped / CONFIG).is_file():
        return shipped
    available = sorted(p.name for p in zoo_dir().iterdir() if (p / CONFIG).is_file())
    raise UserError(f"no model at {name_or_path!r}: not a checkpoint directory nor a shipped model "
                    f"(shipped: {', '.join(available) or 'none'})")


def default_model(task: str) -> Path:
    """The shipped default for `translate` or `summarize` (models/zoo.toml [defaults])."""
    from convtrans.config import tomllib

    index = zoo_dir() / "zoo.toml"
    defaults = tomllib.loads(index.read_text(encoding="utf-8")).get("defaults", {}) if index.is_file() else {}
    if task not in defaults:
        raise UserError(f"no default {task} model is shipped; pass -m/--model")
    return resolve_model(defaults[task])
