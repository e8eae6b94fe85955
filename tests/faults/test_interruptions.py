"""Fault matrix, interruptions: SIGTERM during `translate -o` and kill -9 during preprocess leave
nothing behind (item 6); a closed stdout stops translate at once, quietly (item 14)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convtrans.cli import app
from tests.conftest import one_line_error, preprocess_args

pytestmark = pytest.mark.integration


def _wait_for(predicate, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.01)


def test_sigterm_during_translate_output_leaves_no_temp_file(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.en"
    proc = subprocess.Popen([sys.executable, "-m", "convtrans", "translate", "-m", str(model_dir), "--device", "cpu",
                             "-o", str(out)], stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: any(tmp_path.glob(".out.en.tmp-*")))  # the temp file exists from the start
    proc.stdin.write("Der mann läuft.\n")
    proc.stdin.flush()  # stdin stays open: translate is waiting for more when SIGTERM arrives
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and err.strip().splitlines()[-1] == "terminated", err
    assert list(tmp_path.iterdir()) == []  # neither the temp file nor a partial output


def test_temp_files_of_a_killed_translate_are_removed_by_the_next(model_dir: Path, tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".out.en.tmp-{dead.pid}-abc123"  # what kill -9 leaves: a finished PID's temp file
    stale.write_text("partial\n")
    live = tmp_path / f".out.en.tmp-{subprocess.os.getpid()}-xyz"  # a live process's temp file is not touched
    live.write_text("in progress\n")
    result = CliRunner().invoke(app, ["translate", "-m", str(model_dir), "--device", "cpu", "-o", str(tmp_path / "out.en")],
                                input="Ein hund.\n")
    assert result.exit_code == 0, result.stderr
    assert not stale.exists() and live.exists() and (tmp_path / "out.en").read_text().count("\n") == 1


@pytest.fixture
def big_corpus(raw_corpus: Path, tmp_path: Path) -> Path:
    """60 times the toy train split, so preprocess runs long enough to be interrupted."""
    big = tmp_path / "big"
    big.mkdir()
    for side in ("de", "en"):
        (big / f"train.{side}").write_text((raw_corpus / f"train.{side}").read_text() * 60)
        (big / f"valid.{side}").write_text((raw_corpus / f"valid.{side}").read_text())
    return big


def _interrupt_preprocess(big: Path, dest: Path, signum: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "convtrans", *preprocess_args(big, dest)], stderr=subprocess.PIPE,
                            text=True)
    _wait_for(lambda: any(dest.parent.glob(f".{dest.name}.tmp-*")) or proc.poll() is not None)
    proc.send_signal(signum)
    proc.wait(timeout=60)
    if proc.returncode == 0:
        pytest.skip("preprocess finished before it could be interrupted")
    return proc


def test_kill_9_during_preprocess_leaves_work_the_next_run_removes(raw_corpus: Path, big_corpus: Path,
                                                                   tmp_path: Path) -> None:
    """A killed preprocess leaves its work directory (`.bin.tmp-*`, MBs on a real corpus); the next
    preprocess of that --destdir, holding its lock, removes it."""
    dest = tmp_path / "bin"
    assert _interrupt_preprocess(big_corpus, dest, signal.SIGKILL).returncode == -signal.SIGKILL
    assert any(tmp_path.glob(".bin.tmp-*"))
    result = CliRunner().invoke(app, preprocess_args(raw_corpus, dest))
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big", "bin"]


def test_sigterm_during_preprocess_cleans_up_itself(big_corpus: Path, tmp_path: Path) -> None:
    proc = _interrupt_preprocess(big_corpus, tmp_path / "bin", signal.SIGTERM)
    assert proc.returncode == 143 and proc.stderr.read().strip().splitlines()[-1] == "terminated"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big"]


def test_a_second_preprocess_on_the_same_destdir_is_refused(raw_corpus: Path, tmp_path: Path) -> None:
    """Item 3 for data directories: the holder's PID is named; nothing is written."""
    from convtrans.locking import data_dir_lock

    with data_dir_lock(tmp_path / "bin"):
        result = CliRunner().invoke(app, preprocess_args(raw_corpus, tmp_path / "bin"))
    assert result.exit_code == 1
    assert f"bin is in use by process {subprocess.os.getpid()} (convtrans preprocess)" in one_line_error(result.stderr)
    assert not (tmp_path / "bin").exists()


def test_closed_stdout_stops_translate_at_once(model_dir: Path) -> None:
    """Item 14: `translate | head -1`. The reader goes away while translate still has input to
    read (stdin stays open, so without the fix it would wait, then translate, forever): it must
    stop at once, print nothing, and exit 141 like any Unix filter whose pipe closed."""
    proc = subprocess.Popen([sys.executable, "-m", "convtrans", "translate", "-m", str(model_dir), "--device", "cpu"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    try:
        proc.stdin.write("Der mann läuft.\n")
        proc.stdin.flush()
        assert proc.stdout.readline().endswith("\n")
        proc.stdout.close()  # `head -1` exits
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 141
    assert proc.stderr.read() == ""


def test_closed_stdout_stops_a_file_translation_before_its_end(model_dir: Path, tmp_path: Path) -> None:
    """The same with `-i FILE | head -1`: the remaining chunks of a 3,000-line file are not translated."""
    src = tmp_path / "in.de"
    src.write_text("".join(f"Der mann läuft im park und der hund spielt {i}.\n" for i in range(3000)))
    proc = subprocess.Popen([sys.executable, "-m", "convtrans", "translate", "-m", str(model_dir), "--device", "cpu",
                             "-i", str(src)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        proc.stdout.close()
        started = time.time()
        proc.wait(timeout=60)
        stopped_after = time.time() - started
    finally:
        proc.kill()
    assert first.endswith("\n") and proc.returncode == 141 and proc.stderr.read() == ""
    assert stopped_after < 30  # generous: translating the other 2,744 lines takes minutes
