"""Setting a run up for the training loop (multitx/engine/trainer.py): the task class, the run
folder's lock, the model, and where a resumed run goes on from.

    task_class_of(cfg)          the Task class cfg.task._target_ names
    lock_run(run_dir, runtime)  the run folder for this trainer alone (rank 0 holds the lock)
    resume_point(cfg, run_dir)  the checkpoint folder to go on from, or None for a fresh run
    restore(...)                that checkpoint's weights, optimizer, data position and RNGs (and loss scale,
                                and the averaged weights with ema_decay > 0)
"""

from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist
from omegaconf import DictConfig

from multitx.engine import checkpoint
from multitx.engine.run_lock import RunLock
from multitx.engine.runtime import Runtime, seed_everything, set_rng_state
from multitx.engine.sharded_checkpoint import read_training
from multitx.engine.task import Task
from multitx.errors import UserError


def lock_run(run_dir: Path, runtime: Runtime) -> RunLock:
    """Rank 0 takes the run folder's lock; every process stops with rank 0's refusal, or none does."""
    lock = RunLock(run_dir)
    refusal = None
    if runtime.is_main:
        try:
            lock.acquire()
        except UserError as err:
            refusal = str(err)
    if runtime.distributed:
        shared = [refusal]
        dist.broadcast_object_list(shared, src=0)
        refusal = shared[0]
    if refusal:
        raise UserError(refusal)
    if lock.took_over:
        print(f"{lock.path} named {lock.took_over}, which is gone (killed?); this run takes the folder over",
              flush=True)
    return lock


def build_model(task: Task, runtime: Runtime) -> torch.nn.Module:
    try:
        return task.build_model().to(runtime.device)
    except ValueError as err:  # the model's own checks: head count, position kind, ...
        raise UserError(f"cannot build the model: {err}; check the model.* settings") from None
    except (MemoryError, torch.OutOfMemoryError) as err:
        raise UserError(f"cannot build the model: not enough memory ({type(err).__name__}); choose smaller "
                        f"model.* settings") from None


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


class Progress(NamedTuple):
    step: int
    best: float | None
    skipped: int  # non-finite steps skipped (nonfinite=skip)
    overflows: int  # fp16 steps the loss scaler skipped
    scaler: dict  # the loss scaler's state ({} but for fp16)


def restore(folder: Path, cfg: DictConfig, runtime: Runtime, model, optimizer, batches, say,
            average=None) -> Progress:
    """Load checkpoint `folder` into the model, the optimizer, the data and the RNGs (and `average`, the
    run's WeightAverage with ema_decay > 0); the loss scaler's state comes back in the Progress. The model and
    the optimizer are plain (unsharded) here, whichever strategy wrote the checkpoint or reads it now: under
    strategy=fsdp the trainer shards them afterwards."""
    checkpoint.check_resumable(folder, cfg)
    checkpoint.load_weights(model, folder)
    if average is not None:
        restore_average(folder, model, average, say)
    state = checkpoint.load_state(folder)
    try:
        if "optimizer_groups" in state:  # a sharded checkpoint (strategy=fsdp): every process reads every row
            read_training(folder, model, optimizer, state["optimizer_groups"])
        else:
            optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError) as err:  # groups of other sizes: what trains, or at which lr, is not the same
        raise UserError(f"{folder}'s optimizer state does not fit this run's parameters ({str(err)[:120]}); resume "
                        f"with the settings in its config.yaml, or start a new run_dir") from None
    check_same_global_batch(state, cfg, runtime, folder)
    batches.load_state_dict(data_position(state, cfg, say=say))
    step = state["step"]
    if runtime.rank < len(state["rng"]):
        set_rng_state(state["rng"][runtime.rank])
    else:  # more processes than the checkpoint had: a fresh stream for this one
        seed_everything(cfg.seed + runtime.rank + 1_000_003 * step)
    return Progress(step, state["best"], state.get("skipped", 0), state.get("overflows", 0), state.get("scaler", {}))


def restore_average(folder: Path, model, average, say) -> None:
    """The averaged weights go on from the checkpoint's ema.safetensors; a checkpoint written before
    ema_decay existed has none, and the average starts from the weights it holds."""
    averaged = checkpoint.load_average(folder)
    if averaged is None:
        say(f"{folder} holds no averaged weights (it was written before ema_decay existed): the average starts "
            f"from its weights", flush=True)
        averaged = dict(model.named_parameters())
    try:
        average.load_state_dict(averaged)
    except ValueError as err:
        raise UserError(f"{folder / checkpoint.EMA} does not fit this run's model ({err}); resume with the "
                        f"settings in its config.yaml, or start a new run_dir") from None
