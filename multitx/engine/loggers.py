"""Metric loggers by name: `loggers=[tensorboard,wandb,mlflow]` picks where a run's numbers and pictures go,
besides RUN_DIR/metrics.jsonl and steps.jsonl, which every run writes (engine/metrics.py). None by default
(`loggers=[]`); each built-in one is an optional extra, and naming one whose package is missing stops the run
before anything is built, with the line to install it.

    tensorboard  pip install 'multitx[tensorboard]'   event files in RUN_DIR/tensorboard: tensorboard --logdir runs/
    wandb        pip install 'multitx[wandb]'         Weights & Biases, set up by its own variables: WANDB_PROJECT
                 (default multitx), WANDB_MODE=offline (nothing leaves the machine; `wandb sync` uploads later),
                 WANDB_DIR (default: the files go in RUN_DIR/wandb), WANDB_NAME (default: the run folder's name)
    mlflow       pip install 'multitx[mlflow]'        MLflow: MLFLOW_TRACKING_URI (default: the file store ./mlruns
                 of the folder training starts in), MLFLOW_EXPERIMENT_NAME (default multitx); the run is named
                 after the run folder and its settings are the run's params, flattened with dotted keys

A logger is told each step's loss and learning rate, each evaluation's metrics, and each picture the run
draws (RUN_DIR/plots: TensorBoard's images, wandb.Image, mlflow's log_image, each at its step); it is opened
on the main process only. The run's settings go to W&B as its config and to MLflow as its params. A resumed
run (resume=auto) goes on in the same W&B and MLflow run: their ids are kept in RUN_DIR/wandb_run_id.txt and
RUN_DIR/mlflow_run_id.txt, plain ids that only these loggers read, when training goes on.

    @register_logger("mine")                 # loggers=[tensorboard,mine] loggers_module=my_pkg
    class MyLogger(MetricLogger):
        requires, extra = "my_tool", ""      # optional: the package it imports when opened, checked up front
"""

import importlib
import importlib.util
import json
import os
import re
import secrets
import sys
import time
from pathlib import Path

from multitx.errors import UserError
from multitx.imports import installed
from multitx.registry import Registry


