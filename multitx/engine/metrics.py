"""Where a run's numbers go: RUN_DIR/metrics.jsonl (one JSON line per evaluation) and
RUN_DIR/steps.jsonl (one line per optimizer step), always, and each logger `loggers=[...]`
chose (engine/loggers.py: tensorboard, wandb, mlflow; none by default), which also gets the pictures
multitx.engine.plots draws at each evaluation."""

import json
import math
import time
from pathlib import Path

from multitx.engine.loggers import MetricLogger


class MetricsLog:
    def __init__(self, run_dir: Path, enabled: bool = True, loggers: list[MetricLogger] | None = None):
        self.enabled = enabled
        self.loggers = list(loggers or []) if enabled else []
        if not enabled:
            return
        self.evals = open_for_append(Path(run_dir) / "metrics.jsonl")
        self.steps = open_for_append(Path(run_dir) / "steps.jsonl")
        self.last_flush = time.monotonic()

    def step(self, step: int, loss: float, lr: float) -> None:
        if self.enabled:
            self.steps.write(json.dumps({"step": step, "loss": loss, "lr": lr}) + "\n")
            for logger in self.loggers:
                logger.scalars({"train/loss_step": loss}, step)
            if time.monotonic() - self.last_flush > 1.0:  # `tail -f steps.jsonl` stays current
                self.flush()

    def evaluation(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        self.evals.write(json.dumps({"step": step, **{k: clean(v) for k, v in metrics.items()}}) + "\n")
        numbers = {name.replace("val_", "val/").replace("train_", "train/"): value for name, value in metrics.items()
                   if isinstance(value, (int, float))}
        for logger in self.loggers:
            logger.scalars(numbers, step)
        self.flush()

    def image(self, tag: str, rgb, step: int) -> None:
        """A picture, (H, W, 3) uint8 RGB, under `tag` at `step` (TensorBoard's Images tab)."""
        for logger in self.loggers:
            logger.image(tag, rgb, step)

    def flush(self) -> None:
        if self.enabled:
            self.last_flush = time.monotonic()
            self.evals.flush()
            self.steps.flush()
            for logger in self.loggers:
                logger.flush()

    def close(self) -> None:
        if self.enabled:
            self.flush()
            self.evals.close()
            self.steps.close()
            for logger in self.loggers:
                logger.close()


def open_for_append(path: Path):
    """Open a .jsonl file to add lines, first cutting off a line that a kill tore mid-write,
    so that a resumed run's first line does not run into it."""
    if path.exists() and path.stat().st_size:
        with open(path, "r+b") as f:
            f.seek(-1, 2)
            if f.read(1) != b"\n":
                data = f.seek(0) or f.read()  # only after a kill: find the last whole line
                f.truncate(data.rfind(b"\n") + 1)
    return open(path, "a", encoding="utf-8")


def clean(value):
    """JSON has no NaN: write it as null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def read_jsonl(path: Path) -> list[dict]:
    """Lines of a .jsonl file; for steps.jsonl after a resume, the last line of each step wins."""
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if rows and "loss" in rows[0]:
        by_step = {row["step"]: row for row in rows}
        rows = [by_step[s] for s in sorted(by_step)]
    return rows
