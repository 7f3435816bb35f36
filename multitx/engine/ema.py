"""Weight averaging (ema_decay=): an exponential moving average of the weights, kept beside the trained ones.

    average = WeightAverage(model, decay=0.999)   # a copy of the parameters that train, as they are now
    average.update(model)                         # after each optimizer step that changed the weights:
                                                  #   avg = decay * avg + (1 - decay) * w
    with average.swapped_in(model):               # inside the block the model holds the averaged weights,
        metrics = task.evaluate(model)            # after it exactly (bit for bit) its trained ones again
    average.state_dict()                          # {parameter name: averaged tensor}; load_state_dict(it)

Why: the trained weights jitter from step to step around where the loss is low (the noise of each
batch's gradient times the learning rate); their average over the last ~1 / (1 - decay) steps sits
nearer the middle, and usually evaluates a little better, for no extra training. The trainer
evaluates (and picks the best checkpoint by) the average, and saves it as ema.safetensors beside
model.safetensors, which stays the trained weights that training goes on from.

No warm-up: the average starts from the weights at step 0 and follows the formula above from the
first step, so it is exactly what the issue's formula says, and resuming needs nothing but the
average itself. The price: after n updates the starting (random) weights still weigh decay^n in it,
so decay must suit the run's length (note() says when it does not). timm's ModelEmaV3 and
torch.optim.swa_utils.get_ema_multi_avg_fn with a warm-up use a smaller decay early instead.

Which tensors: the floating-point parameters that train (requires_grad), the ones the optimizer
changes. Frozen parameters and buffers (a norm's running statistics) are the model's own, unchanged.
Every operation is elementwise and in place on p.detach(), so it works as well on parameters that are
DTensors (a sharded model): each process averages its own shard.
"""

from contextlib import contextmanager, nullcontext

import torch
from torch.distributed.tensor import DTensor, distribute_tensor


class WeightAverage:
    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0 <= decay < 1:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = decay
        aliases: dict[int, list[str]] = {}  # a tied parameter (the LM head's and the embedding's) has two names
        for name, p in model.named_parameters(remove_duplicate=False):
            aliases.setdefault(id(p), []).append(name)
        params = self.params(model)
        self.names = [tuple(aliases[id(p)]) for _, p in params]  # each parameter's names, the first its own
        self.averages = [p.detach().clone() for _, p in params]  # step 0: the average is the weights

    @staticmethod
    def params(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
        """The parameters averaged, in a fixed order: floating-point ones that train."""
        return [(name, p) for name, p in model.named_parameters() if p.requires_grad and p.is_floating_point()]

    def weights(self, model: torch.nn.Module) -> list[torch.Tensor]:
        params = self.params(model)
        if [name for name, _ in params] != [names[0] for names in self.names]:
            raise ValueError("the model's parameters are not the ones this average was made for")
        return [p.detach() for _, p in params]

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """avg = decay * avg + (1 - decay) * w for each parameter: lerp moves avg a (1 - decay) of the way to w."""
        torch._foreach_lerp_(self.averages, self.weights(model), 1 - self.decay)

    @contextmanager
    def swapped_in(self, model: torch.nn.Module):
        """The averaged weights in the model inside the block; the trained ones back after it, bit for bit.
        Each parameter trades places with its average (one tensor's worth of memory at a time, not a model's):
        inside the block this object holds the trained weights, so update() belongs outside it."""
        weights = self.weights(model)
        self.trade(weights)
        try:
            yield model
        finally:
            self.trade(weights)

    @torch.no_grad()
    def trade(self, weights: list[torch.Tensor]) -> None:
        for w, avg in zip(weights, self.averages, strict=True):
            held = w.clone()
            w.copy_(avg)
            avg.copy_(held)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """{parameter name: its average}, the names model.named_parameters() gives."""
        return {names[0]: avg for names, avg in zip(self.names, self.averages, strict=True)}

    @torch.no_grad()
    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        """Take the averages from `tensors`: state_dict()'s, or a whole model's (ema.safetensors), where a
        tied parameter may be under any of its names. ValueError names a parameter missing or of another shape."""
        for names, avg in zip(self.names, self.averages, strict=True):
            found = next((tensors[name] for name in names if name in tensors), None)
            if found is None:
                raise ValueError(f"no tensor for {names[0]}")
            if tuple(found.shape) != tuple(avg.shape):
                raise ValueError(f"{names[0]} has shape {tuple(found.shape)}, not {tuple(avg.shape)}")
            if isinstance(avg, DTensor) and not isinstance(found, DTensor):  # a whole tensor into a sharded one
                found = distribute_tensor(found.to(avg.device), avg.device_mesh, avg.placements, src_data_rank=None)
            avg.copy_(found)


def swapped_in(average: WeightAverage | None, model: torch.nn.Module):
    """average.swapped_in(model), or nothing to do when averaging is off (average None)."""
    return nullcontext(model) if average is None else average.swapped_in(model)


def note(decay: float, steps: int) -> str:
    """The line the trainer prints at the start of a run with ema_decay > 0."""
    line = (f"ema_decay={decay:g}: evaluations (val metrics, the best checkpoint, plots, samples, the test split) "
            f"use the averaged weights; train_loss is the trained weights'")
    left = decay ** steps  # the starting weights' share of the average after `steps` updates
    if left > 0.01:
        line += (f"; after steps={steps} the starting weights still make up {left:.0%} of the average: an "
                 f"ema_decay of at most {0.01 ** (1 / steps):.4g} brings that under 1%")
    return line
