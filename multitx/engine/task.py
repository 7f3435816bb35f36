"""What the one training loop, and the commands that read its runs, need from a task.

A task ties a model, its data, its loss and its metrics together. The engine
(multitx/engine/trainer.py) only calls the methods below, so adding a task
means writing a subclass and a config file under multitx/config/task/; the
trunk and the loop stay as they are. The commands that read a run (sample,
predict, inspect, export, ...) ask its task too: `tools` names those that serve
it, and `inspect` and `exportable` do the task's part of the last two, so no
module outside multitx/tasks/ needs to know which task a run is.

One path from a run's settings to its model, for training and for loading:

    artifacts()                       what the data decided and inference needs ({"vocab.json": {...}}),
                                      saved in every checkpoint folder
    build(cfg.model, artifacts)       the model from its settings and those artifacts, plus what a user
                                      of it needs ({"vocab": ...} or {"classes": [...]}): the trainer
                                      (through build_model) and multitx.load both call it

A task's own keys are the fields of its `settings` dataclass (its `model` section among them);
`@register_task("NAME")` puts their defaults in the config store, where its recipes
(config/task/*.yaml) start from them: `defaults: [/settings/NAME, ...]`.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from multitx.config.compose import store_node
from multitx.config.rules import Text
from multitx.config.settings import defaults_of, for_checking, rules_of
from multitx.engine.runtime import Runtime
from multitx.errors import UserError
from multitx.nn.trace import Trace
from multitx.registry import Registry

RIGHT, WRONG, NEUTRAL = "#1a7f37", "#c62828", "#222222"  # colours of Examples' titles: legible on white


class Examples(NamedTuple):
    """What a task shows of itself in RUN_DIR/plots/samples.png: images, each with a title above it."""
    images: np.ndarray  # (N, H, W, C) uint8, C = 1 or 3
    titles: list[str]  # one per image, e.g. "cat / dog" (predicted / true), or the caption written for it
    colours: list[str]  # one matplotlib colour per title, e.g. green when right, red when wrong
    heading: str = ""  # what the titles are, e.g. "predicted / true"
    notes: list[str] | None = None  # grey text beneath each image, e.g. its reference caption


@dataclass
class Inspection:
    """A model run once on one input under multitx.trace (python -m multitx.inspect draws it)."""
    view: str  # how to draw it: "tokens" (text), "patches" (an image classifier), "caption" (image -> words)
    checkpoint: Path
    source: str  # where the input came from
    tokens: list[str]  # a label for each query token: characters, "CLS" and patches, or the words written
    keys: list[str]  # a label for each key token of self-attention
    output: str  # what the model made of it: text, classes with probabilities, a caption
    trace: Trace
    model: nn.Module
    image: np.ndarray | None = None  # (H, W, C) uint8: the picture the model saw
    grid: tuple[int, int] | None = None  # patch rows and columns
    prefix: int = 0  # tokens before the patch grid (CLS)
    shown_words: list[str] = field(default_factory=list)  # captioner: the words whose attention to the image is drawn
    # A captioner with prefix fusion: the grid (h, w) of the image tokens its decoder reads before the words
    # (the patch grid after the pixel shuffle; no CLS); None: the decoder cross-attends to the encoder's tokens.
    fused_grid: tuple[int, int] | None = None
    prompt: str = ""  # text models: the text read, before anything the model wrote
    task: str = ""  # the run's task.name, filled in by multitx.inspect


class Exportable(NamedTuple):
    """A run's model as python -m multitx.export captures it, and what a user of the file needs."""
    module: nn.Module  # one tensor in, logits out
    input_name: str  # "images", "ids"
    example: torch.Tensor  # an input to capture with
    dynamic: dict  # torch.export dynamic_shapes: which input dimensions may vary
    about: dict  # written beside the file as FILE.json: input, output, pre- and postprocessing
    checks: list[torch.Tensor]  # inputs of other sizes the exported file is run on against PyTorch
    holds: str  # what FILE.json holds beyond the shapes, said after writing it


