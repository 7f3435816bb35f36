"""The one training loop every task shares.

    for each step:  lr from the schedule
                    one optimizer step (multitx/engine/step.py): micro-batches under autocast, backward
                      through the loss scaler, clipping; a NaN/inf loss or gradient is caught there,
                      before the optimizer sees it
                    ema_decay > 0: the weights' moving average follows (ema.py)
                    every eval_every steps: task.evaluate (of the averaged weights with ema_decay > 0),
                      metrics.jsonl, checkpoint

Device and precision (runtime.py), the length in epochs (length.py), torch.compile, DDP or FSDP
(strategy=, under torchrun: sharding.py), exact resume (run_setup.py) and signals (SIGTERM / Ctrl-C
save at the next step boundary) live in the engine, so that tasks only say what a batch, a loss and a
metric are.
"""

import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from multitx.config.rules import Target
from multitx.engine import checkpoint, ema, provenance, sharding
from multitx.engine.length import check_has_epochs, resolve_length
from multitx.engine.loggers import logger_classes
from multitx.engine.metrics import MetricsLog
from multitx.engine.optimizers import build_optimizer
from multitx.engine.run_setup import build_model, lock_run, restore, resume_point
from multitx.engine.runtime import Runtime, leave_process_group, rng_state, seed_everything, setup_runtime
from multitx.engine.sharded_checkpoint import full_optimizer_state, move_optimizer_state
from multitx.engine.step import Stepper
from multitx.engine.stopping import Interrupted, StopSignals, collective_reason, is_collective_failure
from multitx.engine.task import Task, task_class_of
from multitx.engine.validation import validate
from multitx.errors import UserError


def lr_at(step: int, cfg: DictConfig) -> float:
    """Linear warm-up to cfg.lr over warmup_steps, then cosine decay to min_lr at cfg.steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1)
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))) * (cfg.lr - cfg.min_lr)


def reached(target: tuple[str, str, float], metrics: dict, task: Task) -> bool:
    """Whether an evaluation's metrics reach stop_at's target (metric, "<=" | ">=", value)."""
    metric, op, value = target
    if metric not in metrics:
        known = ", ".join(k for k, v in metrics.items() if isinstance(v, (int, float)))
        raise UserError(f"stop_at names {metric}, which task={task.name}'s evaluations do not report "
                        f"(they report {known}); name one of those")
    got = metrics[metric]
    return got is not None and (got <= value if op == "<=" else got >= value)


def train(cfg: DictConfig, overrides: list[str] | None = None) -> dict:
    """Train cfg.task as configured; returns the last evaluation's metrics.
    Every setting is checked first (the shared ones, the task's `rules`, the dataset's), then the run
    folder is locked for this trainer alone. A length given in epochs is worked out as steps in cfg.
    overrides: the key=value arguments cfg was composed from, for RUN_DIR/provenance.jsonl."""
    task_class = check(cfg)
    runtime = setup_runtime(cfg.device, cfg.precision, timeout_s=cfg.get("dist_timeout", 300))
    lock = lock_run(Path(cfg.run_dir), runtime)
    try:
        metrics = train_locked(cfg, runtime, task_class, overrides)
    finally:
        lock.release(remove_empty_folder=True)
    leave_process_group(runtime)
    return metrics


def shard_run(model, optimizer, average, task: Task, cfg: DictConfig, runtime: Runtime, *, resumed: bool):
    """strategy=fsdp: rank 0's whole copy of the model made, the model sharded, and its optimizer and weight
    average made anew over the sharded parameters, each carrying over what a resumed run restored into the
    whole ones (a fresh run's average starts from rank 0's weights, which shard() gives every process).
    Returns (the replica, the optimizer, the average or None)."""
    replica = sharding.Replica(model, runtime)
    moved = full_optimizer_state(model, optimizer) if resumed else None
    averaged = average.state_dict() if average is not None and resumed else None
    sharding.shard(model, runtime)
    optimizer = build_optimizer(model, cfg, runtime, task.lr_scales(model))
    if moved is not None:
        move_optimizer_state(model, optimizer, moved)
    if average is not None:
        average = ema.WeightAverage(model, cfg.ema_decay)
        if averaged is not None:
            average.load_state_dict(averaged)
    return replica, optimizer, average


def check(cfg: DictConfig) -> type[Task]:
    """Everything `train` checks before it builds anything (every value, the task's and the dataset's rules,
    the length, the loggers): a mistake is one line here. Returns the task's class."""
    task_class = task_class_of(cfg)
    validate(cfg, task_class)
    check_has_epochs(cfg, task_class)
    logger_classes(cfg.get("loggers", []), cfg.get("loggers_module"))  # an unknown name: one line now
    return task_class


