import json
import re

import pytest

from convtrans.config import ModelConfig, list_presets, load_preset
from convtrans.errors import UserError
from convtrans.model import EncoderDecoder


def test_json_round_trip_rebuilds_identical_model() -> None:
    config = load_preset("tiny_lite_transformer", src_vocab_size=50, tgt_vocab_size=60)
    restored = ModelConfig.from_json(config.to_json())
    assert restored == config and isinstance(restored.encoder_kernel_sizes, tuple)
    shapes = {k: v.shape for k, v in EncoderDecoder(config).state_dict().items()}
    assert shapes == {k: v.shape for k, v in EncoderDecoder(restored).state_dict().items()}


def test_every_preset_loads_and_validates() -> None:
    names = list_presets()
    families = {load_preset(n).family for n in names}
    assert families == {"transformer", "lightconv", "dynamicconv", "synthesizer", "lite_transformer"}
    for required in ("transformer_iwslt_de_en", "transformer_wmt_en_de", "transformer_wmt_en_de_big",
                     "lightconv_iwslt_de_en", "dynamicconv_wmt_en_de_big", "lightconv_wmt_en_fr_big",
                     "dynamicconv_wmt_zh_en_big", "lite_transformer_iwslt_de_en_160", "lite_transformer_wmt_en_de_496",
                     "synthesizer_random_vanilla_wmt_en_de", "synthesizer_factorized_random_wmt_en_de",
                     "dynamicconv_cnn_dm", "tiny_synthesizer"):
        assert required in names


def test_unknown_fields_and_wrong_types_are_refused_by_name() -> None:
    data = load_preset("tiny_transformer").to_dict()
    with pytest.raises(UserError, match="unknown ModelConfig field.*: colour"):
        ModelConfig.from_dict({**data, "colour": "red"})
    with pytest.raises(UserError, match="config field d_model: expected int"):
        ModelConfig.from_dict({**data, "d_model": "32"})
    with pytest.raises(UserError, match="config field encoder_heads: must divide the mixer width 32"):
        ModelConfig.from_dict({**data, "encoder_heads": 5})
    lightconv = load_preset("tiny_lightconv").to_dict()
    with pytest.raises(UserError, match="config field encoder_kernel_sizes: needs 1 or encoder_layers=2 values"):
        ModelConfig.from_dict({**lightconv, "encoder_kernel_sizes": [3, 5, 7]})
    with pytest.raises(UserError, match="config field encoder_kernel_sizes: must be odd"):
        ModelConfig.from_dict({**lightconv, "encoder_kernel_sizes": [4]})
    with pytest.raises(UserError, match="synth_factors"):
        load_preset("tiny_synthesizer", synth_factors=(3, 3))
    with pytest.raises(UserError, match="config field lightconv_dropconnect: must be shared or position"):
        ModelConfig.from_dict({**lightconv, "lightconv_dropconnect": "per-token"})


def test_overrides_are_cast_by_field_type() -> None:
    config = load_preset("tiny_dynamicconv", overrides=[
        "d_model=64", "dropout=0.25", "encoder_glu=false", "encoder_kernel_sizes=5,9", "family=custom"])
    assert (config.d_model, config.dropout, config.encoder_glu, config.encoder_kernel_sizes, config.family) == (
        64, 0.25, False, (5, 9), "custom")
    with pytest.raises(UserError, match="d_model='wide': expected int"):
        load_preset("tiny_transformer", overrides=["d_model=wide"])
    with pytest.raises(UserError, match="--set expects key=value"):
        load_preset("tiny_transformer", overrides=["d_model"])
    with pytest.raises(UserError, match="unknown config field 'depth'"):
        load_preset("tiny_transformer", overrides=["depth=3"])


def test_preset_file_path_and_unknown_name(tmp_path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('family = "mine"\nd_model = 64\nencoder_heads = 4\n[train]\nlr = 1e-3\n')
    assert load_preset(str(path)).d_model == 64
    with pytest.raises(UserError, match="unknown preset 'nope'"):
        load_preset("nope")
    assert json.loads(load_preset(str(path)).to_json())["family"] == "mine"


def test_preset_recipes_are_read_literally() -> None:
    """Every [train] / [generate] value of every preset reaches the config unchanged (no key
    silently dropped or defaulted), and a bad value is refused by name."""
    from convtrans.config import TrainConfig, preset_recipe, read_preset

    for name in list_presets():
        raw = read_preset(name)
        train, generate = preset_recipe(name)
        for table, config in (("train", train), ("generate", generate)):
            for key, value in raw.get(table, {}).items():
                got = getattr(config, key)
                assert (list(got) if isinstance(got, tuple) else got) == value, f"{name} [{table}] {key}"
    train, generate = preset_recipe("dynamicconv_cnn_dm")
    assert (generate.min_len, generate.no_repeat_ngram, generate.max_source_len) == (55, 3, 400)
    with pytest.raises(UserError, match="train field amp"):
        TrainConfig(amp="fp8")


@pytest.mark.parametrize("field, value, message", [
    ("activation", "tanh", "activation: must be one of relu, gelu, gelu_tanh, silu"),
    ("sinusoid", "rope", "sinusoid: must be one of fairseq, marian"),
    ("decoder_start_id", 10**6, "decoder_start_id: must be -1 (bos_id) or a valid target token id"),
    ("position_offset", -1, "position_offset: must be >= 0"),
    ("lsra_conv_heads", -2, "lsra_conv_heads: must be >= 0"),
])
def test_imported_models_fields_are_checked_by_name(field: str, value: object, message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        ModelConfig(**{field: value})
    with pytest.raises(UserError, match="lsra_conv_heads"):  # 3 conv-branch heads cannot split 256 channels
        ModelConfig(d_model=512, encoder_mixer="lsra", decoder_mixer="lsra", encoder_kernel_sizes=(3,),
                    decoder_kernel_sizes=(3,), lsra_conv_heads=3)


def test_search_rules_are_checked_by_name() -> None:
    from convtrans.config import GenerateConfig

    with pytest.raises(UserError, match="generate field search: must be one of fairseq, hf"):
        GenerateConfig(search="marian")
    with pytest.raises(UserError, match="generate field early_stopping: must be one of heuristic, true, never"):
        GenerateConfig(early_stopping="False")
