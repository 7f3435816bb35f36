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

import json
import math
import os
import signal
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from multitx.config.schema import SHARED, validate
from multitx.engine import checkpoint
from multitx.engine.metrics import MetricsLog
from multitx.engine.optimizers import build_optimizer
from multitx.engine.run_lock import RunLock
from multitx.engine.runtime import Runtime, rng_state, seed_everything, set_rng_state, setup_runtime
from multitx.engine.stopping import Interrupted, StopSignals, collective_reason, is_collective_failure
from multitx.engine.task import Task
from multitx.errors import UserError
from multitx.imports import named_class


def lr_at(step: int, cfg: DictConfig) -> float:
    """Linear warm-up to cfg.lr over warmup_steps, then cosine decay to min_lr at cfg.steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1)
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))) * (cfg.lr - cfg.min_lr)


def resume_point(cfg: DictConfig, run_dir: Path, say=print) -> Path | None:
    if cfg.resume in (None, "", "none", False):
        if checkpoint.latest(run_dir) is not None:
            raise UserError(f"{run_dir} already has checkpoints; continue it with resume=auto, "
                            f"or choose a new run_dir")
        return None
    if cfg.resume == "auto":  # the newest intact checkpoint; None: nothing saved yet, start from scratch
        found, damaged = checkpoint.latest_intact(run_dir)
        if damaged and found is None:
            raise UserError(f"no intact checkpoint in {run_dir}/checkpoints: {damaged[0]}")
        for what in damaged:
            say(f"skipping a damaged checkpoint: {what}; resuming from {found}, the newest intact one", flush=True)
        return found
    path = Path(cfg.resume)
    if not path.is_dir():
        raise UserError(f"resume={cfg.resume}: no such checkpoint folder; give RUN_DIR/checkpoints/step_N or auto")
    return path


def check_same_global_batch(state: dict, cfg: DictConfig, runtime: Runtime, folder: Path) -> None:
    """A run may resume on another number of processes: the samplers draw one global batch
    (batch_size x processes) and hand each process its slice, so the data goes on from the same
    position as long as that global batch stays the same."""
    processes, batch_size = state.get("processes", runtime.world_size), state.get("batch_size", cfg.batch_size)
    if processes != runtime.world_size and processes * batch_size != runtime.world_size * cfg.batch_size:
        fitting = processes * batch_size / runtime.world_size
        advice = f"batch_size={int(fitting)}" if fitting == int(fitting) else "a batch_size that keeps it"
        raise UserError(f"{folder} was trained on {processes} processes of batch_size={batch_size} (global batch "
                        f"{processes * batch_size}); on {runtime.world_size} give {advice}, so that the data goes on "
                        f"where it was")


def task_class_of(cfg: DictConfig) -> type[Task]:
    """The Task class cfg.task._target_ names (typed by the user: training imports it)."""
    SHARED["task._target_"].check("task._target_", cfg.task.get("_target_"))
    return named_class(cfg.task._target_, "task._target_", Task)


def data_position(state: dict, cfg: DictConfig, say=print) -> dict:
    """The data iterator's state in a checkpoint. multitx 0.1's samplers saved theirs another way
    (a generator's state); such a run goes on from as many batches into a fresh draw as it had taken."""
    data = state["data"]
    if {"seed", "epoch", "position"} <= data.keys():
        return data
    batches = state["step"] * cfg.grad_accum
    say(f"this checkpoint's data position was written by multitx 0.1, which drew batches another way: the data "
        f"goes on {batches} batches into today's order (the run resumes, but not bit for bit)", flush=True)
    return {"seed": cfg.seed, "epoch": 0, "position": batches, "former": True}


def train(cfg: DictConfig) -> dict:
    """Train cfg.task as configured; returns the last evaluation's metrics.
    Every setting is checked first (the shared ones, the task's `rules`, the dataset's), then the run
    folder is locked for this trainer alone."""
    task_class = task_class_of(cfg)
    validate(cfg, task_class.rules)
    runtime = setup_runtime(cfg.device, cfg.precision, timeout_s=cfg.get("dist_timeout", 300))
    lock = RunLock(Path(cfg.run_dir))
    refusal = None
    if runtime.is_main:
        try:
            lock.acquire()
        except UserError as err:
            refusal = str(err)
    if runtime.distributed:  # every process stops with rank 0's line, or none does
        shared = [refusal]
        dist.broadcast_object_list(shared, src=0)
        refusal = shared[0]
    if refusal:
        raise UserError(refusal)
    if lock.took_over:
        print(f"{lock.path} named {lock.took_over}, which is gone (killed?); this run takes the folder over",
              flush=True)
    try:
        return train_locked(cfg, runtime, task_class)
    finally:
        lock.release(remove_empty_folder=True)


def train_locked(cfg: DictConfig, runtime: Runtime, task_class: type[Task]) -> dict:
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    seed_everything(cfg.seed + runtime.rank)
    run_dir = Path(cfg.run_dir)
    start_from = resume_point(cfg, run_dir, say=print if runtime.is_main else lambda *_, **__: None)

    task = task_class(cfg, runtime)
    try:
        model = task.build_model().to(runtime.device)
    except ValueError as err:  # the model's own checks: head count, position kind, ...
        raise UserError(f"cannot build the model: {err}; check the model.* settings") from None
    except (MemoryError, torch.OutOfMemoryError) as err:
        raise UserError(f"cannot build the model: not enough memory ({type(err).__name__}); choose smaller "
                        f"model.* settings") from None
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
        check_same_global_batch(state, cfg, runtime, start_from)
        batches.load_state_dict(data_position(state, cfg, say=print if runtime.is_main else lambda *_, **__: None))
        step, best, skipped = state["step"], state["best"], state.get("skipped", 0)
        if runtime.rank < len(state["rng"]):
            set_rng_state(state["rng"][runtime.rank])
        else:  # more processes than the checkpoint had: a fresh stream for this one
            seed_everything(cfg.seed + runtime.rank + 1_000_003 * step)

    config_yaml = OmegaConf.to_yaml(cfg)  # after build_model: a model started from timm records what was built
    artifacts = task.artifacts()
    if runtime.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(config_yaml, encoding="utf-8")
        for name, content in artifacts.items():  # each checkpoint holds them too
            (run_dir / name).write_text(json.dumps(content, ensure_ascii=False, indent=1), encoding="utf-8")
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
                 "best": best, "skipped": skipped, "processes": runtime.world_size, "batch_size": cfg.batch_size}
        return checkpoint.save(run_dir, step, model, state, config_yaml, keep=cfg.keep_checkpoints,
                               is_best=is_best, artifacts=artifacts)

    metrics: dict = {}
    window_loss, window_steps, window_items, window_time = 0.0, 0, 0, 0.0
    last_saved = step if start_from else None
    bar = tqdm(total=cfg.steps, initial=step, disable=not (cfg.progress and runtime.is_main), dynamic_ncols=True,
               mininterval=1.0, unit="step")
    model.train()
    with StopSignals() as signals:
        try:
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
                    if runtime.is_main and cfg.get("plots", True):
                        from multitx.engine import plots  # matplotlib is imported only by runs that draw

                        # RUN_DIR/plots/*.png and TensorBoard images; a failure is one warning, never the run's end
                        plots.at_evaluation(run_dir, task, model, metrics, step, log,
                                            debug=bool(cfg.get("debug", False)), say=tqdm.write)
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
        except RuntimeError as err:  # gloo and NCCL raise RuntimeErrors (DistError) when a peer is gone
            if not (runtime.distributed and is_collective_failure(err)):
                raise
            bar.close()
            log.close()
            raise UserError(f"process {runtime.rank} of {runtime.world_size} lost the others at step {step + 1} "
                            f"({collective_reason(err)}): another process of this run died or hangs; the last "
                            f"complete checkpoint {checkpoint.latest(run_dir)} is intact: continue with resume=auto") \
                from None
    bar.close()
    log.close()
    return metrics
