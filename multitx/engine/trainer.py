"""The one training loop every task shares.

    for each step:  lr from the schedule
                    for each micro-batch: forward (task.loss) under autocast, backward
                    clip gradients; a NaN/inf loss or gradient is caught here,
                      before the optimizer sees it
                    optimizer step
                    every eval_every steps: task.evaluate, metrics.jsonl, checkpoint

Device, precision, torch.compile, DDP (under torchrun), exact resume and
signals (SIGTERM / Ctrl-C save at the next step boundary) live here, so that
tasks only say what a batch, a loss and a metric are.
"""

import math
import os
import signal
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from multitx.engine import checkpoint
from multitx.engine.metrics import MetricsLog
from multitx.engine.optimizers import OPTIMIZERS, build_optimizer
from multitx.engine.runtime import rng_state, seed_everything, set_rng_state, setup_runtime
from multitx.errors import UserError
from multitx.tasks.base import Task


class Interrupted(Exception):
    """Training stopped on a signal after saving; `code` is the exit status (130 or 143)."""

    def __init__(self, code: int, saved: Path | None):
        super().__init__(f"stopped by signal, checkpoint {saved}")
        self.code, self.saved = code, saved


def lr_at(step: int, cfg: DictConfig) -> float:
    """Linear warm-up to cfg.lr over warmup_steps, then cosine decay to min_lr at cfg.steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1)
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))) * (cfg.lr - cfg.min_lr)


def check_config(cfg: DictConfig) -> None:
    for key in ("steps", "batch_size", "grad_accum", "eval_every", "eval_batches", "keep_checkpoints"):
        if cfg[key] < 1:
            raise UserError(f"{key} must be at least 1, got {cfg[key]}")
    if not cfg.lr > 0:
        raise UserError(f"lr must be positive, got {cfg.lr}")
    if cfg.optimizer not in OPTIMIZERS:
        raise UserError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {cfg.optimizer!r}")
    if cfg.optimizer == "muon" and not (cfg.muon.lr > 0 and cfg.muon.ns_steps >= 1):
        raise UserError(f"muon.lr must be positive and muon.ns_steps at least 1, got {cfg.muon.lr} and "
                        f"{cfg.muon.ns_steps}")
    if cfg.nonfinite not in ("stop", "skip"):
        raise UserError(f"nonfinite must be stop or skip, got {cfg.nonfinite!r}")


def resume_point(cfg: DictConfig, run_dir: Path) -> Path | None:
    if cfg.resume in (None, "", "none", False):
        if checkpoint.latest(run_dir) is not None:
            raise UserError(f"{run_dir} already has checkpoints; continue it with resume=auto, "
                            f"or choose a new run_dir")
        return None
    if cfg.resume == "auto":
        return checkpoint.latest(run_dir)  # None: nothing saved yet, start from scratch
    path = Path(cfg.resume)
    if not path.is_dir():
        raise UserError(f"resume={cfg.resume}: no such checkpoint folder; give RUN_DIR/checkpoints/step_N or auto")
    return path


class StopSignals:
    """SIGTERM or a first Ctrl-C asks for a stop at the next step boundary (after a
    checkpoint); a second Ctrl-C stops at once. The last complete checkpoint stays
    intact either way, since checkpoints are only ever renamed into place."""

    def __init__(self):
        self.signum = None
        self.previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self.previous[sig] = signal.signal(sig, self.handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def handle(self, signum, frame):
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def train(cfg: DictConfig) -> dict:
    """Train cfg.task as configured; returns the last evaluation's metrics."""
    check_config(cfg)
    runtime = setup_runtime(cfg.device, cfg.precision)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    seed_everything(cfg.seed + runtime.rank)
    run_dir = Path(cfg.run_dir)
    start_from = resume_point(cfg, run_dir)

    task: Task = get_class(cfg.task._target_)(cfg, runtime)
    try:
        model = task.build_model().to(runtime.device)
    except ValueError as err:  # the model's own checks: head count, position kind, ...
        raise UserError(f"cannot build the model: {err}; check the model.* settings") from None
    optimizer = build_optimizer(model, cfg, runtime)
    peak_lrs = [group["lr"] for group in optimizer.param_groups]  # lr, or muon.lr; the schedule scales each
    base_lr = cfg.lr
    batches = task.train_batches()
    step, best, skipped = 0, None, 0
    if start_from is not None:
        checkpoint.check_resumable(start_from, cfg)
        checkpoint.load_weights(model, start_from)
        state = checkpoint.load_state(start_from)
        optimizer.load_state_dict(state["optimizer"])
        batches.load_state_dict(state["data"])
        step, best, skipped = state["step"], state["best"], state.get("skipped", 0)
        set_rng_state(state["rng"][min(runtime.rank, len(state["rng"]) - 1)])

    config_yaml = OmegaConf.to_yaml(cfg)
    if runtime.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(config_yaml, encoding="utf-8")
        task.save_artifacts(run_dir)
    log = MetricsLog(run_dir, enabled=runtime.is_main)

    forward_model = torch.compile(model) if cfg.compile else model
    if runtime.distributed:
        forward_model = DistributedDataParallel(forward_model, device_ids=[runtime.device.index]
                                                if runtime.device.type == "cuda" else None)
    n_params = sum(p.numel() for p in model.parameters())
    if runtime.is_main:
        print(f"{task.name}: {n_params / 1e6:.2f}M parameters on {runtime.describe()}, run folder {run_dir}"
              + (f", resuming from {start_from}" if start_from else ""), flush=True)

    def save(is_best: bool = False) -> Path | None:
        """Every rank's RNG states are gathered; rank 0 writes."""
        states = [rng_state()]
        if runtime.distributed:
            states = [None] * runtime.world_size
            dist.all_gather_object(states, rng_state())
        if not runtime.is_main:
            return None
        state = {"step": step, "optimizer": optimizer.state_dict(), "data": batches.state_dict(), "rng": states,
                 "best": best, "skipped": skipped}
        return checkpoint.save(run_dir, step, model, state, config_yaml, keep=cfg.keep_checkpoints,
                               is_best=is_best)

    metrics: dict = {}
    window_loss, window_steps, window_items, window_time = 0.0, 0, 0, 0.0
    last_saved = step if start_from else None
    bar = tqdm(total=cfg.steps, initial=step, disable=not (cfg.progress and runtime.is_main), dynamic_ncols=True,
               mininterval=1.0, unit="step")
    model.train()
    with StopSignals() as signals:
        while step < cfg.steps:
            t0 = time.perf_counter()
            lr = lr_at(step, cfg)
            for group, peak in zip(optimizer.param_groups, peak_lrs, strict=True):
                group["lr"] = peak * lr / base_lr
            loss_sum = torch.zeros((), device=runtime.device)
            for micro in range(cfg.grad_accum):
                batch = runtime.to_device(next(batches))
                # Under DDP, gradients are averaged across processes on the last micro-step only.
                no_sync = runtime.distributed and micro < cfg.grad_accum - 1
                with forward_model.no_sync() if no_sync else nullcontext(), runtime.autocast():
                    loss = task.loss(forward_model, batch) / cfg.grad_accum
                loss.backward()
                loss_sum += loss.detach()
                window_items += task.items_in(batch)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or float("inf"))
            # One small all-reduce agrees on "all finite?" and "stop requested?" across processes.
            flags = torch.stack([torch.isfinite(loss_sum) & torch.isfinite(grad_norm),
                                 torch.tensor(signals.signum is not None, device=runtime.device)]).float()
            if runtime.distributed:
                flags[0] = -flags[0]
                dist.all_reduce(flags, op=dist.ReduceOp.MAX)
                flags[0] = -flags[0]
            finite, stop = bool(flags[0]), bool(flags[1])
            if not finite:
                optimizer.zero_grad(set_to_none=True)
                skipped += 1
                what = f"non-finite loss or gradient norm at step {step + 1} (loss {loss_sum.item():.4g}, " \
                       f"gradient norm {grad_norm.item():.4g})"
                if cfg.nonfinite == "stop" or skipped > cfg.max_skipped_steps:
                    bar.close()
                    log.close()
                    limit = "" if cfg.nonfinite == "stop" else f" ({skipped} skipped, max_skipped_steps reached)"
                    raise UserError(f"{what}{limit}; training stopped and no checkpoint holds it; "
                                    f"lower lr, or set nonfinite=skip to skip such steps")
                tqdm.write(f"skipping step {step + 1}: {what}")
            else:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            step += 1
            step_loss = loss_sum.item()
            log.step(step, step_loss, lr)
            window_loss += step_loss
            window_steps += 1
            window_time += time.perf_counter() - t0
            bar.update(1)
            if step % 10 == 0 or step == cfg.steps:
                bar.set_postfix(loss=f"{step_loss:.4f}", **{f"{task.unit}/s": f"{window_items / window_time:,.0f}"})

            if step % cfg.eval_every == 0 or step == cfg.steps:
                model.eval()
                metrics = {"train_loss": window_loss / window_steps}
                metrics.update(task.evaluate(model))
                metrics[f"{task.unit}_per_s"] = window_items * runtime.world_size / max(window_time, 1e-9)
                metrics["lr"] = lr
                watched = metrics.get(task.watch[0])
                is_best = watched is not None and (best is None or (watched < best if task.watch[1] == "min"
                                                                     else watched > best))
                if is_best:
                    best = watched
                log.evaluation(step, metrics)
                if runtime.is_main:
                    shown = task.show(model)
                    tqdm.write(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()
                                                            if isinstance(v, float)))
                    if shown:
                        tqdm.write(shown)
                save(is_best)
                last_saved = step
                window_loss, window_steps, window_items, window_time = 0.0, 0, 0, 0.0
                model.train()

            if stop:
                saved = save() if last_saved != step else checkpoint.latest(run_dir)
                bar.close()
                log.close()
                code = 130 if signals.signum == signal.SIGINT else 143
                if runtime.is_main:
                    print(f"stopped at step {step} by signal {signals.signum}; saved {saved}; "
                          f"continue with resume=auto run_dir={run_dir}", flush=True)
                raise Interrupted(code, saved)
    bar.close()
    log.close()
    return metrics
