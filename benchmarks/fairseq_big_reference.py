"""fairseq's side of benchmarks/big_models.py; runs under a Python with fairseq 0.12.2 (3.10).

    python fairseq_big_reference.py build ARCH OUT_DIR [--vocab 32768]
    python fairseq_big_reference.py time CHECKPOINT SOURCES.json --beam 4 --batch 8 --length 24 --threads 2

`build` makes a random-weight model of a released architecture with fairseq's own code and init
(a synthetic joined dictionary of --vocab symbols, padded as fairseq-preprocess pads) and saves
it as fairseq's checkpoints are saved (the training args as an argparse.Namespace). `time` loads it with
fairseq's loader and times fairseq's own SequenceGenerator on the CPU: every output forced to
exactly --length subwords (min_len = max_len), the same decode steps convtrans and CTranslate2
run (dictionaries from the checkpoint's folder; SOURCES.json a list of id lists, without eos); prints
{"seconds": ..., "tokens": ...} for one timed pass (generation only, no loading; big_models.py takes
the medians over rounds). Not part of convtrans.
"""

import argparse
import json
import os
import time
from pathlib import Path

import torch

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # fairseq's loader, on its own files

from fairseq import checkpoint_utils, options, tasks  # noqa: E402
from fairseq.data import Dictionary  # noqa: E402
from fairseq.sequence_generator import SequenceGenerator  # noqa: E402


def build(arch: str, out: Path, vocab: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    dictionary = Dictionary()
    for i in range(vocab - 4):
        dictionary.add_symbol(f"w{i}", n=vocab - i)
    for lang in ("en", "de"):
        dictionary.save(str(out / f"dict.{lang}.txt"))
    extra = ["--share-all-embeddings"]
    if arch.startswith("transformer"):  # keep fairseq 0.12's encoder off the BetterTransformer fast path
        extra += ["--checkpoint-activations"]
    args = options.parse_args_and_arch(options.get_training_parser(), [
        str(out), "--task", "translation", "-s", "en", "-t", "de", "--arch", arch, *extra])
    task = tasks.setup_task(args)
    torch.manual_seed(0)
    model = task.build_model(args)
    torch.save({"args": args,  # the <= 0.9 layout, which fairseq's loader upgrades and convtrans reads too
                "model": model.state_dict(), "extra_state": {"epoch": 1, "train_iterator": {"epoch": 1}},
                # what fairseq's trainer records; its loader's upgrade code reads the last entry
                "optimizer_history": [{"criterion_name": "LabelSmoothedCrossEntropyCriterion", "optimizer_name": "Adam",
                                       "lr_scheduler_state": {"best": None}, "num_updates": 0}]},
               out / "checkpoint.pt")
    print(json.dumps({"arch": arch, "parameters": sum(p.numel() for p in model.parameters())}))


def time_generation(checkpoint: Path, sources: list[list[int]], beam: int, batch: int, length: int) -> dict:
    models, _args, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(checkpoint)], arg_overrides={"data": str(checkpoint.parent)})
    model = models[0].eval()
    dictionary = task.target_dictionary
    generator = SequenceGenerator([model], dictionary, beam_size=beam, max_len_a=0, max_len_b=length, min_len=length)
    pad, eos = dictionary.pad(), dictionary.eos()

    def run(group_sources: list[list[int]]) -> int:
        tokens = 0
        for start in range(0, len(group_sources), batch):
            group = group_sources[start : start + batch]
            width = max(map(len, group)) + 1
            src = torch.full((len(group), width), pad, dtype=torch.long)
            for row, ids in enumerate(group):  # left-padded, as fairseq batches
                src[row, width - len(ids) - 1 :] = torch.tensor(ids + [eos])
            lengths = torch.tensor([len(ids) + 1 for ids in group])
            with torch.no_grad():
                out = generator.generate([model], {"net_input": {"src_tokens": src, "src_lengths": lengths}})
            tokens += sum(len(hyps[0]["tokens"]) for hyps in out)
        return tokens

    run(sources[:2])  # warm-up
    started = time.perf_counter()
    tokens = run(sources)
    return {"seconds": time.perf_counter() - started, "tokens": tokens}


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build")
    b.add_argument("arch")
    b.add_argument("out", type=Path)
    b.add_argument("--vocab", type=int, default=32768)
    t = sub.add_parser("time")
    t.add_argument("checkpoint", type=Path)
    t.add_argument("sources", type=Path)
    t.add_argument("--beam", type=int, default=4)
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--length", type=int, default=24)
    t.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.command == "build":
        build(args.arch, args.out, args.vocab)
    else:
        torch.set_num_threads(args.threads)
        sources = json.loads(args.sources.read_text())
        print(json.dumps(time_generation(args.checkpoint, sources, args.beam, args.batch, args.length)))


if __name__ == "__main__":
    main()
