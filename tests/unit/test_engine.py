"""The compiled CPU engine (convtrans/engine): its graphs agree with the PyTorch model within stated
bounds on every zoo family (fp32: float rounding; int8: the quantization error), its search results
equal the model's where scores are not near-ties, and its cache builds once, rebuilds what is
damaged, remembers what cannot be built and never needs to be writable."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch

from convtrans import engine
from convtrans.config import GenerateConfig
from convtrans.engine import graphs, store
from convtrans.engine.runtime import EngineModel
from convtrans.inference.generate import generate
from tests.unit.test_generate import sources, tiny_model

pytestmark = pytest.mark.skipif(not engine.available(), reason="onnx and onnxruntime are not installed")

FAMILIES = ["transformer", "dynamicconv", "lightconv", "synthesizer", "lite_transformer"]


def built(model: torch.nn.Module, folder: Path, precision: str) -> EngineModel:
    folder.mkdir(parents=True, exist_ok=True)
    graphs.build(model, folder, precision)
    return EngineModel(model.config, folder)


def step_through(model, src: torch.Tensor, tokens: torch.Tensor):  # noqa: ANN001, ANN201
    """Encoder output and the logits of each decode step fed `tokens` (B, T) one at a time."""
    with torch.inference_mode():
        enc_out, enc_mask = model.encode(src)
        cache = model.init_cache(enc_out, enc_mask)
        logits = []
        for t in range(tokens.shape[1]):
            out, cache = model.decode_step(tokens[:, t : t + 1], enc_out, enc_mask, cache)
            logits.append(out)
    return enc_out, torch.cat(logits, 1)


@pytest.mark.parametrize("family", FAMILIES)
def test_fp32_engine_equals_the_model_within_float_rounding(family: str, tmp_path: Path) -> None:
    """The same numbers up to float rounding (different kernels sum in a different order): encoder
    outputs and every step's logits within 1e-4 on a padded batch, from the empty state on.
    A graph with a wrong state, position or mask is off by whole units."""
    model = tiny_model(family)
    compiled = built(model, tmp_path / "e", "fp32")
    src = sources([7, 4])
    tokens = torch.tensor([[2, 5, 6, 7, 8, 9], [2, 9, 10, 11, 12, 13]])
    want_enc, want = step_through(model, src, tokens)
    got_enc, got = step_through(compiled, src, tokens)
    real = ~src.eq(model.config.pad_id)
    assert (got_enc - want_enc)[real].abs().max() < 1e-4
    assert got.shape == want.shape and (got - want).abs().max() < 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_int8_engine_stays_within_the_int8_bound(family: str, tmp_path: Path) -> None:
    """Teacher-forced log-probabilities within 0.3 of the exact model's on a tiny model of each
    family: the bound test_int8.py holds fbgemm's int8 path to (tiny d=16 models are int8's worst
    case; the shipped model's bound below is ten times tighter)."""
    model = tiny_model(family)
    compiled = built(model, tmp_path / "e", "int8")
    src = sources([6, 4])
    tokens = torch.tensor([[2, 5, 6, 7, 8], [2, 9, 10, 11, 12]])
    _, want = step_through(model, src, tokens)
    _, got = step_through(compiled, src, tokens)
    assert (got.log_softmax(-1) - want.log_softmax(-1)).abs().max() < 0.3


@pytest.mark.parametrize("family", ["transformer", "dynamicconv", "lite_transformer"])  # each state layout
def test_beam_search_on_the_fp32_engine_finds_the_models_hypotheses(family: str, tmp_path: Path) -> None:
    """Beams reorder the engine's state by rows like the model's caches, and sentences leaving the
    batch shrink it: the same n-best lists, scores within 1e-4 (clear winners: sharpened logits)."""
    model = tiny_model(family)
    with torch.no_grad():
        model.output.weight.mul_(5.0)
    compiled = built(model, tmp_path / "e", "fp32")
    src = sources([5, 9, 3])
    for config in (GenerateConfig(beam=3, n_best=3, max_len_a=0.0, max_len_b=10),
                   GenerateConfig(beam=1, max_len_a=1.0, max_len_b=2)):
        want, got = generate([model], src, config), generate([compiled], src, config)
        assert [[h.tokens for h in hyps] for hyps in got] == [[h.tokens for h in hyps] for hyps in want]
        assert all(abs(g.score - w.score) < 1e-4 for gs, ws in zip(got, want) for g, w in zip(gs, ws))


