"""The char LM beside nanoGPT itself: the same text, the same configuration, whole processes, turn about.

    git clone https://github.com/karpathy/nanoGPT /somewhere/nanoGPT    # once; nothing of it is kept here
    python -m multitx.benchmarks.vs_nanogpt nanogpt=/somewhere/nanoGPT
    python -m multitx.benchmarks.vs_nanogpt nanogpt=DIR steps=2000 rounds=1 recipe=true
    python -m multitx.benchmarks.vs_nanogpt nanogpt=DIR steps=2000 rounds=1 compile=true

Each round runs nanoGPT's `train.py` with its README's laptop-CPU configuration (4 layers, 4
heads, 128 dims, context 64, batch 12, dropout 0, AdamW lr 1e-3 cosine to 1e-4, warm-up 100,
betas 0.9/0.99, weight decay 0.1, clipping 1.0, learned positions, GELU, fp32, evaluation every
250 iterations) and `python -m multitx.train task=charlm` with the same settings
(multitx/benchmarks/charlm.py's CONFIGS["nanogpt-cpu"]), each as a fresh process timed from
start to exit, alternating which goes first. Any other key=value goes to multitx only (e.g.
compile=true, to see what torch.compile buys), checked before anything runs.

recipe=true adds a third program to each round: multitx's default `task=charlm` recipe
(multitx/config/task/charlm.yaml, its own length and batch) on the same text, to hold its val
loss and wall time against nanoGPT's run of `steps` iterations (the issue's target: val <= 1.70
in at most half nanoGPT's wall time for its 2000 iterations). Its row also gives the loss over
the whole val split (python -m multitx.evaluate's figure, computed after the timing), since a
20-batch estimate moves by about +-0.01 with the windows drawn.

The data: tinyshakespeare (text=FILE, default ../shared/data/tinyshakespeare.txt or
datasets/shakespeare/input.txt), split 90/10 as both programs do, and written for nanoGPT the
way its data/shakespeare_char/prepare.py writes it (train.bin, val.bin as uint16, meta.pkl)
into a work folder, which also holds nanoGPT's configurator.py and config file (train.py reads
them from the current folder), and tokenised for multitx into its data cache, both before any
clock starts. The checkout itself is only read.

What differs between the two and is not the model's speed, so that the ratio can be read:
- nanoGPT trains max_iters + 1 iterations and also evaluates at iteration 0; each of its
  evaluations runs eval_iters=20 batches on train and 20 on val. multitx evaluates after steps
  250, 500, ... on eval_batches=40 val batches (the same forward work per evaluation).
- Both write a checkpoint at each evaluation that improves val (nanoGPT: ckpt.pt; multitx: a
  step folder with safetensors and a manifest); multitx draws no plots here (plots=false).
The table gives both the whole-process ratio and the ratio of the training steps alone (from
each program's own step timing: nanoGPT's "iter N: ... time X ms" lines without the iterations
that hold an evaluation; multitx's tokens_per_s, which counts only training steps).

GFLOP/s: nanoGPT's own estimate (model.py estimate_mfu) of 6N + 12 L H Dh T FLOPs per token (N
the parameters without the position table), times training tokens per second, against this
machine's fp32 matrix-multiply peak measured here first (2048 x 2048 torch.mm, best of 5).

Measured figures, with machine and day, are in docs/benchmarks/vs_nanogpt.md and below.

History
-------
All on the Zen 4 of 2026-12-06 (AMD EPYC family 25 model 17, 2 cores, fp32 matrix multiply
190-195 GFLOP/s), with nanoGPT's checkout of that day; walls in seconds, nanoGPT's first:

  time   command                                      nanoGPT  multitx  ratio   recipe (steps: wall, val)
  02:56  steps=2000 rounds=1                            102.1     95.2  1.07x
  03:47  steps=2000 rounds=1 recipe=true                 94.7    101.5  0.93x   450: 51.0 s, 1.661 (whole 1.668)
  03:58  steps=2000 rounds=1 recipe=true                 88.2     98.1  0.90x   450: 50.2 s, 1.661 (whole 1.668)
  06:46  steps=2000 rounds=2 recipe=true (best of 2)     94.8     91.6  1.03x   400: 40.8 s, 1.679 (whole 1.683)
  then multitx keeps freed CPU memory for reuse (multitx/engine/cpu_memory.py):
  07:42  steps=2000 rounds=1 recipe=true                101.8     95.5  1.07x   400: 40.1 s, 1.679 (whole 1.683)
  07:47  steps=2000 rounds=2 recipe=true (best of 2)     95.4     87.2  1.09x   400: 39.6 s, 1.679 (whole 1.683)

Single rounds of the same program moved by up to 11% (nanoGPT 94.8 and 105.5 s at 06:46), more
than the two programs differ. An operator profile of 30 steps of each model (torch.profiler, the
same configuration) gave 33.35 ms a step for nanoGPT's and 33.45 ms for multitx's: aten::mm 22.17
and 22.14 ms (about 85% of the matrix-multiply peak), SDPA's causal kernel 4.0, GELU 2.6,
LayerNorm 0.7, the fused AdamW step 0.4 and about 3 ms of small operations. 1.2x would mean
removing 6 of the 11 ms that are not matrix multiplies while computing the same GELU and the
same attention. `compile=true` took 28 s to compile and ran the step no faster (43-44 against
42-46 ms). The recipe went from 450 to 400 steps after 03:58 (1.682 at 400 steps in a one-thread
trial against 1.660 at 450, both under 1.70, the shorter 10% sooner).
"""

