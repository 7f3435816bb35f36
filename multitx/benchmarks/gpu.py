"""The project's GPU figures in one command, in at most 8 minutes on one GPU.

    python -m multitx.benchmarks.gpu                           # every part; only=[mfu,vit] for some
    python -m multitx.benchmarks.gpu --smoke out=/tmp/smoke    # every code path on the CPU: no figures

Each part has a share of the 8 minutes; one still running at the end of its share is stopped
and reports what it had; one that fails writes its one-line error and the others still run.

  babygpt  100 s  nanoGPT's baby GPT (6 layers, 6 heads, 384 dims, context 256, batch 64, dropout 0.2,
                  AdamW 1e-3 cosine to 1e-4 over 5000 steps, warm-up 100, betas 0.9/0.99, bf16,
                  compile=true) with the charlm recipe's QK-norm, on tinyshakespeare through the
                  ordinary engine, evaluated every 250
                  steps (40 batches), stopped by stop_at at val loss <= 1.47. Goal: within 45 s. The text
                  is ../shared/data/tinyshakespeare.txt, staged as charlm.py does: nothing is downloaded.
  mfu       90 s  a GPT-2-small shape (peaks.py: 12 x 768, context 1024, vocab 50304, learned positions,
                  GELU) on random tokens, 16 x 1024 a step, bf16, compiled, fused AdamW: 10 untimed and
                  30 timed steps; MFU against the device's dense bf16 peak. Goal: 45%.
  vit       70 s  multitx's ViT against timm's (vit_vs_timm.py's build_models), batch 128, bf16, both
                  compiled: training and inference images/s, medians of 5 alternating rounds of 30 steps.
                  Goal: at least as fast as timm in both.
  fashion   85 s  task=vit_fashion with vit_fashion.py's GPU recipe, evaluated every epoch on the val
                  split held out of the training images, stopped at val_acc >= 0.945; the test split is
                  scored once at the end. Goal: test accuracy >= 94.5% within 60 s. Data: fashion_root=DIR.
  caption   80 s  task=caption's recipe on data=shapes (generated once into data_dir), evaluated every
                  250 steps with beam search (3 beams, as caption_shapes scores), stopped at
                  exact_match >= 0.97: the time, and BLEU-4 then.
  recompute 15 s  activation checkpointing (model.trunk.activation_checkpointing) on the mfu part's
                  shape, 16 x 1024 tokens a step, bf16, not compiled, AdamW: 2 untimed and 5 timed steps
                  without, then with it; the peak memory allocated over a step (beyond the weights,
                  gradients and optimizer state) and tokens/s of each (activation_memory.py's
                  training_peaks). Goal: the peak at most half.
  sharding  40 s  with 2 or more GPUs (skipped in one line with fewer): DDP against FSDP (strategy=ddp and
                  strategy=fsdp, engine/sharding.py) on every GPU under torchrun, one process a GPU, both
                  in the same processes one after the other (fsdp_memory.py's worker): GPT-2 small's
                  shape as gpt2_config builds it (biases, tied head), its vocabulary padded to 50,304 as
                  the mfu part's, 16 x 1024 tokens a step a GPU, bf16, not compiled, fused AdamW: 3
                  untimed and 10 timed steps. Tokens/s, MFU a GPU, torch.cuda.max_memory_allocated a
                  GPU, and the bytes of each GPU's parameters and optimizer state. Goal: FSDP's
                  parameters + optimizer state a GPU at most 1/N + 5% of DDP's (55% with 2 GPUs, the
                  goal of fsdp_memory.py's CPU benchmark).

"training s" is the trainer's time_s (seconds since training started, compilation included), on
which the goals are judged; "wall" adds data preparation and model building around train(). The
table's seconds are each part's whole wall time. Into out=DIR (default runs/bench/gpu-DATE-TIME/):
results.json (the figures and each part's details and run folder) and results.md (the table, also
printed; a row a part: what, goal, result, reached, seconds, device, date, torch).

--smoke (or smoke=true) runs every part on the CPU in fp32 without compilation, tiny and for a few
steps (fashion on a small random set written in Fashion-MNIST's IDX format), marked "smoke run, not a
measurement".
Without --smoke and without a CUDA device the command refuses (exit 2).
"""

