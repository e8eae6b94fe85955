import gzip
from pathlib import Path

import pytest

from convtrans.data.corpus import read_jsonl_field, read_lines, read_pairs, resolve
from convtrans.errors import UserError


def test_resolve_prefers_plain_then_gz(tmp_path: Path) -> None:
    (tmp_path / "train.de.gz").write_bytes(gzip.compress(b"x\n"))
    assert resolve(tmp_path / "train", "de") == tmp_path / "train.de.gz"
    (tmp_path / "train.de").write_text("y\n")
    assert resolve(tmp_path / "train", "de") == tmp_path / "train.de"
    with pytest.raises(UserError, match=r"file not found: .*train\.en \(nor .*train\.en\.gz\)"):
        resolve(tmp_path / "train", "en")


def test_read_lines_plain_gz_crlf_bom_and_empty_lines(tmp_path: Path) -> None:
    text = "\ufefffirst\r\n\nthird  with  spaces\nlast without newline"
    (tmp_path / "a.txt").write_bytes(text.encode())
    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(text.encode()))
    expected = ["first", "", "third  with  spaces", "last without newline"]
    assert list(read_lines(tmp_path / "a.txt")) == expected
    assert list(read_lines(tmp_path / "a.txt.gz")) == expected


def test_read_lines_names_file_and_line_of_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad.de"
    path.write_bytes("ok\nstill ok\nbroken \xff here\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"bad\.de:3: invalid UTF-8 \(byte 0xff at column 8\)"):
        list(read_lines(path))


def test_read_lines_refuses_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(b"hello\n" * 100)[:30])
    with pytest.raises(UserError, match="cannot decompress"):
        list(read_lines(path))


def test_read_pairs_reports_both_counts() -> None:
    pairs = read_pairs(iter(["a", "b", "c"]), iter(["x", "y"]), ("s.de", "s.en"))
    with pytest.raises(UserError, match="line counts differ: s.de has 3 lines, s.en has 2"):
        list(pairs)
    pairs = read_pairs(iter(["a"]), iter(["x", "y", "z"]), ("s.de", "s.en"))
    with pytest.raises(UserError, match="s.de has 1 lines, s.en has 3"):
        list(pairs)
    assert list(read_pairs(iter(["a", ""]), iter(["x", ""]), ("1", "2"))) == [("a", "x"), ("", "")]


def test_read_jsonl_field(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"doc": "a\\nb", "sum": "s"}\n\n{"doc": "c", "sum": "t"}\n')
    assert list(read_jsonl_field(path, "doc")) == ["a\nb", "c"]
    with pytest.raises(UserError, match=r"d\.jsonl:1: no field 'summary' \(has: doc, sum\)"):
        list(read_jsonl_field(path, "summary"))
    path.write_text('{"doc": "a"}\n{"doc": \n')
    with pytest.raises(UserError, match=r"d\.jsonl:2: invalid JSON"):
        list(read_jsonl_field(path, "doc"))
    path.write_text('{"doc": 3}\n')
    with pytest.raises(UserError, match="field 'doc' is int, not a string"):
        list(read_jsonl_field(path, "doc"))