import json
import pickle
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import torch

from multitx.benchmarks import own_and_training
from multitx.benchmarks.charlm import CONFIGS
from multitx.cli import load_config, parse_args, run_cli
from multitx.config.rules import File, Flag, Folder, Whole
from multitx.config.settings import setting
from multitx.data.text.corpus import load_corpus
from multitx.errors import UserError

NANOGPT_CPU = ["--device=cpu", "--compile=False", "--eval_iters=20", "--log_interval=1", "--block_size=64",
               "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128", "--dropout=0.0", "--dtype=float32"]
LAYERS, HEADS, DIM, CONTEXT, BATCH = 4, 4, 128, 64, 12
EVAL_EVERY = 250
NEEDED = ("train.py", "model.py", "configurator.py", "config/train_shakespeare_char.py")
REPO = Path(__file__).resolve().parents[2]


@dataclass
class VsNanoGPTArgs:
    nanogpt: str | None = setting(None, Folder(hint="give a nanoGPT checkout: git clone "
                                               "https://github.com/karpathy/nanoGPT"),
                                  "a nanoGPT checkout (only read); required")
    steps: int = setting(500, Whole(min=EVAL_EVERY), f"iterations of both programs; at least {EVAL_EVERY}, the "
                         "evaluation interval")
    rounds: int = setting(2, Whole(min=1), "each program once a round, first in turn")
    text: str | None = setting(None, File(text=True, null=True), "tinyshakespeare; null: "
                               "../shared/data/tinyshakespeare.txt or datasets/shakespeare/input.txt")
    work: str | None = setting(None, Folder(must_exist=False, null=True), "the work folder; null: "
                               "runs/bench/vs_nanogpt-TIME")
    recipe: bool = setting(False, Flag(), "also run the default task=charlm recipe each round (--recipe is the same)")
    debug: bool = setting(False, Flag(), "show full tracebacks instead of one-line errors")


@dataclass
class Run:
    program: str
    round: int
    wall_s: float  # the whole process, start to exit
    train_tokens_per_s: float  # training steps alone, by the program's own timing
    final_val: float
    steps: int
    whole_val: float | None = None  # the recipe's loss over the whole val split


def default_text() -> Path:
    for path in (REPO.parent / "shared" / "data" / "tinyshakespeare.txt", REPO / "datasets" / "shakespeare" /
                 "input.txt"):
        if path.exists():
            return path
    raise UserError("no tinyshakespeare found: give text=FILE")


def check_checkout(nanogpt: Path) -> None:
    missing = [name for name in NEEDED if not (nanogpt / name).is_file()]
    if missing:
        raise UserError(f"nanogpt={nanogpt} is not a nanoGPT checkout (no {', '.join(missing)}); clone "
                        f"https://github.com/karpathy/nanoGPT and give its folder")


def stage_nanogpt(nanogpt: Path, text: str, work: Path) -> Path:
    """A folder nanoGPT's train.py can run in: its configurator and config file, and the data as its
    shakespeare_char/prepare.py writes it (characters sorted, ids uint16, first 90% train)."""
    import numpy as np  # nanoGPT's own dependency

    cwd = work / "nanogpt"
    (cwd / "config").mkdir(parents=True, exist_ok=True)
    shutil.copy(nanogpt / "configurator.py", cwd / "configurator.py")
    shutil.copy(nanogpt / "config" / "train_shakespeare_char.py", cwd / "config" / "train_shakespeare_char.py")
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    ids = np.array([stoi[ch] for ch in text], dtype=np.uint16)
    split = int(len(ids) * 0.9)
    data = cwd / "data" / "shakespeare_char"
    data.mkdir(parents=True, exist_ok=True)
    ids[:split].tofile(data / "train.bin")
    ids[split:].tofile(data / "val.bin")
    with open(data / "meta.pkl", "wb") as f:  # written for nanoGPT, which reads it; multitx reads no pickle
        pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi}, f)
    return cwd


def timed(cmd: list[str], cwd: Path, log: Path) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    log.write_text(done.stdout + done.stderr, encoding="utf-8")
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"{cmd[1]} exited {done.returncode}: {tail} (whole log: {log})")
    return wall, done.stdout