import contextlib
import gzip
import json
import signal
import time
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import torch
from omegaconf import ListConfig

from multitx.benchmarks import activation_memory, fsdp_memory, peaks
from multitx.benchmarks.charlm import stage_shakespeare
from multitx.benchmarks.vit_fashion import RECIPES
from multitx.cli import load_config, parse_args, run_cli
from multitx.config.rules import Flag, Folder, Rule
from multitx.config.settings import setting
from multitx.data.images.datasets import FASHION_FILES
from multitx.data.text.corpus import SHAKESPEARE_SHA256
from multitx.engine.metrics import read_jsonl
from multitx.engine.trainer import train
from multitx.errors import UserError
from multitx.files import sha256_file

SHARES = {"babygpt": 100, "mfu": 90, "vit": 70, "fashion": 85, "caption": 80,
          "recompute": 15, "sharding": 40}  # seconds: 480 of the 480
SMOKE_SHARE = 60  # seconds, each part of a smoke run

BABYGPT = ["task=charlm", "data=shakespeare", "model.trunk.layers=6", "model.trunk.heads=6", "model.trunk.dim=384",
           "model.context=256", "batch_size=64", "model.trunk.dropout=0.2", "model.positions=learned",
           "model.trunk.activation=gelu", "model.trunk.bias=false", "model.trunk.qk_norm=true", "optimizer=adamw",
           "lr=1e-3", "min_lr=1e-4",
           "warmup_steps=100", "betas=[0.9,0.99]", "weight_decay=0.1", "grad_clip=1.0", "steps=5000",
           "eval_every=250", "eval_batches=40", "precision=bf16", "compile=true", "show_tokens=0",
           "stop_at='val_loss<=1.47'"]
FASHION = ["task=vit_fashion", *RECIPES["gpu"], "eval_every_epochs=1", "stop_at='val_acc>=0.945'"]
CAPTION = ["task=caption", "eval_every=250", "eval_beam=3", "show_captions=0", "stop_at='exact_match>=0.97'"]

# --smoke: the same settings, then these: the CPU, fp32, tiny sizes, a few steps
SMOKE_RUN = ["device=cpu", "precision=fp32", "compile=false"]
SMOKE = {
    "babygpt": ["model.trunk.layers=1", "model.trunk.heads=2", "model.trunk.dim=32", "model.context=32",
                "batch_size=4", "steps=4", "eval_every=2", "eval_batches=1", "warmup_steps=1"],
    "fashion": ["epochs=1", "warmup_epochs=null", "warmup_steps=1", "batch_size=16", "model.trunk.dim=32",
                "model.trunk.layers=1", "model.trunk.heads=2", "data.workers=0"],
    "caption": ["data.num_train=120", "data.num_val=12", "data.num_test=12", "model.image_size=16",
                "model.patch_size=4", "model.encoder.dim=32", "model.decoder.dim=32", "model.encoder.layers=1",
                "model.decoder.layers=1", "model.encoder.heads=2", "model.decoder.heads=2", "steps=4", "eval_every=2",
                "eval_batches=1", "eval_images=12", "batch_size=8", "captions_per_image=2", "warmup_steps=1"],
}


class Skipped(Exception):
    """A part that cannot run here (its data is missing): its one line goes into the table."""


class OverShare(BaseException):
    """The end of a part's share. A BaseException, so that no `except Exception` in torch or the
    trainer takes it for an error of its own."""


@dataclass
class Suite:
    """What every part needs to know."""
    smoke: bool
    device: torch.device
    device_name: str
    out: Path
    data_dir: Path
    fashion_root: Path


@dataclass
class Row:
    part: str
    what: str
    goal: str
    result: str = ""
    reached: bool = False
    seconds: float = 0.0
    details: dict = field(default_factory=dict)