def train_locked(cfg: DictConfig, runtime: Runtime, task_class: type[Task], overrides: list[str] | None) -> dict:
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    seed_everything(cfg.seed + runtime.rank)
    run_dir = Path(cfg.run_dir)
    say = print if runtime.is_main else lambda *_, **__: None
    start_from = resume_point(cfg, run_dir, say=say)

    task = task_class(cfg, runtime)
    resolve_length(cfg, task.train_items(), runtime.world_size, say=say)  # epochs= -> steps, before config.yaml
    model = build_model(task, runtime)
    optimizer = build_optimizer(model, cfg, runtime, task.lr_scales(model))
    peak_lrs = [group["lr"] for group in optimizer.param_groups]  # lr, or muon.lr; the schedule scales each
    base_lr = cfg.lr
    # ema_decay > 0: every process keeps the same average (DDP keeps the weights the same); rank 0 saves it
    average = ema.WeightAverage(model, cfg.ema_decay) if cfg.get("ema_decay") else None
    batches = task.train_batches()
    progress = restore(start_from, cfg, runtime, model, optimizer, batches, say, average) if start_from else None
    step, best, skipped, overflows, scaler_state = progress or (0, None, 0, 0, {})
    replica = None  # strategy=fsdp: rank 0's whole copy for the work it does alone (sharding.py)
    if sharding.sharded(cfg, runtime):  # the model, built and restored whole, is now split across the processes
        # peak_lrs stay: the sharded optimizer's groups are the whole one's, in the same order
        replica, optimizer, average = shard_run(model, optimizer, average, task, cfg, runtime, resumed=bool(start_from))

    config_yaml = OmegaConf.to_yaml(cfg)  # after build_model: a model started from timm records what was built
    settings = OmegaConf.to_container(cfg, resolve=True)  # the same, as plain data: provenance, the loggers
    artifacts = task.artifacts()
    if runtime.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(config_yaml, encoding="utf-8")
        for name, content in artifacts.items():  # each checkpoint holds them too
            (run_dir / name).write_text(json.dumps(content, ensure_ascii=False, indent=1), encoding="utf-8")
        provenance.append(run_dir, provenance.start_record(
            settings, overrides, runtime.describe(), runtime.world_size,
            resumed_from=str(start_from) if start_from else None))
    loggers = [cls(run_dir, settings)
               for cls in logger_classes(cfg.get("loggers", []))] if runtime.is_main else []
    log = MetricsLog(run_dir, enabled=runtime.is_main, loggers=loggers)

    forward_model = sharding.wrap(model, cfg, runtime)  # compiled, in DDP with several processes unless sharded
    stepper = Stepper(task, model, forward_model, optimizer, runtime, cfg)
    stepper.load_state_dict(scaler_state)
    n_params = sum(p.numel() for p in model.parameters())
    say(f"{task.name}: {n_params / 1e6:.2f}M parameters on {runtime.describe()}, run folder {run_dir}"
        + (f", resuming from {start_from}" if start_from else "") + (f"; {runtime.note}" if runtime.note else ""),
        flush=True)
    if average is not None:
        say(ema.note(average.decay, cfg.steps), flush=True)

    def save(is_best: bool = False) -> Path | None:
        """Every rank's RNG states are gathered; rank 0 writes (under FSDP every rank writes its part first)."""
        states = [rng_state()]
        if runtime.distributed:
            states = [None] * runtime.world_size
            dist.all_gather_object(states, rng_state())
        state = {"step": step, "data": batches.state_dict(), "rng": states, "best": best, "skipped": skipped,
                 "processes": runtime.world_size, "batch_size": cfg.batch_size, "scaler": stepper.state_dict(),
                 "overflows": overflows}
        if replica is not None:
            return checkpoint.save_sharded(run_dir, step, model, optimizer, state, config_yaml, runtime,
                                           keep=cfg.keep_checkpoints, is_best=is_best, artifacts=artifacts,
                                           average=average)
        if not runtime.is_main:
            return None
        return checkpoint.save(run_dir, step, model, {**state, "optimizer": optimizer.state_dict()}, config_yaml,
                               keep=cfg.keep_checkpoints, is_best=is_best, artifacts=artifacts, average=average)

    metrics: dict = {}
    started = time.perf_counter()
    target = Target.parse(cfg.stop_at) if cfg.get("stop_at") else None
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
                result = stepper(batches, stop_asked=signals.signum is not None)
                window_items += result.items
                if result.kind == "overflow":  # the loss scaler's own business (step.py)
                    overflows += 1
                    if runtime.is_main:
                        tqdm.write(f"step {step + 1}: fp16 gradients overflowed at loss scale {result.scale:g}: "
                                   f"skipped, and the scale halved")
                elif result.kind == "nonfinite":
                    skipped += 1
                    what = f"non-finite loss or gradient norm at step {step + 1} (loss {result.loss:.4g}, " \
                           f"gradient norm {result.grad_norm:.4g}" + \
                           (f", overflowing fp16 even at loss scale {result.scale:g}"
                            if runtime.precision == "fp16" and math.isfinite(result.loss) else "") + ")"
                    if cfg.nonfinite == "stop" or skipped > cfg.max_skipped_steps:
                        limit = "" if cfg.nonfinite == "stop" else f" ({skipped} skipped, max_skipped_steps reached)"
                        raise UserError(f"{what}{limit}; training stopped and no checkpoint holds it; "
                                        f"lower lr, or set nonfinite=skip to skip such steps")
                    tqdm.write(f"skipping step {step + 1}: {what}")
                elif average is not None:  # an "ok" step: the weights changed
                    average.update(model)
                step += 1
                log.step(step, result.loss, lr)
                window_loss += result.loss
                window_steps += 1
                window_time += time.perf_counter() - t0
                bar.update(1)
                if step % 10 == 0 or step == cfg.steps:
                    bar.set_postfix(loss=f"{result.loss:.4f}",
                                    **{f"{task.unit}/s": f"{window_items / window_time:,.0f}"})

                if step % cfg.eval_every == 0 or step == cfg.steps:
                    model.eval()
                    with ema.swapped_in(average, model):  # the averaged weights, with ema_decay > 0
                        judged = replica.refresh(model) if replica else model  # FSDP: rank 0's whole copy
                        metrics = {"train_loss": window_loss / window_steps}
                        if replica is None:  # each process evaluates (DDP: the same model everywhere)
                            metrics.update(task.evaluate(model))
                        else:  # rank 0 evaluates its copy, and tells the others
                            metrics.update(sharding.broadcast(task.evaluate(judged) if runtime.is_main else None))
                        metrics[f"{task.unit}_per_s"] = window_items * runtime.world_size / max(window_time, 1e-9)
                        metrics["lr"] = lr
                        metrics["time_s"] = time.perf_counter() - started  # since training started (this process)
                        watched = metrics.get(task.watch[0])
                        is_best = watched is not None and (best is None or (watched < best if task.watch[1] == "min"
                                                                             else watched > best))
                        if is_best:
                            best = watched
                        log.evaluation(step, metrics)
                        if runtime.is_main and cfg.get("plots", True):
                            from multitx.engine import plots  # matplotlib is imported only by runs that draw

                            # RUN_DIR/plots/*.png and TensorBoard images; a failure is one warning, never the run's end
                            plots.at_evaluation(run_dir, task, judged, metrics, step, log,
                                                debug=bool(cfg.get("debug", False)), say=tqdm.write)
                        if runtime.is_main:
                            shown = task.show(judged)
                            tqdm.write(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()
                                                                    if isinstance(v, float)))
                            if shown:
                                tqdm.write(shown)
                    save(is_best)
                    last_saved = step
                    window_loss, window_steps, window_items, window_time = 0.0, 0, 0, 0.0
                    model.train()
                    if target and reached(target, metrics, task):
                        say(f"stop_at {cfg.stop_at} reached at step {step}, {metrics['time_s']:.1f} s after "
                            f"training started", flush=True)
                        break

                if result.stop:
                    saved = save() if last_saved != step else checkpoint.latest(run_dir)
                    code = 130 if signals.signum == signal.SIGINT else 143
                    say(f"stopped at step {step} by signal {signals.signum}; saved {saved}; "
                        f"continue with resume=auto run_dir={run_dir}", flush=True)
                    raise Interrupted(code, saved)
            model.eval()
            with ema.swapped_in(average, model):  # the test split, once, at the end, on rank 0
                judged = replica.refresh(model) if replica else model
                tested = task.test(judged) if runtime.is_main else None
            if tested:
                log.evaluation(step, {"split": "test", **tested})
                say(f"test split at step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in tested.items()),
                    flush=True)
        except RuntimeError as err:  # gloo and NCCL raise RuntimeErrors (DistError) when a peer is gone
            if not (runtime.distributed and is_collective_failure(err)):
                raise
            last = checkpoint.latest(run_dir)
            kept = f"the last complete checkpoint {last} is intact: continue with resume=auto" if last else \
                "no checkpoint was written yet: start the run again"
            raise UserError(f"process {runtime.rank} of {runtime.world_size} lost the others at step {step + 1} "
                            f"({collective_reason(err)}): another process of this run died or hangs; {kept}") from None
        finally:
            bar.close()
            log.close()
            if runtime.is_main:  # how it ended: completed, or the exception on its way out
                provenance.append(run_dir, provenance.end_record(
                    outcome_of(sys.exc_info()[1]), step, time.perf_counter() - started))
    return metrics


def outcome_of(error: BaseException | None) -> str:
    if error is None:
        return "completed"
    if isinstance(error, (Interrupted, KeyboardInterrupt)):
        return "interrupted"
    return f"failed: {type(error).__name__}: {error}"[:500]