def run_nanogpt(nanogpt: Path, cwd: Path, steps: int, number: int) -> Run:
    out = f"out-{number}"
    wall, stdout = timed([sys.executable, str(nanogpt / "train.py"), "config/train_shakespeare_char.py",
                          *NANOGPT_CPU, f"--max_iters={steps}", f"--lr_decay_iters={steps}",
                          f"--eval_interval={EVAL_EVERY}", f"--out_dir={out}"], cwd, cwd / f"{out}.log")
    shutil.rmtree(cwd / out, ignore_errors=True)
    tokens_per_s, final_val, iterations = read_nanogpt_log(stdout)
    return Run("nanoGPT", number, wall, tokens_per_s, final_val, iterations)


def read_nanogpt_log(stdout: str) -> tuple[float, float, int]:
    """(training tokens/s, last val loss, iterations) from what nanoGPT's train.py prints: "iter N: loss
    X, time Yms" for each iteration, "step N: train loss A, val loss B" for each evaluation. The tokens/s
    leave out the first iteration (set-up) and those that hold an evaluation."""
    iters = [(int(n), float(ms)) for n, ms in re.findall(r"^iter (\d+): loss [\d.]+, time ([\d.]+)ms", stdout, re.M)]
    training = [ms for n, ms in iters if n % EVAL_EVERY and n > 0]
    vals = re.findall(r"^step \d+: train loss [\d.]+, val loss ([\d.]+)", stdout, re.M)
    if not training or not vals:
        raise RuntimeError("nanoGPT printed no iteration or evaluation lines: is this nanoGPT's train.py?")
    return BATCH * CONTEXT / (statistics.fmean(training) / 1000), float(vals[-1]), len(iters)


def run_multitx(text_path: Path, work: Path, steps: int, number: int, extra: list[str], recipe: bool = False) -> Run:
    """nanoGPT's configuration for `steps` steps, or (recipe) the default task=charlm recipe as it is."""
    name = f"{'recipe' if recipe else 'multitx'}-{number}"
    run_dir = work / name
    wall, _ = timed([sys.executable, "-m", "multitx.train", "task=charlm", "data=textfile",
                     f"data.path={text_path}", f"data_dir={work / 'datasets'}", f"run_dir={run_dir}",
                     *multitx_settings(steps, extra, recipe)], REPO, work / f"{name}.log")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "val_loss" in r and r.get("split") != "test"]
    # each evaluation's tokens_per_s covers the training steps since the one before it
    tokens_per_step = tokens_per_step_of(run_dir)
    windows = zip([0] + [r["step"] for r in evals[:-1]], evals, strict=True)
    trained = sum((r["step"] - before) * tokens_per_step / r["tokens_per_s"] for before, r in windows)  # seconds
    whole = whole_val_loss(run_dir) if recipe else None
    shutil.rmtree(run_dir, ignore_errors=True)
    done = evals[-1]["step"]
    return Run("recipe" if recipe else "multitx", number, wall, done * tokens_per_step / trained,
               evals[-1]["val_loss"], done, whole)


def multitx_settings(steps: int, extra: list[str], recipe: bool = False) -> list[str]:
    """What multitx.train is given besides the text and the folders: nanoGPT's configuration for
    `steps` steps, or (recipe) none, then the key=value given to this benchmark."""
    config = [] if recipe else \
        [a for a in CONFIGS["nanogpt-cpu"] if not a.startswith(("steps=", "eval_batches="))] + \
        [f"steps={steps}", "eval_batches=40"]
    return [*config, "progress=false", "plots=false", "show_tokens=0", "device=cpu", *extra]


def tokens_per_step_of(run_dir: Path) -> int:
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(run_dir / "config.yaml")
    return cfg.batch_size * cfg.grad_accum * cfg.model.context


def whole_val_loss(run_dir: Path) -> float:
    """The final model's loss over every character of the val split (multitx.evaluate)."""
    from multitx.evaluate import evaluate

    return evaluate(run_dir, "val", "latest", device="cpu")["loss"]


