"""Soak benchmark: does a long char-LM run leak memory or slow down?

    python -m multitx.benchmarks.soak                       # 20,000 tiny steps on pysource
    python -m multitx.benchmarks.soak steps=2000            # a shorter soak
    python -m multitx.benchmarks.soak text=FILE             # data=textfile data.path=FILE
    python -m multitx.benchmarks.soak run_dir=runs/soak device=cpu   # any other key=value goes to the config

Trains task=charlm through the real engine (multitx.engine.trainer.train) with a
tiny model (2 layers, 2 heads, 32 dims, context 32, batch 8, AdamW), evaluating
and checkpointing ten times along the way (every 2,000 steps of 20,000), as a
long run would. Nothing is downloaded: the text is the Python standard library's
own source unless text= names a file. The run folder (and its data cache) is a
temporary folder, removed afterwards, unless run_dir= / data_dir= say where.

The engine has no hooks, so the task measures itself: SoakTask is the char-LM task
whose training-mode `loss` notes the time at the start of every step and the
resident memory (RSS) at a few steps. It prints

  RSS at step 100 (warm) and at the last step, and the growth: PASS under 50 MB
  RSS along the way (total, and anonymous vs file-backed pages where /proc says)
  the median step time over the first and the last 1,000 steps
  the total wall time

The current figures, with their command, machine and day, are in
docs/benchmarks/soak.md. What follows is the history of earlier ones.

Tuning history
--------------
`python -m multitx.benchmarks.soak threads=1` on the 2-core AMD EPYC (Zen 5): without the
plots (run at 2026-12-01 22:39, before they existed), RSS grew by +2.6 MB. A collection after
each evaluation's figures matters: without it, matplotlib's figure cycles waited for Python's
rare full collection and the same run grew by +74.3 MB (against +41.7 MB with it, 2026-12-02
00:13).
"""

import os
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hydra.utils import get_class

from multitx.benchmarks import own_and_training
from multitx.cli import load_config, parse_args, run_cli
from multitx.config.rules import File, Flag, Folder, Whole
from multitx.config.settings import setting
from multitx.engine.trainer import train
from multitx.tasks.charlm import CharLMTask

GROWTH_LIMIT_MB = 50.0
WARM_STEP = 100  # RSS baseline: after the first steps, once buffers, optimizer state and caches exist
WINDOW = 1000  # steps in each step-time median
TINY = ["model.trunk.layers=2", "model.trunk.heads=2", "model.trunk.dim=32", "model.context=32", "batch_size=8",
        "optimizer=adamw", "show_tokens=0", "progress=false"]


@dataclass
class SoakArgs:
    steps: int = setting(20_000, Whole(min=2), "training steps; at least 2: a step time is the gap between two steps")
    text: str | None = setting(None, File(text=True, null=True), "a UTF-8 file to train on (data=textfile); "
                               "null: data=pysource")
    run_dir: str = setting("", Folder(must_exist=False), "run folder to keep (it must hold no checkpoints); empty: a "
                           "temporary one")
    data_dir: str = setting("", Folder(must_exist=False), "corpus cache to reuse; empty: beside the run, temporary")
    threads: int = setting(0, Whole(min=0), "torch threads; 0: torch's own choice")
    debug: bool = setting(False, Flag(), "show full tracebacks instead of one-line errors")


def rss_mb() -> dict[str, float]:
    """Resident memory of this process in MB: rss, and where Linux says, anon (heap, tensors) and
    file (mapped files: libraries, the memory-mapped corpus). Without /proc, the peak RSS so far."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
        return {"rss": peak / (2**20 if sys.platform == "darwin" else 2**10), "peak": True}
    kb = {name: float(fields[key].split()[0]) for name, key in
          (("rss", "VmRSS"), ("anon", "RssAnon"), ("file", "RssFile")) if key in fields}
    return {name: value / 1024 for name, value in kb.items()}


def load_average() -> str:
    """Step times mean little on a busy machine: other processes' load, said beside them."""
    try:
        return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except (AttributeError, OSError):
        return "load average unknown"


