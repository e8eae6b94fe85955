from pathlib import Path

from convtrans.data.tokenize import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    SubwordTokenizer,
    TextProcessor,
    normalize_whitespace,
    train_sentencepiece,
)
from tests.conftest import make_pairs


def test_normalize_whitespace_keeps_one_example_per_line() -> None:
    assert normalize_whitespace("  #A#: hi\n#B#:\tyo\u2028there\r\n ") == "#A#: hi #B#: yo there"


def test_moses_roundtrip_and_lowercase() -> None:
    proc = TextProcessor("en", moses=True)
    tokenized = proc.pre("Hello, world! It's \u201cfine\u201d and good.")
    assert tokenized == 'Hello , world ! It \'s " fine " and good .'
    assert proc.post(tokenized) == "Hello, world! It's \"fine\" and good."
    assert TextProcessor("de", lowercase=True).pre("Ein  Mann") == "ein mann"
    assert TextProcessor("de").post("Ein Mann") == "Ein Mann"


def test_trained_model_has_convtrans_special_ids_and_roundtrips(tmp_path: Path) -> None:
    text = tmp_path / "train.txt"
    text.write_text("".join(f"{de}\n{en}\n" for de, en in make_pairs(300)))
    model = train_sentencepiece([text], tmp_path / "spm", vocab_size=60)
    tok = SubwordTokenizer(model)
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (PAD_ID, UNK_ID, BOS_ID, EOS_ID)
    lines = ["Der mann läuft.", "The dog sits on a ball."]
    ids = tok.encode(lines)
    assert all(min(seq) > EOS_ID for seq in ids)  # no special ids inside a sentence
    assert [tok.decode(seq) for seq in ids] == lines
    assert len(tok.vocab_text().splitlines()) == len(tok)