@contextlib.contextmanager
def share(seconds: float):
    """Raise OverShare in this (the main) thread once `seconds` have passed."""
    def ring(signum, frame):
        raise OverShare(f"stopped at the end of its {seconds:.0f} s share")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def train_run(suite: Suite, part: str, settings: list[str]) -> dict:
    """Train through the ordinary engine: what metrics.jsonl holds, and the wall seconds around train()."""
    run_dir = suite.out / part
    argv = [*settings, *(SMOKE.get(part, []) + SMOKE_RUN if suite.smoke else ["device=cuda"]),
            f"run_dir={run_dir}", f"data_dir={suite.data_dir}", "progress=false", "plots=false"]
    cfg = load_config(argv)
    started, stop_note = time.perf_counter(), ""
    try:
        train(cfg)
    except OverShare as stop:  # the share ran out mid-training: report what the evaluations so far say
        stop_note = str(stop)
    rows = read_jsonl(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").exists() else []
    return {"run_dir": str(run_dir), "wall_s": time.perf_counter() - started, "cut_short": stop_note,
            "evaluations": [r for r in rows if r.get("split") != "test"],
            "test": next((r for r in rows if r.get("split") == "test"), {})}


def first(evaluations: list[dict], metric: str, reaches) -> dict | None:
    """The first evaluation whose metric reaches the target."""
    return next((r for r in evaluations if r.get(metric) is not None and reaches(r[metric])), None)


def cut_short(run: dict) -> str:
    return f" ({run['cut_short']})" if run["cut_short"] else ""


def babygpt(suite: Suite):
    text = suite.data_dir / "shakespeare" / "input.txt"
    stage_shakespeare(suite.data_dir)
    if not text.exists() or sha256_file(text) != SHAKESPEARE_SHA256:
        raise Skipped(f"tinyshakespeare is neither at ../shared/data/tinyshakespeare.txt nor at {text}; "
                      f"nothing is downloaded")
    run = train_run(suite, "babygpt", BABYGPT)
    hit = first(run["evaluations"], "val_loss", lambda v: v <= 1.47)
    best = min((r["val_loss"] for r in run["evaluations"]), default=float("nan"))
    last = run["evaluations"][-1]["step"] if run["evaluations"] else 0
    result = (f"val loss {hit['val_loss']:.3f} at step {hit['step']}, {hit['time_s']:.1f} training s" if hit
              else f"val loss 1.47 not reached in {last} steps{cut_short(run)}")
    result += f", {run['wall_s']:.1f} s wall; best val loss {best:.3f}"
    return result, bool(hit and hit["time_s"] <= 45), run


def model_flops(suite: Suite):
    run = peaks.gpt_tokens_per_s(suite.device, peaks.SMOKE_GPT if suite.smoke else peaks.GPT2_SMALL,
                                 compiled=not suite.smoke)
    peak = peaks.dense_bf16_peak(suite.device_name)
    run.update(peak_flops=peak, mfu=peaks.mfu(run["flops_per_token"], run["tokens_per_s"], peak))
    speed = f"{run['tokens_per_s']:,.0f} tokens/s at {run['flops_per_token'] / 1e9:.3g} GFLOP a token"
    if run["mfu"] is None:
        return f"peak unknown for {suite.device_name}: no MFU; {speed}", False, run
    return f"MFU {run['mfu']:.1%} of {peak / 1e12:.0f} TFLOP/s; {speed}", run["mfu"] >= 0.45, run


def vit_speed(suite: Suite):
    sizes = peaks.SMOKE_VIT if suite.smoke else peaks.VIT
    speeds = peaks.vit_images_per_s(suite.device, sizes, compiled=not suite.smoke)
    median = peaks.medians(speeds)
    timm, ours = (median[name] for name in peaks.VIT_ROWS)
    ratio = {kind: ours[kind] / timm[kind] for kind in ("train", "infer")}
    result = "; ".join(f"{label} {ours[kind]:,.0f} against timm's {timm[kind]:,.0f} images/s ({ratio[kind]:.2f}x)"
                       for kind, label in (("train", "training"), ("infer", "inference")))
    return result, min(ratio.values()) >= 1.0, {**sizes, "images_per_s": median, "rounds": speeds, "ratio": ratio}


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file of bytes, gzipped (Fashion-MNIST's format): magic, big-endian sizes, the data."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_fake_fashion(folder: Path, train_images: int = 200, test_images: int = 50) -> Path:
    """Random 28x28 images with balanced labels, in the four files Fashion-MNIST has (for --smoke)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", train_images), ("test", test_images)):
        images_name, labels_name = FASHION_FILES[split]
        write_idx(folder / f"{images_name}.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{labels_name}.gz", np.arange(n) % 10)
    return folder


def fashion(suite: Suite):
    root = write_fake_fashion(suite.out / "fashion-data") if suite.smoke else suite.fashion_root
    names = [name for pair in FASHION_FILES.values() for name in pair]
    if not all((root / f"{n}.gz").exists() or (root / n).exists() for n in names):
        raise Skipped(f"Fashion-MNIST is not in {root} (its four IDX files); give fashion_root=DIR")
    run = train_run(suite, "fashion", [*FASHION, f"data.root={root}"])
    hit = first(run["evaluations"], "val_acc", lambda v: v >= 0.945)
    test_acc = run["test"].get("test_acc")
    best = max((r["val_acc"] for r in run["evaluations"]), default=float("nan"))
    result = (f"val 94.5% at step {hit['step']}, {hit['time_s']:.1f} training s" if hit else
              f"val 94.5% not reached{cut_short(run)}: best val {best:.2%}")
    result += f"; test {test_acc:.2%}" if test_acc is not None else "; no test evaluation"
    result += f" ({run['wall_s']:.1f} s wall)"
    return result, bool(hit and hit["time_s"] <= 60 and test_acc is not None and test_acc >= 0.945), run


def caption(suite: Suite):
    run = train_run(suite, "caption", CAPTION)
    hit = first(run["evaluations"], "exact_match", lambda v: v >= 0.97)
    best = max(run["evaluations"], key=lambda r: r["exact_match"], default={"exact_match": float("nan"), "bleu4": 0})
    if hit:
        result = f"exact match {hit['exact_match']:.3f}, BLEU-4 {hit['bleu4']:.3f} at step {hit['step']}, " \
                 f"{hit['time_s']:.1f} training s"
    else:
        result = f"exact match 0.97 not reached{cut_short(run)}: best {best['exact_match']:.3f} " \
                 f"(BLEU-4 {best['bleu4']:.3f})"
    return result + f" ({run['wall_s']:.1f} s wall)", hit is not None, run


def size(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def recompute(suite: Suite):
    steps = {"steps": 2, "warmup": 1} if suite.smoke else {"steps": 5, "warmup": 2}
    shape = peaks.SMOKE_GPT if suite.smoke else peaks.GPT2_SMALL
    off, on = activation_memory.training_peaks(suite.device, shape, **steps)
    memory = "peak" if suite.device.type == "cuda" else "saved for backward (no peak counter on the CPU)"
    ratio, speed = on["peak"] / off["peak"], on["tokens_per_s"] / off["tokens_per_s"]
    result = (f"{memory} {size(off['peak'])} without, {size(on['peak'])} with ({ratio:.2f}x); "
              f"{off['tokens_per_s']:,.0f} against {on['tokens_per_s']:,.0f} tokens/s ({speed:.2f}x)")
    return result, ratio <= 0.5, {"without": off, "with": on, "peak_ratio": ratio, "speed_ratio": speed}


# the sharding part: GPT-2 small's shape (fsdp_memory.build), a batch a GPU; the smoke run's tiny one
SHARDING = {**fsdp_memory.GPT2_SMALL, "vocab": 50304, "batch": 16, "tokens": 1024, "warmup": 3, "steps": 10}
SMOKE_SHARDING = {"layers": 2, "dim": 32, "heads": 2, "vocab": 64, "context": 32, "batch": 2, "tokens": 32,
                  "warmup": 1, "steps": 2}


def per_strategy(rows: list[dict], strategy: str) -> dict:
    """One strategy's figures over its processes: tokens/s in all and a process, MFU a process (their mean),
    and the largest of the processes' memory figures."""
    mine = [r for r in rows if r["strategy"] == strategy]
    mfus = [r["mfu"] for r in mine]
    return {"tokens_per_s": sum(r["tokens_per_s"] for r in mine),
            "tokens_per_s_each": sum(r["tokens_per_s"] for r in mine) / len(mine),
            "mfu": None if None in mfus else sum(mfus) / len(mfus),
            "params_optim": max(r["params"] + r["optim"] for r in mine),
            "peak": max(r["cuda_peak"] for r in mine) if "cuda_peak" in mine[0] else None}


def sharding(suite: Suite):
    if suite.smoke:  # two gloo processes on the CPU, a thread each
        processes, spec = 2, {**SMOKE_SHARDING, "device": "cpu", "precision": "fp32"}
    else:
        processes = torch.cuda.device_count()
        if processes < 2:
            raise Skipped(f"needs 2 or more GPUs to compare DDP with FSDP across them; this machine shows {processes}")
        spec = {**SHARDING, "device": "cuda", "precision": "bf16"}
    rows = fsdp_memory.run({**spec, "strategies": list(fsdp_memory.STRATEGIES)}, processes)
    figures = {strategy: per_strategy(rows, strategy) for strategy in fsdp_memory.STRATEGIES}
    ratio = figures["fsdp"]["params_optim"] / figures["ddp"]["params_optim"]
    unit = "a GPU" if suite.device.type == "cuda" else "a process"

    def said(strategy: str) -> str:
        f = figures[strategy]
        utilisation = f"MFU {f['mfu']:.1%}" if f["mfu"] is not None else "no MFU"
        memory = f"peak {size(f['peak'])}" if f["peak"] is not None else "no peak counter on the CPU"
        return (f"{strategy} {f['tokens_per_s']:,.0f} tokens/s ({f['tokens_per_s_each']:,.0f} {unit}), "
                f"{utilisation}, {memory}, params + optimizer {size(f['params_optim'])} {unit}")

    result = f"{processes} {'GPUs' if suite.device.type == 'cuda' else 'processes'}: {said('ddp')}; {said('fsdp')}; " \
             f"fsdp's params + optimizer {ratio:.2f}x ddp's"
    return result, ratio <= 1 / processes + 0.05, {"processes": processes, **figures, "params_optim_ratio": ratio,
                                                   "rows": rows}


PARTS = {  # name: (function, what it measures, goal)
    "babygpt": (babygpt, "nanoGPT's baby GPT on tinyshakespeare, bf16, compiled", "val loss <= 1.47 within 45 s"),
    "mfu": (model_flops, "GPT-2-small shape, 16 x 1024 tokens a step, bf16, compiled", "MFU >= 45%"),
    "vit": (vit_speed, "ViT against timm, images/s, batch 128, bf16, compiled", ">= 1.00x timm, train and infer"),
    "fashion": (fashion, "Fashion-MNIST ViT, vit_fashion's GPU recipe", "test accuracy >= 94.5% within 60 s"),
    "caption": (caption, "captioner on shapes, task=caption's recipe", "val exact match >= 0.97"),
    "recompute": (recompute, "activation checkpointing, GPT-2-small shape, 16 x 1024 tokens, bf16",
                  "peak memory <= 0.5x without"),
    "sharding": (sharding, "DDP against FSDP on 2+ GPUs, GPT-2-small shape, 16 x 1024 tokens a GPU, bf16",
                 "fsdp params + optimizer a GPU <= 1/N + 5% of ddp's"),
}


def one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def run_part(name: str, suite: Suite) -> Row:
    function, what, goal = PARTS[name]
    row, started = Row(name, what, goal), time.perf_counter()
    print(f"\n== {name}: {what}", flush=True)
    try:
        with share(SMOKE_SHARE if suite.smoke else SHARES[name]):
            row.result, row.reached, row.details = function(suite)
    except Skipped as err:
        row.result = f"skipped: {err}"
    except (UserError, OverShare) as err:
        row.result = f"error: {one_line(err)}"
    except Exception as err:  # one line in the table; the other parts still run
        row.result = f"error: {type(err).__name__}: {one_line(err)}"
    row.seconds = time.perf_counter() - started
    row.reached = row.reached and not suite.smoke  # a smoke run measures nothing
    if suite.device.type == "cuda":  # compiled graphs and cached memory of one part are no use to the next
        torch._dynamo.reset()
        torch.cuda.empty_cache()
    return row


def table(rows: list[Row], meta: dict) -> str:
    mark = "(smoke run, not a measurement) " if meta["smoke"] else ""
    lines = ["| part | what | goal | result | reached | seconds | device | date | torch |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [r.part, r.what, r.goal, mark + r.result, "yes" if r.reached else "no", f"{r.seconds:.1f}",
                 meta["device"], meta["date"], meta["torch"]]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    title = "python -m multitx.benchmarks.gpu" + (" --smoke: smoke run, not a measurement" if meta["smoke"] else "")
    return f"# {title}\n\n" + "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Parts(Rule):
    """only=: one part's name or a list of them."""

    def accepts(self, value) -> bool:
        names = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, ListConfig)) else []
        return bool(names) and all(isinstance(name, str) and name in PARTS for name in names)

    def describe(self) -> str:
        return f"a part or a list of them ([mfu,vit]), from {', '.join(PARTS)}"


