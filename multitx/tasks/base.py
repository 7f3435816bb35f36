"""What the one training loop needs from a task.

A task ties a model, its data, its loss and its metrics together. The engine
(multitx/engine/trainer.py) only calls the methods below, so adding a task
means writing a subclass and a config file under multitx/config/task/; the
trunk and the loop stay as they are.
"""

from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from multitx.engine.runtime import Runtime


class Task:
    name = "task"
    unit = "items"  # what throughput counts: tokens, images...
    watch = ("val_loss", "min")  # the metric that picks the best checkpoint, and its direction

    def __init__(self, cfg: DictConfig, runtime: Runtime):
        self.cfg, self.runtime = cfg, runtime

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def train_batches(self):
        """An endless iterator of training batches (on the CPU) with
        state_dict()/load_state_dict() giving its position, for exact resume."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        """Forward one batch (already on the device) and return the scalar loss."""
        raise NotImplementedError

    def items_in(self, batch) -> int:
        """How many `unit`s a batch holds (for throughput)."""
        return len(batch[0])

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Metrics on the validation/test split, e.g. {"val_loss": ..., "val_acc": ...}."""
        raise NotImplementedError

    def show(self, model: nn.Module) -> str | None:
        """Something to print at each evaluation (a text sample, a caption); optional."""
        return None

    def save_artifacts(self, run_dir: Path) -> None:
        """Write what inference needs besides the weights (a vocabulary, class names)."""