class MetricLogger:
    """Where scalars and pictures go. `run_dir` is the run's folder; `config`, its settings as plain data.
    `requires` names the package it imports when opened (checked before anything is built) and `extra`
    the multitx extra that installs it (pip install 'multitx[EXTRA]'; none: pip install REQUIRES)."""

    requires: str = ""
    extra: str = ""

    def __init__(self, run_dir: Path, config: dict):
        self.run_dir, self.config = Path(run_dir), config

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Numbers at a step, named as TensorBoard groups them: "train/loss_step", "val/loss", "lr"..."""

    def image(self, tag: str, rgb, step: int) -> None:
        """A picture, (H, W, 3) uint8 RGB, under `tag` at `step`."""

    def flush(self) -> None:
        """Make what was logged visible to readers now."""

    def close(self) -> None:
        self.flush()


LOGGERS = Registry("metric logger", "loggers", MetricLogger, "multitx.MetricLogger", module_key="loggers_module")
register_logger = LOGGERS.register


@register_logger("tensorboard")
class TensorBoardLogger(MetricLogger):
    """TensorBoard event files in RUN_DIR/tensorboard: tensorboard --logdir runs/."""

    requires, extra = "tensorboard", "tensorboard"

    def __init__(self, run_dir: Path, config: dict):
        super().__init__(run_dir, config)
        SummaryWriter = import_for(self, "torch.utils.tensorboard").SummaryWriter  # slow to import: only here

        self.board = SummaryWriter(str(self.run_dir / "tensorboard"))

    def scalars(self, values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            self.board.add_scalar(name, value, step)

    def image(self, tag: str, rgb, step: int) -> None:
        self.board.add_image(tag, rgb, step, dataformats="HWC")
        self.board.flush()

    def flush(self) -> None:
        self.board.flush()

    def close(self) -> None:
        self.board.close()


@register_logger("wandb")
class WandbLogger(MetricLogger):
    """A Weights & Biases run: project $WANDB_PROJECT or multitx, named after the run folder, its files in
    RUN_DIR/wandb unless $WANDB_DIR; WANDB_MODE=offline keeps everything on this machine."""

    requires, extra = "wandb", "wandb"

    def __init__(self, run_dir: Path, config: dict):
        super().__init__(run_dir, config)
        self.wandb = import_for(self, "wandb")
        kept = self.run_dir / "wandb_run_id.txt"
        run_id = os.environ.get("WANDB_RUN_ID") or kept_id(kept) or keep_id(kept, secrets.token_hex(4))
        try:
            self.run = self.wandb.init(project=os.environ.get("WANDB_PROJECT") or "multitx",
                                       name=os.environ.get("WANDB_NAME") or self.run_dir.resolve().name,
                                       dir=None if os.environ.get("WANDB_DIR") else str(self.run_dir),
                                       id=run_id, resume="allow", config=config)
        except self.wandb.errors.Error as err:
            raise UserError(f"loggers=[wandb]: W&B could not start its run ({one_line(err)}); log in with "
                            f"`wandb login`, or set WANDB_MODE=offline to keep the run on this machine") from None

    def scalars(self, values: dict[str, float], step: int) -> None:
        self.run.log(dict(values), step=step)

    def image(self, tag: str, rgb, step: int) -> None:
        self.run.log({tag: self.wandb.Image(rgb)}, step=step)

    def close(self) -> None:
        self.run.finish(exit_code=ending_code())


@register_logger("mlflow")
class MLflowLogger(MetricLogger):
    """An MLflow run in experiment $MLFLOW_EXPERIMENT_NAME (or multitx) of $MLFLOW_TRACKING_URI (or the file
    store ./mlruns), named after the run folder, with the run's settings as params."""

    requires, extra = "mlflow", "mlflow"

    def __init__(self, run_dir: Path, config: dict):
        super().__init__(run_dir, config)
        mlflow = import_for(self, "mlflow")
        from mlflow.entities import Metric, Param
        from mlflow.exceptions import MlflowException

        self.Metric, self.pending = Metric, []
        uri = os.environ.get("MLFLOW_TRACKING_URI") or local_mlflow_store()
        try:
            self.client = mlflow.MlflowClient(uri)
            self.run_id = self.reopen() or self.start()
            logged = self.client.get_run(self.run_id).data.params  # a resumed run keeps the params it began with
            new = [Param(key, value) for key, value in flat_params(config, value_limit()).items() if key not in logged]
            for at in range(0, len(new), 100):  # MLflow's limit per batch
                self.client.log_batch(self.run_id, params=new[at:at + 100])
        except MlflowException as err:
            raise UserError(f"loggers=[mlflow]: MLflow could not open a run in {uri} ({one_line(err)}); "
                            f"set MLFLOW_TRACKING_URI to a store or server you can write to") from None

    def reopen(self) -> str | None:
        """The MLflow run this run folder began, when it is in this tracking store and not deleted."""
        from mlflow.exceptions import MlflowException

        run_id = kept_id(self.run_dir / "mlflow_run_id.txt")
        if run_id is None:
            return None
        try:
            run = self.client.get_run(run_id)
        except MlflowException:  # another store, or gone: a new run
            return None
        if run.info.lifecycle_stage != "active":
            return None
        self.client.update_run(run_id, status="RUNNING")
        return run_id

    def start(self) -> str:
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "multitx"
        experiment = os.environ.get("MLFLOW_EXPERIMENT_ID")
        if not experiment:
            found = self.client.get_experiment_by_name(name)
            experiment = found.experiment_id if found else self.client.create_experiment(name)
        run = self.client.create_run(experiment, run_name=self.run_dir.resolve().name,
                                     tags={"multitx.run_dir": str(self.run_dir.resolve())})
        return keep_id(self.run_dir / "mlflow_run_id.txt", run.info.run_id)

    def scalars(self, values: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self.pending += [self.Metric(name, float(value), now, step) for name, value in values.items()]

    def image(self, tag: str, rgb, step: int) -> None:
        self.client.log_image(self.run_id, rgb, key=tag, step=step, synchronous=True)

    def flush(self) -> None:
        """Scalars go in batches, at each of the trainer's flushes (every second or so, and each evaluation)."""
        pending, self.pending = self.pending, []
        for at in range(0, len(pending), 1000):  # MLflow's limit per batch
            self.client.log_batch(self.run_id, metrics=pending[at:at + 1000])

    def close(self) -> None:
        code = ending_code()
        self.flush()
        self.client.set_terminated(self.run_id, "FINISHED" if code == 0 else "KILLED" if code in (130, 143)
                                   else "FAILED")


def logger_classes(names, module=None) -> list[type[MetricLogger]]:
    """The classes `loggers=[...]` names (after importing `loggers_module`): one line for an unknown one,
    or for one whose package is not installed."""
    classes = [LOGGERS.resolve(str(name), module=module if i == 0 else None) for i, name in enumerate(names or [])]
    for name, cls in zip(names or [], classes, strict=True):
        if cls.requires and not installed(cls.requires):
            raise UserError(f"loggers=[{name}] needs the {cls.requires} package, which is not installed: "
                            f"{install_line(cls)}")
    return classes


def install_line(cls: type[MetricLogger]) -> str:
    return f"pip install 'multitx[{cls.extra}]'" if cls.extra else f"pip install {cls.requires}"


def import_for(logger: MetricLogger, module: str):
    """Import what a logger writes with, when it is opened: a broken or missing install is one line."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise UserError(f"{type(logger).__name__} cannot import {module} ({one_line(err)}): "
                        f"{install_line(type(logger))}") from None


def kept_id(path: Path) -> str | None:
    """The tracker's run id kept in `path`: a plain id (letters, digits, - and _), or None."""
    text = path.read_text(encoding="utf-8").strip() if path.is_file() else ""
    return text if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", text) else None


def keep_id(path: Path, run_id: str) -> str:
    """Keep the tracker's run id in the run folder, so that a resumed run goes on in the same tracker run."""
    path.write_text(run_id + "\n", encoding="utf-8")
    return run_id


def local_mlflow_store() -> str:
    """./mlruns as a file store: the one local store mlflow-skinny writes without a server or a database driver.
    MLflow 3 asks that the file store be chosen on purpose (MLFLOW_ALLOW_FILE_STORE); it is, here."""
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return (Path.cwd() / "mlruns").as_uri()


def value_limit() -> int:
    """The longest param value MLflow takes (6000 characters in MLflow 3)."""
    try:
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
    except ImportError:
        return 500  # older MLflow's limit
    return int(MAX_PARAM_VAL_LENGTH)


def flat_params(config: dict, limit: int, prefix: str = "") -> dict[str, str]:
    """{"model.trunk.dim": "32", ...}: nested settings as MLflow params, each value cut to MLflow's limit."""
    params = {}
    for key, value in (config or {}).items():
        name = re.sub(r"[^\w\-./ ]", "_", f"{prefix}{key}")
        if isinstance(value, dict):
            params.update(flat_params(value, limit, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
            params[name] = text[:limit]
    return params


def ending_code() -> int:
    """0, or the exit status of the exception on its way out: close() runs in the trainer's `finally`."""
    err = sys.exc_info()[1]
    if err is None:
        return 0
    if isinstance(err, KeyboardInterrupt):
        return 130
    code = getattr(err, "code", None)  # the trainer's Interrupted: 130 or 143
    return code if isinstance(code, int) and code else 1


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:600]
