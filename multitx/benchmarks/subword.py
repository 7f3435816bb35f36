"""Characters against subwords on tinyshakespeare, at equal wall time on this machine.

    python -m multitx.benchmarks.subword                       # char, bpe 512, bpe 2048
    python -m multitx.benchmarks.subword vocab=[1024] budget=60

First the char LM's default recipe (task=charlm, config/task/charlm.yaml) runs as it is and
is timed; then task=lm with byte-level BPE (data.tokenizer=bpe) at each vocabulary size, the
same model shape and schedule, its steps fitted to that same wall time (benchmarks/budget.py;
the BPE is trained and the tokens prepared before the clock starts). Each run's best
checkpoint is then scored by `multitx.evaluate` on the whole val split (the last 10% of the
text): bits per character, the loss summed over the tokens in bits and divided by the
characters they spell, which puts a character model and a subword model on one scale.

Needs tinyshakespeare: copied from ../shared/data/tinyshakespeare.txt when that file is
there, else downloaded into data_dir.
"""

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from multitx.benchmarks.budget import fit_to_budget
from multitx.benchmarks.charlm import stage_shakespeare
from multitx.cli import load_config, parse_args, run_cli
from multitx.config.hardware import DEVICE_HELP, Device
from multitx.config.rules import Flag, Folder, Number, Numbers, Whole
from multitx.config.settings import setting
from multitx.data.text.corpus import load_corpus
from multitx.engine.trainer import train
from multitx.evaluate import evaluate


@dataclass
class SubwordArgs:
    vocab: list = setting([512, 2048], Numbers(each=Whole(min=258)), "BPE vocabulary sizes, a list (vocab=[1024]); "
                          "at least 258 each: the 256 bytes, <|endoftext|> and a merge")
    budget: float | None = setting(None, Number(min=0, open="min", null=True), "seconds for every run; null: the "
                                   "char recipe's own time")
    data_dir: str = setting("datasets", Folder(must_exist=False), "where tinyshakespeare is staged or downloaded")
    device: str = setting("auto", Device(), DEVICE_HELP)
    debug: bool = setting(False, Flag(), "show full tracebacks instead of one-line errors")


def run(label: str, argv: list[str], budget: float | None, device: str) -> dict:
    cfg = load_config(argv)
    corpus = load_corpus(cfg.data, Path(cfg.data_dir))  # prepared before the clock starts
    if budget is not None:
        cfg = fit_to_budget(argv, budget)
    start = time.perf_counter()
    train(cfg)
    wall = time.perf_counter() - start
    report = evaluate(Path(cfg.run_dir), "val", device=device)
    return {"run": label, "vocab": corpus.vocab.vocab_size, "steps": cfg.steps, "wall_s": wall,
            "chars_per_token": report["characters"] / report["tokens"], "loss": report["loss"],
            "bits_per_char": report["bits_per_char"]}


def main(argv: list[str]) -> None:
    args = parse_args(argv, SubwordArgs, __doc__)
    vocab, device = [int(size) for size in args["vocab"]], str(args["device"])
    asked = None if args["budget"] is None else float(args["budget"])
    data_dir = Path(args["data_dir"])
    stage_shakespeare(data_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {time.strftime('%Y-%m-%d %H:%M')}")
    common = ["data=shakespeare", f"data_dir={data_dir}", f"device={device}", "progress=false", "show_tokens=0",
              "plots=false"]
    rows = [run("char (task=charlm)", ["task=charlm", f"run_dir=runs/bench/subword-{stamp}-char", *common],
                asked, device)]
    budget = asked or rows[0]["wall_s"]
    for size in vocab:
        rows.append(run(f"bpe {size} (task=lm)", ["task=lm", "data.tokenizer=bpe", f"data.vocab_size={size}",
                                                  f"run_dir=runs/bench/subword-{stamp}-bpe{size}", *common],
                        budget, device))
    print("\n| tokens | vocabulary | steps | wall s | characters per token | val loss per token | "
          "val bits per character |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['vocab']} | {r['steps']} | {r['wall_s']:.1f} | {r['chars_per_token']:.2f} | "
              f"{r['loss']:.3f} | {r['bits_per_char']:.3f} |")


if __name__ == "__main__":
    run_cli(main)