def test_sessions_follow_torchs_thread_count(tmp_path: Path) -> None:
    """A thread count gets its own sessions (ONNX Runtime fixes a pool at creation); results agree."""
    model = tiny_model("dynamicconv")
    compiled = built(model, tmp_path / "e", "fp32")
    src, tokens = sources([5]), torch.tensor([[2, 5, 6]])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = step_through(compiled, src, tokens)[1]
        torch.set_num_threads(2)
        two = step_through(compiled, src, tokens)[1]
    finally:
        torch.set_num_threads(threads)
    assert set(compiled._sessions) == {1, 2}
    assert (one - two).abs().max() < 1e-5


PAIRS = [("Ein Mann fährt Fahrrad.", "A man is riding a bicycle."),
         ("Zwei Hunde spielen im Schnee.", "Two dogs are playing in the snow."),
         ("Eine Frau in einem roten Kleid singt auf einer Bühne.", "A woman in a red dress is singing on a stage."),
         ("Kinder sitzen an einem Tisch und essen Eis.", "Children are sitting at a table eating ice cream.")]


def test_the_shipped_translator_on_the_int8_engine_keeps_its_reference_log_probs(tmp_path: Path) -> None:
    """The quality bound on real text, as for fbgemm's int8 path (test_int8.py): every reference
    token's log-probability within 0.05 of the exact model's, each sentence's within 0.1, the same
    most likely next token at every position (test_2016_flickr BLEU: docs/decode_speed.md)."""
    from convtrans import checkpoint as ckpt
    from convtrans.data.tokenize import SubwordTokenizer
    from convtrans.zoo import resolve_model

    folder = resolve_model("dynamicconv_multi30k_de_en")
    exact, checkpoint = ckpt.load_model(folder)
    compiled = built(exact, tmp_path / "e", "int8")
    ids = checkpoint.model_config
    tokenizer = SubwordTokenizer(folder / "spm.model")
    for source, target in zip(tokenizer.encode([s for s, _ in PAIRS]), tokenizer.encode([t for _, t in PAIRS])):
        src, tgt_in = torch.tensor([source + [ids.eos_id]]), torch.tensor([[ids.bos_id] + target])
        wanted = torch.tensor(target + [ids.eos_id])
        want = step_through(exact, src, tgt_in)[1].log_softmax(-1)[0]
        got = step_through(compiled, src, tgt_in)[1].log_softmax(-1)[0]
        positions = torch.arange(len(wanted))
        assert (got[positions, wanted] - want[positions, wanted]).abs().max() < 0.05
        assert abs(got[positions, wanted].sum() - want[positions, wanted].sum()) < 0.1
        assert torch.equal(got.argmax(-1), want.argmax(-1))


# ------------------------------------------------------------------------------------ the cache
@pytest.fixture
def checkpoint_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text('{"files": {"model.safetensors": "abc"}}')
    return folder


def counting_builder(model: torch.nn.Module) -> tuple[list[Path], object]:
    calls: list[Path] = []

    def build(dest: Path) -> None:
        calls.append(dest)
        graphs.build(model, dest, "fp32")

    return calls, build


def test_an_engine_is_built_once_then_loaded(checkpoint_dir: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVTRANS_ENGINE_CACHE", str(tmp_path / "cache"))
    calls, build = counting_builder(tiny_model("dynamicconv"))
    first = store.engine_folder(checkpoint_dir, "fp32", build)
    second = store.engine_folder(checkpoint_dir, "fp32", build)
    assert first == second and len(calls) == 1 and store.verified(first)
    assert first.parent == tmp_path / "cache"
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.name]  # no work folders left
    # new weights (config.json records their checksum) or another precision: another engine
    (checkpoint_dir / "config.json").write_text('{"files": {"model.safetensors": "def"}}')
    assert store.engine_folder(checkpoint_dir, "fp32", build) != first and len(calls) == 2


