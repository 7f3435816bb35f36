"""Metric loggers by name: `loggers=[tensorboard]` picks where a run's numbers and pictures go,
besides RUN_DIR/metrics.jsonl and steps.jsonl, which every run writes (engine/metrics.py).

A logger is told each step's loss and learning rate, each evaluation's metrics, and each
picture the run draws; it is opened on the main process only.

    @register_logger("mine")                 # loggers=[tensorboard,mine] loggers_module=my_pkg
    class MyLogger(MetricLogger): ...
"""

from pathlib import Path

from multitx.registry import Registry


class MetricLogger:
    """Where scalars and pictures go. `run_dir` is the run's folder; `config`, its settings as plain data."""

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

    def __init__(self, run_dir: Path, config: dict):
        super().__init__(run_dir, config)
        from torch.utils.tensorboard import SummaryWriter  # imported here: it is slow to import

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


def logger_classes(names, module=None) -> list[type[MetricLogger]]:
    """The classes `loggers=[...]` names (after importing `loggers_module`): one line for an unknown one."""
    return [LOGGERS.resolve(str(name), module=module if i == 0 else None) for i, name in enumerate(names or [])]