@dataclass
class GPUArgs:
    only: list = setting(list(PARTS), Parts(), "the parts to run, in the suite's order: one (only=mfu) or a list "
                         "(only=[mfu,vit])")
    out: str | None = setting(None, Folder(must_exist=False, null=True), "folder for results.json, results.md and "
                              "the run folders; null: runs/bench/gpu-DATE-TIME")
    data_dir: str = setting("datasets", Folder(must_exist=False), "tinyshakespeare (staged), shapes (generated)")
    fashion_root: str = setting("/usr/share/datasets/fashion-mnist", Folder(),
                                "Fashion-MNIST's four IDX files, for the fashion part (skipped where they are not)")
    smoke: bool = setting(False, Flag(), "every part on the CPU, tiny and fast: no figures (--smoke is the same)")
    debug: bool = setting(False, Flag(), "show full tracebacks instead of one-line errors")


def main(argv: list[str]) -> None:
    args = parse_args(argv, GPUArgs, __doc__)
    smoke = bool(args["smoke"])
    only = [args["only"]] if isinstance(args["only"], str) else list(args["only"])
    if not smoke and not torch.cuda.is_available():
        raise UserError("no CUDA device is visible: this suite measures GPU figures; run it on a GPU, or add --smoke "
                        "for a CPU run of every code path")
    out = Path(args["out"]) if args["out"] else Path("runs/bench") / f"gpu-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot make out={out} ({err.strerror}); choose another folder") from None
    device = torch.device("cpu" if smoke else "cuda")
    name = "CPU (--smoke)" if smoke else torch.cuda.get_device_name(device)
    print(f"device: {name}; torch {torch.__version__}; results into {out}", flush=True)
    suite = Suite(smoke, device, name, out, Path(args["data_dir"]), Path(args["fashion_root"]))
    if not smoke:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    rows = [run_part(part, suite) for part in PARTS if part in only]
    meta = {"device": name, "date": date.today().isoformat(), "torch": torch.__version__, "smoke": smoke}
    (out / "results.json").write_text(json.dumps({**meta, "parts": [asdict(r) for r in rows]}, indent=1,
                                                 default=str) + "\n", encoding="utf-8")
    markdown = table(rows, meta)
    (out / "results.md").write_text(markdown, encoding="utf-8")
    print("\n" + markdown)


if __name__ == "__main__":
    run_cli(main)
