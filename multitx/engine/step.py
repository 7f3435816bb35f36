"""One optimizer step of the training loop, with precision=fp16's loss scaler.

    for each micro-batch: forward (task.loss) under autocast, backward of the scaled loss
                          (under DDP gradients are averaged across processes on the last one only);
                          under DDP, for a task whose loss is a mean over a number of targets that varies
                          (task.scored_in: a captioner's tokens), first one small all-reduce of [loss x count,
                          count]: each process's loss is weighted by its share of the global batch's targets,
                          so that DDP's average is the gradient of the mean over all of them, and the step
                          reports that mean, as one process would (weighed_by_share)
    under DDP or FSDP, the loss reported is the mean over the processes (one all-reduce of a number), as one
                          process with the global batch would report it
    unscale the gradients (only fp16 scales them), clip them
    one small all-reduce: every process agrees on "loss finite?", "gradients finite?", "stop asked?"
    all finite: the optimizer steps through the scaler (which finds the same gradients finite)
    otherwise:  no update, and the step is one of two kinds:
        "overflow"   fp16 only: the loss is finite but the scaled gradients overflowed at a loss scale of
                     at least 1. That is the scaler's business, as in torch.amp.GradScaler's own loop: the
                     step is skipped and the scale halved; nonfinite= does not count it.
        "nonfinite"  a NaN/inf loss, or gradients that are not finite even unscaled (fp32, bf16, or fp16
                     at a loss scale below 1): the trainer's nonfinite= decides (stop | skip).
    scaler.update() ends every step, so that the scale (and its growth) follows what the scaler saw.

With precision other than fp16 the scaler is disabled, and every call on it is a no-op.
"""

from contextlib import nullcontext
from typing import NamedTuple

import torch
import torch.distributed as dist

from multitx.engine import sharding


class StepResult(NamedTuple):
    loss: float  # the step's mean loss over its micro-batches (unscaled)
    grad_norm: float  # before clipping
    kind: str  # "ok" | "overflow" | "nonfinite" (see the module doc)
    stop: bool  # a process was asked to stop (SIGTERM / Ctrl-C)
    items: int  # the task's units this process trained on
    scale: float  # the loss scale the step used (1 without fp16)


class Stepper:
    def __init__(self, task, model: torch.nn.Module, forward_model, optimizer, runtime, cfg):
        self.task, self.model, self.forward_model, self.optimizer = task, model, forward_model, optimizer
        self.runtime, self.cfg = runtime, cfg
        self.scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.precision == "fp16")

    def state_dict(self) -> dict:
        """The loss scaler's state, plain numbers ({} without fp16), for the checkpoint's state.pt."""
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict | None) -> None:
        if state and self.scaler.is_enabled():  # a run that changes precision on resume starts a fresh scale
            self.scaler.load_state_dict(state)

    def __call__(self, batches, stop_asked: bool) -> StepResult:
        cfg, runtime, scaler = self.cfg, self.runtime, self.scaler
        loss_sum = torch.zeros((), device=runtime.device)  # the step's loss over the whole global batch
        own_sum = torch.zeros((), device=runtime.device)  # this process's share of it, where not weighed yet
        items = 0
        for micro in range(cfg.grad_accum):
            batch = runtime.to_device(next(batches))
            no_sync = runtime.distributed and micro < cfg.grad_accum - 1
            with sharding.no_sync(self.forward_model, self.model) if no_sync else nullcontext(), runtime.autocast():
                loss = self.task.loss(self.forward_model, batch)
            scored = self.task.scored_in(batch) if runtime.distributed else None
            if scored is not None:  # a mean over a number of targets that differs from process to process
                loss, global_mean = weighed_by_share(loss, scored, runtime.world_size)
            loss = loss / cfg.grad_accum  # as one process with grad_accum: each micro-batch's mean weighs the same
            scaler.scale(loss).backward()
            if scored is None:
                own_sum += loss.detach()
            else:
                loss_sum += global_mean / cfg.grad_accum
            items += self.task.items_in(batch)
        if runtime.distributed:  # the mean of the processes' losses: what one process with the global batch reports
            dist.all_reduce(own_sum)
            own_sum /= runtime.world_size
        loss_sum += own_sum
        scaler.unscale_(self.optimizer)  # clipping sees the true gradients
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip or float("inf"))
        grad_norm = sharding.local(grad_norm)  # under FSDP the norm of all the shards' gradients, a DTensor
        flags = torch.stack([torch.isfinite(loss_sum), torch.isfinite(grad_norm),
                             torch.tensor(stop_asked, device=runtime.device)]).float()
        if runtime.distributed:  # finite: the minimum over processes; stop: the maximum
            flags[:2] = -flags[:2]
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            flags[:2] = -flags[:2]
        loss_ok, grads_ok, stop = bool(flags[0]), bool(flags[1]), bool(flags[2])
        scale = scaler.get_scale() if scaler.is_enabled() else 1.0
        if loss_ok and grads_ok:
            kind = "ok"
            scaler.step(self.optimizer)
        else:
            kind = "overflow" if scaler.is_enabled() and loss_ok and scale >= 1 else "nonfinite"
        self.optimizer.zero_grad(set_to_none=True)
        scaler.update()
        return StepResult(loss_sum.item(), grad_norm.item(), kind, stop, items, scale)


def weighed_by_share(loss: torch.Tensor, scored: int, world_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This process's loss, a mean over its `scored` targets, -> (the loss to back-propagate, the global batch's
    mean loss per target: the number one process would report), with one all_reduce of two numbers.

    DDP averages the processes' gradients: (1/W) sum_r grad(loss_r). Each loss_r weighted by
    W x scored_r / total makes that sum_r (scored_r / total) grad(loss_r), the gradient of the mean over all the
    global batch's targets, as one process takes it. Float64: the counts exact (a distributed run's device is
    the CPU or CUDA, which both have it)."""
    sums = torch.stack([loss.detach().double() * scored, loss.new_tensor(scored, dtype=torch.float64)])
    dist.all_reduce(sums)  # (2,): [sum of loss x scored, sum of scored] over the processes
    total_loss, total = sums.unbind()
    anything = total > 0  # no process scored a target: each keeps its own loss, unweighted (no 0 / 0)
    share = torch.where(anything, world_size * scored / total.clamp(min=1), 1.0)
    mean = torch.where(anything, total_loss / total.clamp(min=1), loss.detach().double())
    return loss * share.to(loss.dtype), mean.to(loss.dtype)
