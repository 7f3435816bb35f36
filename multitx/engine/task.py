"""What the one training loop needs from a task.

A task ties a model, its data, its loss and its metrics together. The engine
(multitx/engine/trainer.py) only calls the methods below, so adding a task
means writing a subclass and a config file under multitx/config/task/; the
trunk and the loop stay as they are.
"""

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from multitx.engine.runtime import Runtime

RIGHT, WRONG, NEUTRAL = "#1a7f37", "#c62828", "#222222"  # colours of Examples' titles: legible on white


class Examples(NamedTuple):
    """What a task shows of itself in RUN_DIR/plots/samples.png: images, each with a title above it."""
    images: np.ndarray  # (N, H, W, C) uint8, C = 1 or 3
    titles: list[str]  # one per image, e.g. "cat / dog" (predicted / true), or the caption written for it
    colours: list[str]  # one matplotlib colour per title, e.g. green when right, red when wrong
    heading: str = ""  # what the titles are, e.g. "predicted / true"
    notes: list[str] | None = None  # grey text beneath each image, e.g. its reference caption


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

    def examples(self, model: nn.Module) -> Examples | None:
        """A few validation images to draw at each evaluation (RUN_DIR/plots/samples.png and
        TensorBoard), with what the model made of them; optional: None draws only the loss curves."""
        return None

    def save_artifacts(self, run_dir: Path) -> None:
        """Write what inference needs besides the weights (a vocabulary, class names)."""