def test_a_damaged_engine_is_rebuilt(checkpoint_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVTRANS_ENGINE_CACHE", str(tmp_path / "cache"))
    calls, build = counting_builder(tiny_model("transformer"))
    folder = store.engine_folder(checkpoint_dir, "fp32", build)
    step = folder / "step.onnx"
    step.write_bytes(step.read_bytes()[: step.stat().st_size // 2])  # truncated
    assert not store.verified(folder)
    again = store.engine_folder(checkpoint_dir, "fp32", build)
    assert again == folder and store.verified(again) and len(calls) == 2
    (folder / "manifest.json").write_text("{not json")
    assert store.engine_folder(checkpoint_dir, "fp32", build) == folder and len(calls) == 3


def test_a_model_that_cannot_be_built_is_remembered(checkpoint_dir: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The exporter failing is not an error for the user (the fallback path runs), and the next
    run does not pay for the same failure again."""
    monkeypatch.setenv("CONVTRANS_ENGINE_CACHE", str(tmp_path / "cache"))
    calls: list[Path] = []

    def broken(dest: Path) -> None:
        calls.append(dest)
        raise RuntimeError("Unsupported: ONNX export of operator foo")

    for _ in range(2):
        with pytest.raises(store.BuildFailed, match="operator foo"):
            store.engine_folder(checkpoint_dir, "int8", broken)
    assert len(calls) == 1
    assert [p.name.endswith(store.FAILED) for p in (tmp_path / "cache").iterdir()] == [True]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_cache_builds_for_the_process(checkpoint_dir: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    monkeypatch.setenv("CONVTRANS_ENGINE_CACHE", str(locked / "engines"))
    try:
        folder = store.engine_folder(checkpoint_dir, "fp32", counting_builder(tiny_model("lightconv"))[1])
        assert store.verified(folder) and not folder.is_relative_to(locked)
    finally:
        locked.chmod(stat.S_IRWXU)


def test_an_unwritable_cache_builds_for_the_process_as_root_too(checkpoint_dir: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache path that is a file (so nothing can be created under it) stands in for a read-only
    home where tests run as root."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("CONVTRANS_ENGINE_CACHE", str(blocker / "engines"))
    folder = store.engine_folder(checkpoint_dir, "fp32", counting_builder(tiny_model("lightconv"))[1])
    assert store.verified(folder) and not folder.is_relative_to(blocker)


def test_the_manifest_records_every_graphs_checksum(checkpoint_dir: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVTRANS_ENGINE_CACHE", str(tmp_path / "cache"))
    folder = store.engine_folder(checkpoint_dir, "fp32", counting_builder(tiny_model("synthesizer"))[1])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert sorted(manifest["sha256"]) == sorted(graphs.GRAPHS) and manifest["format"] == store.FORMAT


def test_the_engine_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVTRANS_ENGINE", "off")
    assert not engine.available()
    monkeypatch.setenv("CONVTRANS_ENGINE", "auto")
    assert engine.available()


# ------------------------------------------------------------------------------------ the loader
def test_the_default_cpu_path_runs_the_int8_engine_and_fp32_stays_exact(model_dir: Path) -> None:
    """`auto` gives the engine (built into the session's cache, conftest.py), `fp32` the exact
    traced path. On the trained tiny model (a weak one: near-ties, so outputs may differ) each
    line's best score stays within the int8 bound of the exact one: if every log-probability moves
    by at most 0.3, so does the best length-normalized score."""
    from convtrans.inference.traced import TracedSteps
    from convtrans.inference.translator import Translator
    from tests.conftest import make_pairs

    default, exact = Translator(model_dir), Translator(model_dir, precision="fp32")
    assert isinstance(default.model, EngineModel) and isinstance(exact.model, TracedSteps)
    lines = [source for source, _ in make_pairs(12, seed=7)]
    got, want = default.translate_batch(lines), exact.translate_batch(lines)
    assert all(g.text for g in got)
    assert max(abs(g.score - w.score) for g, w in zip(got, want)) < 0.3


def test_without_the_engine_the_default_path_is_fbgemms(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from convtrans.inference import int8
    from convtrans.inference.exported import load_for_inference
    from convtrans.inference.traced import TracedSteps

    monkeypatch.setenv("CONVTRANS_ENGINE", "off")
    model, _ = load_for_inference(model_dir, torch.device("cpu"), "auto")
    assert isinstance(model, TracedSteps)
    assert any(isinstance(m, int8.Int8Linear) for m in model.model.modules()) == int8.available()


def test_a_model_the_exporter_fails_on_takes_the_fallback(model_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    from convtrans.inference.exported import load_for_inference
    from convtrans.inference.traced import TracedSteps

    monkeypatch.setenv("CONVTRANS_ENGINE_CACHE", str(tmp_path / "cache"))

    def fails(*args: object, **kwargs: object) -> None:
        raise RuntimeError("exporter cannot handle this")

    monkeypatch.setattr(graphs, "build", fails)
    model, _ = load_for_inference(model_dir, torch.device("cpu"), "auto")
    assert isinstance(model, TracedSteps)


def test_a_refused_checkpoint_is_an_error_and_a_full_disk_is_not_remembered(
        checkpoint_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the fallback would refuse too (bad weights, too big) is the user's one-line error;
    a failure of this machine at this moment (ENOSPC) falls back without a record."""
    import errno

    from convtrans.errors import UserError

    monkeypatch.setenv("CONVTRANS_ENGINE_CACHE", str(tmp_path / "cache"))

    def refused(dest: Path) -> None:
        raise UserError("weights do not match the config")

    with pytest.raises(UserError, match="do not match"):
        store.engine_folder(checkpoint_dir, "int8", refused)

    def disk_full(dest: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(store.BuildFailed, match="No space"):
        store.engine_folder(checkpoint_dir, "int8", disk_full)
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.endswith(store.FAILED)]
