"""What the one training loop needs from a task.

A task ties a model, its data, its loss and its metrics together. The engine
(multitx/engine/trainer.py) only calls the methods below, so adding a task
means writing a subclass and a config file under multitx/config/task/; the
trunk and the loop stay as they are.

One path from a run's settings to its model, for training and for loading:

    artifacts()                       what the data decided and inference needs ({"vocab.json": {...}}),
                                      saved in every checkpoint folder
    build(cfg.model, artifacts)       the model from its settings and those artifacts, plus what a user
                                      of it needs ({"vocab": ...} or {"classes": [...]}): the trainer
                                      (through build_model) and multitx.load both call it
"""

from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from multitx.engine.runtime import Runtime
from multitx.errors import UserError

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

    rules: dict = {}  # this task's keys -> their multitx.config.rules Rule, checked before anything is built
    artifact_files: tuple[str, ...] = ()  # the names artifacts() returns, e.g. ("vocab.json",)

    def artifacts(self) -> dict[str, dict]:
        """What inference needs besides the weights, as JSON objects by file name: a vocabulary, class names."""
        return {}

    @classmethod
    def build(cls, settings: Mapping, artifacts: dict[str, dict]) -> tuple[nn.Module, dict]:
        """The model a run's `model:` settings describe, sized by its artifacts, and what a user of the
        model needs besides it ({"vocab": CharVocab} or {"classes": [...]})."""
        raise NotImplementedError

    def build_model(self) -> nn.Module:
        """The model to train: by default the one `build` makes from this run's settings."""
        return self.build(self.cfg.model, self.artifacts())[0]

    def train_batches(self):
        """An endless iterator of training batches (on the CPU) with
        state_dict()/load_state_dict() giving its position, for exact resume."""
        raise NotImplementedError

    def train_items(self) -> int | None:
        """How many examples one epoch of train_batches() goes through (images, for a ViT), so that
        training length can be given in epochs; None for a task without epochs (random text windows)."""
        return None

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

    def test(self, model: nn.Module) -> dict[str, float]:
        """Metrics on the test split, e.g. {"test_acc": ...}, measured once at the end of training and
        recorded apart from the evaluations; {} for a task without a test split."""
        return {}

    def report(self, model: nn.Module, split: str, out_dir: Path) -> dict:
        """Every figure of a split ("val" or "test") for python -m multitx.evaluate, with any pictures
        written into out_dir (their paths in the result)."""
        raise UserError(f"task {self.cfg.task.name} has no evaluation report")

    def show(self, model: nn.Module) -> str | None:
        """Something to print at each evaluation (a text sample, a caption); optional."""
        return None

    def examples(self, model: nn.Module) -> Examples | None:
        """A few validation images to draw at each evaluation (RUN_DIR/plots/samples.png and
        TensorBoard), with what the model made of them; optional: None draws only the loss curves."""
        return None