class Task:
    name = "task"
    unit = "items"  # what throughput counts: tokens, images...
    watch = ("val_loss", "min")  # the metric that picks the best checkpoint, and its direction
    reads: str | None = None  # the kind of dataset it trains on (text, images, captions; data/registry.py)
    no_epochs_because = "its train_items() is None"  # said when epochs= is given to a task without epochs
    settings: type | None = None  # the dataclass of this task's own keys (model.* among them)
    rules: dict = {}  # this task's keys -> their Rule, checked before anything is built: from `settings`
    artifact_files: tuple[str, ...] = ()  # the names artifacts() returns, e.g. ("vocab.json",)
    called, recipe = "model", "task=NAME"  # what users call its models, and how its runs are made: in messages
    tools: tuple[str, ...] = ()  # the commands besides train that read its runs: "sample" (python -m multitx.sample)

    def __init__(self, cfg: DictConfig, runtime: Runtime):
        self.cfg, self.runtime = cfg, runtime

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "settings" in cls.__dict__ and cls.settings is not None:
            cls.rules = rules_of(cls.settings)

    @classmethod
    def check(cls, cfg: dict) -> None:
        """Settings of this task that are each fine alone but not together (cfg: the whole config, plain).
        By default each section of `settings` whose class has a check(prefix) method checks itself."""
        if cls.settings is not None:
            check_sections(cls.settings, cfg)

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

    def lr_scales(self, model: nn.Module) -> dict[int, float] | None:
        """Each parameter's share of the learning rate, id(parameter) -> scale (a captioner's parts: freeze=,
        lr_scale.); None: the optimizer's default, lr x pretrained_lr_scale for the parameters a model names in
        pretrained_parameters() (engine/optimizers.py)."""
        return None

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

    def scored_in(self, batch) -> int | None:
        """How many targets loss() averages over in this batch, when that number varies from batch to batch
        (a captioner's real tokens, padding left out); None (the default): the loss is a mean over equal shares
        (every window's every character, every image), the same in each process's slice of a global batch.

        Why it matters: under DDP each process takes the mean of its own slice and DDP averages the gradients,
        weighting the processes equally. When one slice scores 40 tokens and another 60, that is not the mean
        over all 100 tokens one process would take. Given the counts, the Stepper weights each process's loss
        by its share of the global batch's targets, and many processes train as one does. (A process's loss on
        a slice that scores nothing must still be finite: weighted by 0, a NaN stays NaN.)"""
        return None

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

    @classmethod
    def inspect(cls, run, *, prompt: str | None, image: str | None, new_tokens: int, device) -> Inspection:
        """For "inspect" in `tools`: the model of `run` (a multitx.load result) run once under multitx.trace on
        `prompt` or `image`, or on a sample of the run's own validation data when neither is given."""
        raise NotImplementedError

    @classmethod
    def save_hf(cls, run, folder: Path) -> str:
        """For export format=hf: the model of `run` as a Hugging Face folder that transformers loads; returns
        what the folder holds."""
        raise UserError(f"format=hf writes a language model as a Hugging Face GPT-2 folder; a {run.task} run is not "
                        f"one: use format=onnx or format=pt2")

    @classmethod
    def exportable(cls, run) -> Exportable:
        """For "export" in `tools`: the model of `run` (a multitx.load result, on the CPU in fp32) as a module
        of one input, with an example input and the JSON a user of the exported file needs."""
        raise NotImplementedError


def check_sections(settings: type, cfg: dict) -> None:
    """Build each section of `settings` whose class has a check(prefix) (a model's config) and check it."""
    for f in fields(settings):
        schema = f.metadata.get("section")
        if schema is not None and hasattr(schema, "check") and isinstance(cfg.get(f.name), Mapping):
            for_checking(schema, cfg[f.name]).check(f.name)


def store_task(name: str, cls: type) -> None:
    """The config store learns a task's keys and defaults: its recipes' defaults lists name /settings/NAME."""
    if cls.settings is not None:
        store_node("settings", name, defaults_of(cls.settings), package="_global_")


TASKS = Registry("task", "task", Task, "multitx.Task", on_register=store_task)
register_task = TASKS.register  # @register_task("charlm") on a Task subclass


def task_class_of(cfg: DictConfig) -> type[Task]:
    """The Task class cfg.task._target_ names (typed by the user: training imports it)."""
    Text().check("task._target_", cfg.task.get("_target_"))
    return TASKS.resolve(target=cfg.task._target_)


def task_for_tool(cfg: DictConfig, tool: str, where, verb: str = "reads", cls: type[Task] | None = None) -> type[Task]:
    """The Task class of a run's config (`cls`, when the caller has resolved it already) if `tool` (e.g.
    "multitx.sample") is one of its `tools`; otherwise one line naming the kinds of run the tool does read.
    Call it once the config's code is trusted."""
    cls = cls or task_class_of(cfg)
    short = tool.removeprefix("python -m ").removeprefix("multitx.")
    if short not in cls.tools:
        serving = list(dict.fromkeys(f"{c.called} ({c.recipe})" for c in TASKS.entries.values()
                                     if short in c.tools))
        listed = " and ".join([", ".join(serving[:-1]), serving[-1]] if len(serving) > 1 else serving) or "no"
        raise UserError(f"{where} is a {cfg.task.get('name', '?')} run; {tool} {verb} {listed} runs only")
    return cls