def matmul_peak(size: int = 2048, repeats: int = 5) -> float:
    """This machine's fp32 torch.mm rate in FLOP/s: the best of `repeats` timed products."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(timeit(lambda: a @ b) for _ in range(repeats))
    return 2 * size ** 3 / best


def timeit(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def flops_per_token(vocab: int) -> float:
    """nanoGPT's estimate_mfu: 6N + 12 L H Dh T, N without the position table (the token table is the
    tied head, so it counts)."""
    per_layer = 12 * DIM * DIM + 2 * DIM  # attention 4 D^2, MLP 8 D^2, two LayerNorm weights (no biases)
    n = vocab * DIM + LAYERS * per_layer + DIM  # + the final norm
    return 6 * n + 12 * LAYERS * HEADS * (DIM // HEADS) * CONTEXT


def report(runs: list[Run], peak: float, vocab: int, steps: int, extra: list[str]) -> str:
    """One row a program: its walls, the best against nanoGPT's best, training tokens/s, GFLOP/s by
    nanoGPT's estimate (the recipe has the same shape, so the same FLOPs a token), final val."""
    programs = [p for p in ("nanoGPT", "multitx", "recipe") if any(r.program == p for r in runs)]
    by = {p: [r for r in runs if r.program == p] for p in programs}
    best = {p: min(rs, key=lambda r: r.wall_s) for p, rs in by.items()}
    base_rate = statistics.median(r.train_tokens_per_s for r in by["nanoGPT"])
    fpt = flops_per_token(vocab)
    lines = [f"{steps} steps, {len(by['nanoGPT'])} rounds; torch {torch.__version__}, {torch.get_num_threads()} "
             f"threads; fp32 matmul peak {peak / 1e9:.0f} GFLOP/s; {fpt / 1e6:.2f} MFLOP a token; "
             f"{datetime.now():%Y-%m-%d %H:%M}" + (f"; multitx given {' '.join(extra)}" if extra else ""),
             f"{'program':<9} {'steps':>5} {'walls s (rounds)':<22} {'best s':>7} {'vs nanoGPT':>10} "
             f"{'train tok/s':>11} {'vs nanoGPT':>10} {'GFLOP/s':>8} {'of peak':>8} {'final val':>9} {'whole val':>9}"]
    for program, rs in by.items():
        b = best[program]
        rate = statistics.median(r.train_tokens_per_s for r in rs)
        whole = f"{b.whole_val:>9.3f}" if b.whole_val is not None else f"{'':>9}"
        lines.append(f"{program:<9} {b.steps:>5} {' '.join(f'{r.wall_s:.1f}' for r in rs):<22} {b.wall_s:>7.1f} "
                     f"{best['nanoGPT'].wall_s / b.wall_s:>9.2f}x {rate:>11,.0f} {rate / base_rate:>9.2f}x "
                     f"{rate * fpt / 1e9:>8.1f} {rate * fpt / peak:>8.1%} {b.final_val:>9.3f} {whole}")
    if "recipe" in by:
        share = best["recipe"].wall_s / best["nanoGPT"].wall_s
        lines.append(f"recipe: val {best['recipe'].final_val:.3f} in {share:.2f} of nanoGPT's wall time "
                     f"(target: <= 1.70 in <= 0.50 of its 2000 iterations)")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    ours, overrides = own_and_training(argv, VsNanoGPTArgs)
    args = parse_args(ours, VsNanoGPTArgs, __doc__.split("\nHistory\n")[0])  # the history is for readers
    steps, rounds, recipe = int(args["steps"]), int(args["rounds"]), bool(args["recipe"])
    for program in (False, True) if recipe else (False,):  # multitx's settings, checked before anything runs
        load_config(["task=charlm", "data=textfile", *multitx_settings(steps, overrides, program)])
    if not args["nanogpt"]:
        raise UserError("say which nanoGPT checkout to run: nanogpt=DIR (git clone https://github.com/karpathy/nanoGPT;"
                        " it is only read)")
    nanogpt = Path(str(args["nanogpt"])).expanduser().resolve()
    check_checkout(nanogpt)
    text_path = (Path(str(args["text"])).expanduser() if args["text"] else default_text()).resolve()
    try:
        text = text_path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"text={text_path} is not UTF-8 text; give tinyshakespeare with text=FILE") from None
    work = (Path(str(args["work"])) if args["work"] else
            REPO / "runs" / "bench" / f"vs_nanogpt-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    cwd = stage_nanogpt(nanogpt, text, work)
    load_corpus("textfile", work / "datasets", str(text_path))  # multitx's ids too, before the clock, as nanoGPT's
    peak = matmul_peak()
    runs = []
    for number in range(rounds):
        order = ["nanoGPT", "multitx"] + (["recipe"] if recipe else [])
        for program in order if number % 2 == 0 else order[::-1]:
            run = run_nanogpt(nanogpt, cwd, steps, number) if program == "nanoGPT" else \
                run_multitx(text_path, work, steps, number, overrides, recipe=program == "recipe")
            print(f"round {number + 1} {program}: {run.wall_s:.1f} s, val {run.final_val:.3f}", flush=True)
            runs.append(run)
    table = report(runs, peak, len(set(text)), steps, overrides)
    print("\n" + table)
    (work / "results.json").write_text(json.dumps({"peak_flops": peak, "runs": [asdict(r) for r in runs]}, indent=1))
    (work / "results.txt").write_text(table + "\n")


if __name__ == "__main__":
    run_cli(main)
