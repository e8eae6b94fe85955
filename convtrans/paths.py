"""Where the model zoo (presets and shipped checkpoints) lives.

In a checkout (or an editable install) it is the top-level `models/` folder; in a wheel, hatch
copies that folder into the package as `convtrans/_zoo` (see pyproject.toml). Both are searched
so the same code works in either.
"""

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def zoo_dir() -> Path:
    """The folder holding `presets/` and the shipped checkpoint directories."""
    for candidate in (_PACKAGE_DIR / "_zoo", _PACKAGE_DIR.parent / "models"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("convtrans model zoo not found (expected convtrans/_zoo or models/)")