class SoakTask(CharLMTask):
    """The char-LM task, timing itself. The trainer builds the task, so what it records is
    left on the class (SoakTask.record) for the benchmark to read after train() returns."""

    record: dict = {}

    def __init__(self, cfg, runtime):
        super().__init__(cfg, runtime)
        self.calls = 0  # training-mode loss calls: grad_accum per step
        # Allocated once, here, so that the measuring adds nothing to the memory it measures.
        starts = np.full(cfg.steps, np.nan)  # (steps,) perf_counter() as step k+1's first forward begins
        warm = min(WARM_STEP, cfg.steps)
        rss_steps = {warm, cfg.steps, *range(cfg.eval_every, cfg.steps, cfg.eval_every)}  # and along the way
        type(self).record = {"starts": starts, "warm": warm, "rss_steps": rss_steps, "rss": {}}

    def loss(self, model, batch) -> torch.Tensor:
        if model.training:
            step, micro = divmod(self.calls, self.cfg.grad_accum)  # step: 0-based, before this one runs
            self.calls += 1
            if micro == 0:
                self.record["starts"][step] = time.perf_counter()
                if step + 1 in self.record["rss_steps"]:
                    self.record["rss"][step + 1] = rss_mb()
        return super().loss(model, batch)


def step_times_ms(starts: np.ndarray) -> np.ndarray:
    """(steps - 1,) milliseconds from each step's start to the next's: the whole step (forward,
    backward, clipping, optimizer, logging), and at every eval_every steps the evaluation and
    checkpoint too; the medians below are not moved by those few."""
    return np.diff(starts) * 1000


def soak_config(args: dict, overrides: list[str], run_dir: Path, data_dir: Path):
    data = ["data=textfile", f"data.path={Path(str(args['text'])).resolve()}"] if args["text"] else ["data=pysource"]
    steps = int(args["steps"])
    eval_every = max(1, min(2000, steps // 10))  # ten evaluations and checkpoints through the run
    return load_config(["task=charlm", *data, f"data_dir={data_dir}", f"run_dir={run_dir}", f"steps={steps}",
                        f"eval_every={eval_every}", *TINY, "task._target_=multitx.benchmarks.soak.SoakTask",
                        *overrides])


def report(record: dict, wall_s: float, after_mb: float) -> bool:
    rss = record["rss"]
    print(f"\n{'step':>7} {'rss MB':>8} {'anon MB':>8} {'file MB':>8}")
    for step in sorted(rss):
        r = rss[step]
        print(f"{step:>7} {r['rss']:>8.1f} {r.get('anon', float('nan')):>8.1f} {r.get('file', float('nan')):>8.1f}"
              + ("  (peak RSS: no /proc here)" if r.get("peak") else ""))
    first, last = record["warm"], max(rss)
    growth = rss[last]["rss"] - rss[first]["rss"]
    passed = growth <= GROWTH_LIMIT_MB
    print(f"\nRSS at step {first}: {rss[first]['rss']:.1f} MB, at step {last}: {rss[last]['rss']:.1f} MB, "
          f"after train() returned: {after_mb:.1f} MB")
    print(f"RSS growth: {growth:+.1f} MB  {'PASS' if passed else 'FAIL'} (limit {GROWTH_LIMIT_MB:.0f} MB)")
    times = step_times_ms(record["starts"])
    n = min(WINDOW, len(times))
    head, tail = statistics.median(times[:n]), statistics.median(times[-n:])
    print(f"median step time: first {n:,} steps {head:.2f} ms, last {n:,} steps {tail:.2f} ms "
          f"({tail / head:.2f}x)")
    print(f"wall time: {wall_s:.1f} s for {len(times) + 1:,} steps; {load_average()}")
    return passed


def main(argv: list[str]) -> None:
    ours, overrides = own_and_training(argv, SoakArgs)
    args = parse_args(ours, SoakArgs, __doc__.split("\nTuning history")[0])  # the history is for readers
    if int(args["threads"]):
        torch.set_num_threads(int(args["threads"]))
    with tempfile.TemporaryDirectory(prefix="multitx-soak-") as tmp:
        run_dir = Path(args["run_dir"]) if args["run_dir"] else Path(tmp) / "run"
        data_dir = Path(args["data_dir"]) if args["data_dir"] else Path(tmp) / "datasets"
        start = time.perf_counter()
        cfg = soak_config(args, overrides, run_dir, data_dir)
        print(f"soak: {cfg.steps:,} steps of charlm on {cfg.data.name}, eval every {cfg.eval_every}; torch "
              f"{torch.__version__}, {torch.get_num_threads()} threads on {os.cpu_count()} CPUs; {load_average()}; "
              f"{time.strftime('%Y-%m-%d %H:%M')}", flush=True)
        task_class = get_class(cfg.task._target_)  # the class the trainer builds (this module may be __main__)
        train(cfg)
        wall = time.perf_counter() - start
        passed = report(task_class.record, wall, rss_mb()["rss"])
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    run_cli(main)
