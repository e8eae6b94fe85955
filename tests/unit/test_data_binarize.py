from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convtrans.data.binarize import TokenArray, TokenArrayWriter, dtype_for_vocab
from convtrans.errors import UserError


def _write(prefix: Path, seqs: list[list[int]], dtype: str) -> TokenArray:
    with TokenArrayWriter(prefix, dtype) as writer:
        writer.add(seqs)
    return TokenArray(prefix)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.integers(0, 70_000), max_size=20), max_size=30))
def test_roundtrip_any_sequences(tmp_path_factory, seqs: list[list[int]]) -> None:
    prefix = tmp_path_factory.mktemp("tok") / "train.de"
    array = _write(prefix, seqs, dtype_for_vocab(70_001))
    assert len(array) == len(seqs)
    assert [array[i].tolist() for i in range(len(array))] == seqs
    assert array.lengths().tolist() == [len(s) for s in seqs]
    assert array.num_tokens == sum(map(len, seqs))


def test_dtype_choice_and_memory_mapping(tmp_path: Path) -> None:
    assert dtype_for_vocab(65_536) == "uint16"
    assert dtype_for_vocab(65_537) == "int32"
    array = _write(tmp_path / "x", [[1, 2, 3], [], [65_535]], "uint16")
    assert isinstance(array.tokens, np.memmap) and isinstance(array.offsets, np.memmap)
    assert array[-1].tolist() == [65_535] and array[1].tolist() == []
    with pytest.raises(IndexError):
        array[3]


def test_refuses_truncated_and_foreign_files(tmp_path: Path) -> None:
    _write(tmp_path / "x", [[1, 2, 3], [4, 5]], "uint16")
    data = (tmp_path / "x.bin").read_bytes()
    (tmp_path / "x.bin").write_bytes(data[:-2])
    with pytest.raises(UserError, match="truncated or corrupted"):
        TokenArray(tmp_path / "x")
    (tmp_path / "x.idx").write_bytes(b"not an index file at all")
    with pytest.raises(UserError, match="not a convtrans index file"):
        TokenArray(tmp_path / "x")
    with pytest.raises(UserError, match="missing token array file"):
        TokenArray(tmp_path / "absent")
