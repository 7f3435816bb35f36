"""Fitting a run into a time budget. The engine has no clock, so a benchmark times a
few training steps and one evaluation of the config on this machine, and if the
config's steps would not fit in the budget (evaluations included), scales steps and
warm-up down to fit. The run itself is then the ordinary engine's.

History of the margin and the calibration
-----------------------------------------
On the 2-core Zen 1 of 2026-11-23 (a first-generation AMD EPYC), `python -m
multitx.benchmarks.charlm --only recipe --budget 124` kept 8% of the budget to spare and ran
654 steps in 110.0 s (val 1.756); 600 s `python -m multitx.benchmarks.vit_fashion` runs that
day took 605 s with 3% to spare (18:09; the run's steps were slower than the calibration's)
and 616 s with 6% (muon.lr=0.03, 18:36). 10% is the margin now. An earlier Muon run of vit_fashion at 17:56, on
a slower machine and a more cautious step-time calibration, stopped at 2128 steps (485 s).

On the 2-core Zen 5 of 2026-12-01 a calibration by the lower quartile of 20 timed steps was
tried and dropped for their median: the vit_fashion run with augment.flip=true and
steps=20000, calibrated at 47 ms a step, ran at about 57 as the shared machine slowed down and
took 654 s of its 600; the benchmarks now say when a run overruns. The full runs are in the
docstrings of multitx/benchmarks/charlm.py and vit_fashion.py."""

import math
import time

import torch
from hydra.utils import get_class
from omegaconf import DictConfig

from multitx.cli import load_config
from multitx.engine.length import resolve_length
from multitx.engine.optimizers import build_optimizer
from multitx.engine.runtime import seed_everything, setup_runtime

# Time to spare: the machine's speed drifts during a long run, and a run's steps can be
# slower than the calibration's. On 2026-11-23, 600 s vit_fashion runs took 605 s with
# 3% to spare and 616 s with 6%; 10% is the margin. It does not cover every drift: on
# 2026-12-01 a run calibrated at 47 ms/step ran at 57 and took 654 s (benchmarks say so).
MARGIN = 1.10


def calibrate(cfg: DictConfig, steps: int = 20, warmup: int = 5) -> tuple[float, float]:
    """Median seconds per training step (forward, backward, clipping, optimizer step) and
    seconds per evaluation, for this config on this machine. The median, not a lower
    quantile: a run slower than its calibration overruns the budget, one faster only
    leaves seconds unused. A length in epochs is worked out as steps in cfg, as the
    trainer does (engine/length.py), from the task's training set."""
    runtime = setup_runtime(cfg.device, cfg.precision)
    seed_everything(cfg.seed)
    task = get_class(cfg.task._target_)(cfg, runtime)
    resolve_length(cfg, task.train_items(), runtime.world_size, say=lambda *_, **__: None)
    model = task.build_model().to(runtime.device)
    optimizer = build_optimizer(model, cfg, runtime)
    batches = task.train_batches()
    times = []
    for _ in range(warmup + steps):
        start = time.perf_counter()
        with runtime.autocast():
            loss = task.loss(model, runtime.to_device(next(batches)))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # waits for the GPU, as the training loop does
        times.append(time.perf_counter() - start)
    if hasattr(batches, "close"):
        batches.close()
    model.eval()
    start = time.perf_counter()
    task.evaluate(model)
    return sorted(times[warmup:])[steps // 2], time.perf_counter() - start


def fit_to_budget(argv: list[str], seconds: float, *, started: float | None = None) -> DictConfig:
    """The config of `argv` (key=value list), its steps cut to fit `seconds` of training if
    needed. With `started` (a time.perf_counter() value), the time since then, calibration
    included, and 5 s to load the data again count against the budget too."""
    cfg = load_config(argv)
    step_s, eval_s = calibrate(cfg)  # cfg.steps, warmup_steps, eval_every: from epochs if given so
    spent = 0.0 if started is None else time.perf_counter() - started + 5.0
    evals = math.ceil(cfg.steps / cfg.eval_every)
    fits = int((seconds - spent - evals * eval_s) / (MARGIN * step_s))
    if fits >= cfg.steps:
        print(f"{cfg.steps} steps at ~{step_s * 1000:.0f} ms/step fit the {seconds:.0f} s budget", flush=True)
        return cfg
    steps = max(fits, 1)
    scale = steps / cfg.steps
    # as many evaluations as the config asks for, the last one at the last step; in steps, the
    # epochs (the recipe's or the user's) set aside
    extra = ["epochs=null", "warmup_epochs=null", "eval_every_epochs=null",
             f"steps={steps}", f"warmup_steps={max(1, round(cfg.warmup_steps * scale))}",
             f"eval_every={math.ceil(steps / evals)}"]
    print(f"{cfg.steps} steps need ~{cfg.steps * step_s:.0f} s here ({step_s * 1000:.0f} ms/step); "
          f"running {steps} steps to fit the {seconds:.0f} s budget", flush=True)
    return load_config(argv + extra)
