"""Preparing a large corpus with byte-level BPE: MB/s and peak resident memory, at two sizes.

    python -m multitx.benchmarks.text_prep                     # 1 GB and 4 GB, generated once under dir
    python -m multitx.benchmarks.text_prep sizes=[0.25] dir=/tmp/text_prep

The corpus is generated (deterministically, from a fixed list of words) as eight .txt files
of each size. Each preparation runs in a fresh process, as `python -m multitx.train task=lm
data=textfile data.path=DIR` would prepare it: BPE learned on the first 90%, then every byte
encoded in data.workers processes (multitx/data/text/prepare.py). Reported: the time to learn
the BPE and to encode, the encoding's MB/s, and the peak resident memory of the preparing
process and of its largest worker. Beside it, in the same run on the same machine, the
reference: tokenizers' own `encode_batch` on the first 256 MB of the same corpus with the same
tokenizer, every core busy, no files written. Goals: the same peak at both sizes (within
10%), and encoding at least 80% as fast as encode_batch alone.
"""

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from multitx.cli import parse_args, run_cli
from multitx.config.rules import POSITIVE, Flag, Folder, Numbers, Whole, Workers
from multitx.config.settings import setting

WORDS = ("the of and to in is that for it as was with be by on not he this are or his from at which but have an they "
         "you were her she there been one all we their has would when if so no will what can more said out up its "
         "about into than them time only could new these some two may first then do any like my now over such our "
         "man me even most made after also did many before must through back years where much your way well down "
         "should because each just those people how too little state good very make world still own see men work "
         "long get here between both life being under never day same another know while last might us great old "
         "year off come since against go came right used take three café naïve Grüße").split()

PREPARE = """
import json, resource, sys, time
from pathlib import Path
from multitx.data.text.bpe import BytePairTokenizer
from multitx.data.text.prepare import file_sources, prepare

def peak_mb(who):
    return resource.getrusage(who).ru_maxrss / 1024

timings = {}
started = time.perf_counter()
data = {"vocab_size": %(vocab)d, "special_tokens": ["<|endoftext|>"]}
prepare(Path(sys.argv[2]), file_sources(sys.argv[1], "data.path"), None, BytePairTokenizer, data, "benchmark",
        workers=%(workers)r, timings=timings)
timings |= {"total_s": time.perf_counter() - started, "peak_mb": peak_mb(resource.RUSAGE_SELF),
            "worker_peak_mb": peak_mb(resource.RUSAGE_CHILDREN)}
print(json.dumps(timings))
"""

REFERENCE = """
import json, sys, time
from tokenizers import Tokenizer
from multitx.data.text.tokenizers import pieces
tokenizer = Tokenizer.from_str(json.dumps(json.load(open(sys.argv[2]))["tokenizer"]))
text = open(sys.argv[1], encoding="utf-8").read(256 << 20)
lines = list(pieces(text, 1 << 10))  # ~1 KB pieces: its fastest on 2026-12-06 (16 KB: half as fast)
started = time.perf_counter()
tokens = sum(len(e.ids) for e in tokenizer.encode_batch(lines, add_special_tokens=False))
seconds = time.perf_counter() - started
print(json.dumps({"mb_per_s": len(text.encode("utf-8")) / 2**20 / seconds, "tokens": tokens}))
"""


@dataclass
class TextPrepArgs:
    sizes: list = setting([1.0, 4.0], Numbers(each=POSITIVE), "corpus sizes in GB, a list (sizes=[0.25])")
    vocab: int = setting(2048, Whole(min=258), "data.vocab_size: at least 258 (the 256 bytes, <|endoftext|> and a "
                         "merge)")
    workers: str = setting("auto", None, "data.workers: auto or a number of processes; 0: the preparing process")
    dir: str = setting("runs/bench/text_prep", Folder(must_exist=False), "where corpora and tokens are written")
    debug: bool = setting(False, Flag(), "show full tracebacks instead of one-line errors")


def workers_of(value: str) -> str | int:
    """workers=: auto or a whole number (the text the command line gave, its default being text)."""
    workers = int(value) if value.strip().isdigit() else value
    Workers().check("workers", workers)
    return workers


def generate(folder: Path, gigabytes: float) -> int:
    """Eight .txt files of random sentences, `gigabytes` in all (made once; the same every time)."""
    size = int(gigabytes * 2**30)
    done = folder / "complete"
    if done.exists():
        return int(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    words = np.array(WORDS)
    written = 0
    for n in range(8):
        with open(folder / f"part{n}.txt", "w", encoding="utf-8") as f:
            while written < size * (n + 1) // 8:
                picks = words[rng.integers(0, len(words), 200_000)]
                lengths = rng.integers(5, 20, 20_000)
                sentences, start = [], 0
                for length in lengths:
                    sentences.append(" ".join(picks[start:start + length]).capitalize() + ".")
                    start += length
                block = "\n".join(sentences) + "\n"
                f.write(block)
                written += len(block.encode("utf-8"))
    done.write_text(str(written))
    return written


def run(script: str, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    args = parse_args(argv, TextPrepArgs, __doc__)
    workers, vocab = workers_of(str(args["workers"])), int(args["vocab"])
    root = Path(args["dir"])
    print(f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    rows = []
    for gb in (float(size) for size in args["sizes"]):
        corpus = root / f"corpus-{gb:g}GB"
        size = generate(corpus, gb)
        out = root / f"tokens-{gb:g}GB"
        (out / "stamp").unlink(missing_ok=True)
        got = run(PREPARE % {"vocab": vocab, "workers": workers}, str(corpus), str(out))
        reference = run(REFERENCE, str(corpus / "part0.txt"), str(out / "vocab.json"))
        mb = size / 2**20
        rows.append({"size_gb": gb, "mb": mb, **got, "encode_mb_per_s": mb / got["encode_s"],
                     "reference_mb_per_s": reference["mb_per_s"]})
        print(json.dumps(rows[-1]), flush=True)
    print("\n| corpus | learn BPE s | encode s | encode MB/s | encode_batch alone MB/s | ratio | peak RSS MB "
          "(preparing process) | largest worker MB |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size_gb']:g} GB | {r['learn_s']:.0f} | {r['encode_s']:.0f} | {r['encode_mb_per_s']:.1f} | "
              f"{r['reference_mb_per_s']:.1f} | {r['encode_mb_per_s'] / r['reference_mb_per_s']:.0%} | "
              f"{r['peak_mb']:.0f} | {r['worker_peak_mb']:.0f} |")


if __name__ == "__main__":
    run_cli(main)
