"""The wheel must carry the model zoo (models/ → convtrans/_zoo) and the console script."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True, capture_output=True,
    )
    (path,) = out.glob("convtrans-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_carries_every_zoo_file(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    tracked = subprocess.run(["git", "ls-files", "models"], cwd=ROOT, capture_output=True, text=True, check=True)
    zoo_files = tracked.stdout.split() or [str(p.relative_to(ROOT)) for p in (ROOT / "models").rglob("*") if p.is_file()]
    assert zoo_files
    for rel in zoo_files:
        assert "convtrans/_zoo/" + rel.removeprefix("models/") in names, rel
    assert "convtrans/cli.py" in names


def test_wheel_declares_console_script(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = [n for n in wheel.namelist() if n.endswith("entry_points.txt")]
    assert "convtrans = convtrans.cli:main" in wheel.read(entry_points).decode()
