import pytest
import torch

from convtrans import checkpoint as ckpt
from convtrans.config import load_preset
from convtrans.errors import UserError
from convtrans.model import EncoderDecoder


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    config = load_preset("tiny_lightconv", src_vocab_size=30, tgt_vocab_size=30)
    model = EncoderDecoder(config)
    spm = tmp_path / "spm.model"
    spm.write_bytes(b"not really a sentencepiece model")
    data = ckpt.DataInfo("translation", "de", "en", {"de": "spm.model", "en": "spm.model"},
                         {"de": {"lang": "de"}, "en": {"lang": "en"}})
    path = ckpt.save(tmp_path / "ck", model, config, data, {"de": spm, "en": spm},
                     train_state={"run": {"update": 3}, "optimizer": {"x": torch.ones(2)}})
    return model, path


def test_round_trip_gives_identical_logits(saved) -> None:
    model, path = saved
    restored, checkpoint = ckpt.load_model(path)
    src, tgt = torch.randint(4, 30, (2, 6)), torch.randint(4, 30, (2, 5))
    assert torch.equal(model.eval()(src, tgt), restored(src, tgt))
    assert checkpoint.data.source_lang == "de" and (path / "spm.model").is_file()
    assert ckpt.load_train_state(path)["run"]["update"] == 3


def test_refuses_to_overwrite_and_leaves_no_temp_dirs(saved, tmp_path) -> None:
    model, path = saved
    checkpoint = ckpt.read(path)
    with pytest.raises(UserError, match="already exists"):
        ckpt.save(path, model, checkpoint.model_config, checkpoint.data, {"de": path / "spm.model", "en": path / "spm.model"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck", "spm.model"]


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_corrupted_or_truncated_checkpoints_are_refused(saved, damage) -> None:
    _, path = saved
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    if damage == "truncate":
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        weights.write_bytes(data[:-10] + bytes([data[-10] ^ 1]) + data[-9:])
    else:
        weights.unlink()
    with pytest.raises(UserError, match="corrupted|incomplete"):
        ckpt.load_model(path)


def test_train_state_never_unpickles_arbitrary_objects(saved) -> None:
    _, path = saved

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    torch.save({"run": Evil()}, path / "train_state.pt")
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported"):
        ckpt.load_train_state(path)


def test_average_is_the_parameter_mean(saved, tmp_path) -> None:
    model, path = saved
    checkpoint = ckpt.read(path)
    other = EncoderDecoder(checkpoint.model_config)
    second = ckpt.save(tmp_path / "ck2", other, checkpoint.model_config, checkpoint.data,
                       {"de": path / "spm.model", "en": path / "spm.model"})
    averaged, _ = ckpt.load_model(ckpt.average([path, second], tmp_path / "avg"))
    for name, param in averaged.state_dict().items():
        if param.is_floating_point():
            torch.testing.assert_close(param, (model.state_dict()[name] + other.state_dict()[name]) / 2)


def test_point_replaces_links_and_keeps_a_real_directory_in_the_way(tmp_path) -> None:
    first, second, link = tmp_path / "checkpoint_u1", tmp_path / "checkpoint_u2", tmp_path / "checkpoint_last"
    first.mkdir()
    second.mkdir()
    ckpt.point(link, first)
    ckpt.point(link, second)
    assert link.is_symlink() and link.resolve() == second.resolve()
    link.unlink()
    link.mkdir()  # a run directory copied with `cp -rL`: checkpoint_last is a real directory
    (link / "model.safetensors").write_bytes(b"weights")
    ckpt.point(link, first)
    assert link.is_symlink() and link.resolve() == first.resolve()
    assert (tmp_path / "checkpoint_last.old" / "model.safetensors").read_bytes() == b"weights"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
