"""The keys every task shares: how long, how fast, where, on what device, and what to keep.

A task's recipe (config/task/NAME.yaml) changes some of these defaults; the command line
(key=value) has the last word. `python -m multitx.train --help` prints them all.
"""

from dataclasses import dataclass

from multitx.config.hardware import DEVICE_HELP, PRECISIONS, Device
from multitx.config.rules import (
    NON_NEGATIVE,
    POSITIVE,
    RATE,
    Choice,
    Flag,
    Folder,
    Names,
    Number,
    Numbers,
    Resume,
    Target,
    Whole,
)
from multitx.config.settings import section, setting
from multitx.errors import UserError


@dataclass
class MuonConfig:
    """optimizer=muon: Muon on the transformer blocks' matrices (multitx/engine/muon.py), AdamW on the rest."""

    lr: float = setting(0.02, POSITIVE, "Muon's peak learning rate; follows the same warm-up and cosine as lr")
    momentum: float = setting(0.95, RATE, "Nesterov momentum")
    weight_decay: float = setting(0.0, NON_NEGATIVE, "Muon's weight decay")
    ns_steps: int = setting(5, Whole(min=1), "Newton-Schulz iterations that orthogonalise each update")


@dataclass
class TrainingConfig:
    # How long. The length may be given in epochs instead (tasks with a training set: vit_*, caption; not charlm,
    # whose batches are random windows of a text): steps = epochs x (train_items // (batch_size x processes))
    # // grad_accum, printed at the start and recorded in RUN_DIR/config.yaml (engine/length.py).
    steps: int | None = setting(1000, Whole(min=1, null=True), "optimizer steps (null: the length is epochs)")
    epochs: int | None = setting(None, Whole(min=1, null=True),
                                 "the length in epochs instead of steps (null: the length is steps)")
    batch_size: int = setting(64, Whole(min=1), "examples per process and per micro-step")
    grad_accum: int = setting(1, Whole(min=1), "micro-steps per optimizer step")
    # How fast.
    lr: float = setting(1e-3, POSITIVE, "peak learning rate")
    min_lr: float = setting(1e-4, NON_NEGATIVE, "the cosine decay ends here")
    warmup_steps: int | None = setting(100, Whole(min=0, null=True), "linear warm-up from 0, in steps")
    warmup_epochs: int | None = setting(None, Whole(min=0, null=True), "or the warm-up in epochs")
    weight_decay: float = setting(0.1, NON_NEGATIVE, "on matrices only (dim >= 2); not on biases and norms")
    betas: list = setting([0.9, 0.99], Numbers(count=2, each=RATE), "AdamW's two moment decays")
    optimizer: str = setting("adamw", Choice(options=("adamw", "muon")),
                             "adamw | muon: Muon on the blocks' matrices, AdamW on the rest")
    muon: MuonConfig = section(MuonConfig, "used by optimizer=muon")
    grad_clip: float = setting(1.0, NON_NEGATIVE, "max global gradient norm; 0 turns clipping off")
    # Where and on what.
    device: str = setting("auto", Device(), DEVICE_HELP)
    precision: str = setting("auto", Choice(options=PRECISIONS),
                             "auto | fp32 | bf16 | fp16 (loss-scaled); auto: bf16 on GPUs with native bf16, "
                             "fp32 elsewhere")
    compile: bool = setting(False, Flag(), "torch.compile the model")
    deterministic: bool = setting(False, Flag(), "deterministic algorithms (exact resume, slower)")
    dist_timeout: float = setting(300, Number(min=0, open="min"),
                                  "under torchrun: seconds a process waits for the others before giving up")
    strategy: str = setting("ddp", Choice(options=("ddp", "fsdp")),
                            "under torchrun: ddp (a whole copy of the model in each process) | fsdp (FSDP2: "
                            "parameters, gradients and optimizer state sharded across them)", before="ddp")
    seed: int = setting(1337, Whole(min=0), "seeds the weights, the batches and the augmentation")
    # What to keep.
    run_dir: str = setting("runs/${task.name}/${now:%Y-%m-%d_%H-%M-%S}", Folder(must_exist=False),
                           "the run's folder: config, metrics, checkpoints, plots")
    resume: str | None = setting(None, Resume(null=True),
                                 "null | auto (newest checkpoint in run_dir) | PATH to a checkpoint folder")
    eval_every: int | None = setting(250, Whole(min=1, null=True), "steps between evaluations (and checkpoints)")
    eval_every_epochs: int | None = setting(None, Whole(min=1, null=True), "or the evaluations' spacing in epochs")
    eval_batches: int = setting(20, Whole(min=1), "validation batches per evaluation")
    stop_at: str | None = setting(None, Target(null=True),
                                  "e.g. \"val_loss<=1.47\": end the run at the first evaluation that reaches it")
    keep_checkpoints: int = setting(2, Whole(min=1), "newest checkpoints kept, besides the best")
    ema_decay: float = setting(0.0, RATE, "weight averaging: avg = ema_decay x avg + (1 - ema_decay) x weights after "
                               "each step; evaluations, the best checkpoint and multitx.load use the average "
                               "(ema.safetensors); 0: off")
    nonfinite: str = setting("stop", Choice(options=("stop", "skip")),
                             "stop | skip: what a NaN/inf loss or gradient does")
    max_skipped_steps: int = setting(10, Whole(min=0), "with nonfinite=skip, stop after this many skipped steps")
    progress: bool = setting(True, Flag(), "a tqdm progress bar")
    plots: bool = setting(True, Flag(), "RUN_DIR/plots/ (and the loggers' images) at each evaluation")
    loggers: list = setting([], Names(what="a registered logger's name", empty=True),
                            "where numbers and pictures go besides metrics.jsonl (always written), e.g. "
                            "[tensorboard,wandb]: tensorboard | wandb | mlflow | yours (engine/loggers.py); each "
                            "built-in one is an extra: pip install 'multitx[NAME]'")
    loggers_module: str | list | None = setting(None, Names(null=True),
                                                "imported first, so that the loggers it registers are known")
    data_dir: str = setting("datasets", Folder(must_exist=False), "where datasets are downloaded and cached")
    debug: bool = setting(False, Flag(), "show full tracebacks instead of one-line errors")

    @staticmethod
    def check(values: dict) -> None:
        """Shared settings that are each fine alone but not together."""
        if values["min_lr"] > values["lr"]:
            raise UserError(f"min_lr ({values['min_lr']:g}) must not exceed lr ({values['lr']:g}): "
                            f"the schedule decays lr to min_lr")
