"""Line I/O of translate / summarize: chunking, atomic output files, stale temporary files."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from convtrans.errors import UserError
from convtrans.atomic import remove_stale_temps, temp_prefix
from convtrans.inference.textio import OutputSink, chunks, input_lines


def test_chunks_by_window_and_by_waiting_input() -> None:
    lines = [str(i) for i in range(7)]
    assert list(chunks(lines, 3)) == [["0", "1", "2"], ["3", "4", "5"], ["6"]]
    waiting = iter([True, False, True, True, False, True, True])
    assert list(chunks(lines, 10, more_waiting=lambda: next(waiting))) == [["0", "1"], ["2", "3", "4"], ["5", "6"]]
    assert list(chunks([], 3)) == []


def test_output_file_appears_only_on_success(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), OutputSink(out) as sink:
        sink.write_lines(["partial"])
        raise RuntimeError("the work failed")
    assert list(tmp_path.iterdir()) == []
    with OutputSink(out) as sink:
        sink.write_lines(["a", "b"])
        assert not out.exists() and any(tmp_path.glob(f"{temp_prefix(out)}*"))
    assert out.read_text() == "a\nb\n" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_output_mode_and_a_directory(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    out.write_text("old\n")
    out.chmod(0o604)
    with OutputSink(out) as sink:
        sink.write_lines(["new"])
    assert out.read_text() == "new\n" and stat.S_IMODE(out.stat().st_mode) == 0o604
    with pytest.raises(UserError, match="is a directory"):
        OutputSink(tmp_path)


def test_stale_temps_of_dead_processes_only(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".out.txt.tmp-{dead.stdout.strip()}-x"
    live = tmp_path / f".out.txt.tmp-{os.getpid()}-y"
    other = tmp_path / ".other.txt.tmp-1-z"
    for path in (stale, live, other):
        path.write_text("")
    assert remove_stale_temps(out) == [stale]
    assert live.exists() and other.exists()


def test_input_lines_of_a_file_and_of_a_jsonl_field(tmp_path: Path) -> None:
    plain = tmp_path / "in.txt"
    plain.write_text("eins\r\nzwei\n")
    assert list(input_lines(plain)) == ["eins", "zwei"]
    records = tmp_path / "in.jsonl"
    records.write_text('{"doc": "a"}\n\n{"doc": "b"}\n')
    assert list(input_lines(records, "doc")) == ["a", "b"]


def test_a_second_sigpipe_during_the_cleanup_of_the_first_is_ignored() -> None:
    """A closed pipe can be reported twice (the kernel's SIGPIPE on a write and the watcher's): only
    the first raises StdoutClosed; a second one arriving while the first unwinds must not raise
    again (it used to escape as a traceback, exit 1)."""
    script = (
        "import os, signal, threading, time\n"
        "from convtrans.errors import StdoutClosed\n"
        "from convtrans.inference.textio import stop_when_stdout_closes\n"
        "original = signal.getsignal(signal.SIGPIPE)\n"
        "join = threading.Thread.join\n"
        "def late_signal_join(self, *args):  # the watcher's signal lands while the first one unwinds\n"
        "    os.kill(os.getpid(), signal.SIGPIPE)\n"
        "    time.sleep(0.1)\n"
        "    return join(self, *args)\n"
        "threading.Thread.join = late_signal_join\n"
        "try:\n"
        "    with stop_when_stdout_closes():\n"
        "        os.kill(os.getpid(), signal.SIGPIPE)\n"
        "        time.sleep(1)\n"
        "except StdoutClosed:\n"
        "    assert signal.getsignal(signal.SIGPIPE) == original, 'handler not restored'\n"
        "    os.kill(os.getpid(), signal.SIGPIPE)\n"
        "    time.sleep(0.2)\n"
        "    import sys; sys.stderr.write('stopped once\\n')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            timeout=60)
    assert result.returncode == 0 and result.stderr == "stopped once\n", result.stderr
