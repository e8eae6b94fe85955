"""python benchmarks/experiments/int8_output_projection.py [bleu]

Experiment (issue 17): the shipped translator with only its output projection in int8 (fbgemm dynamic,
deprecated quantized dtypes) against the exact fp32 path: decode tokens/s side by side, 3 interleaved rounds,
medians, outputs forced to 20 subwords; and test2016 BLEU of both."""
import copy, gzip, statistics, sys, time, warnings
import torch
warnings.simplefilter("ignore")
from convtrans.inference.translator import Translator
from convtrans.scoring import ScoreOptions, score

DATA = str(__import__("pathlib").Path(__file__).resolve().parents[3] / "shared" / "data" / "multi30k") + "/"

fp32 = Translator(device="cpu")
int8 = Translator(device="cpu")
int8.model.output = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(int8.model.output), {torch.nn.Linear}, dtype=torch.qint8)[0]
src = [l.strip() for l in gzip.open(DATA + "test_2016_flickr.de.gz", "rt")]
refs = [l.strip() for l in gzip.open(DATA + "test_2016_flickr.en.gz", "rt")]
if "bleu" in sys.argv:
    torch.set_num_threads(2)
    for name, t in (("fp32", fp32), ("int8 head", int8)):
        hyps = t.translate(src)
        print(name, "test2016 BLEU", round(score(hyps, [refs], ScoreOptions(metrics=("bleu",)))[0].score, 2), flush=True)
    sys.exit()
settings = [(1, 32, 2), (5, 32, 2), (1, 1, 1), (5, 1, 1)]
speeds = {}
for rnd in range(3):
    for beam, batch, threads in settings:
        torch.set_num_threads(threads)
        lines = src[: 128 if batch == 32 else 24]
        for name, t in ((("fp32", fp32), ("int8", int8)) if rnd % 2 == 0 else (("int8", int8), ("fp32", fp32))):
            cfg = t.generate_config.replace(beam=beam, n_best=1, min_len=20, max_len_a=0.0, max_len_b=20, no_repeat_ngram=0)
            tokens, t0 = 0, time.perf_counter()
            for i in range(0, len(lines), batch):
                tokens += sum(len(r.tokens) + 1 for r in t.translate_batch(lines[i:i + batch], cfg))
            speeds.setdefault((beam, batch, threads, name), []).append(tokens / (time.perf_counter() - t0))
for beam, batch, threads in settings:
    a = statistics.median(speeds[(beam, batch, threads, "fp32")]); b = statistics.median(speeds[(beam, batch, threads, "int8")])
    print(f"beam {beam} batch {batch} threads {threads}: fp32 {a:.0f} tok/s, int8 head {b:.0f} tok/s, ratio {b/a:.2f}")
