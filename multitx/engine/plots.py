"""Pictures of a run, drawn at each evaluation into RUN_DIR/plots/ and TensorBoard.

  loss.png     train loss of every step (and a running mean), val loss of every
               evaluation, and the task's other metrics (val_acc; bleu4, cider...)
  samples.png  what the task shows of itself (Task.examples): validation images
               with their predicted and true labels, or their captions

Figures are matplotlib `Figure`s drawn on an Agg canvas (FigureCanvasAgg) and never
through pyplot: nothing here needs a display, registers a figure globally or
changes the backend of a notebook that imports it. Files are written atomically
(multitx.files.atomic_write_bytes): a kill never leaves a half-written PNG.
"""

import gc
import io
import math
import textwrap
import time
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from multitx.engine.metrics import read_jsonl
from multitx.files import atomic_write_bytes

DPI = 100
NOT_PLOTTED = {"train_loss", "val_loss", "lr", "step", "time_s"}  # the loss panel has the losses; lr, time: no metric


def loss_curves(run_dir: Path, title: str, metric_keys: list[str] = ()) -> Figure:
    """Train loss (RUN_DIR/steps.jsonl) and val loss (RUN_DIR/metrics.jsonl) against step; with
    metric_keys present in metrics.jsonl, a second panel with each of them against step.

    Lines, by label: "train loss (every step)", "train loss (mean of W steps around each)", "val loss",
    then one per metric key. Steps written twice (a resumed run) count once, the last line winning;
    NaN losses (nonfinite=skip, or null in metrics.jsonl) are gaps."""
    run_dir = Path(run_dir)
    steps = rows_by_step(run_dir / "steps.jsonl")
    evals = rows_by_step(run_dir / "metrics.jsonl")
    keys = [k for k in metric_keys if any(number(row.get(k)) is not None for row in evals)]
    fig = Figure(figsize=(6.4 * (1 + bool(keys)), 4.2), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 1 + bool(keys), squeeze=False)[0]

    ax = axes[0]
    x = np.array([row["step"] for row in steps], dtype=float)  # (S,)
    loss = np.array([as_float(row.get("loss")) for row in steps], dtype=float)  # (S,)
    if len(x):
        ax.plot(x, loss, color="tab:blue", alpha=0.3, linewidth=0.8, label="train loss (every step)")
        window = smoothing_window(len(x))
        if window > 1:
            ax.plot(x, running_mean(loss, window), color="tab:blue", linewidth=1.8,
                    label=f"train loss (mean of {window} steps around each)")
    ex, val = series(evals, "val_loss")
    if len(ex):
        ax.plot(ex, val, color="tab:orange", marker=dots(ex), markersize=4, linewidth=1.8,
                label=f"val loss (last {val[-1]:.4g})")
    ax.set(xlabel="step", ylabel="loss (cross-entropy)", title="loss")
    finish(ax)

    if keys:
        ax = axes[1]
        for key in keys:
            ex, values = series(evals, key)
            ax.plot(ex, values, marker=dots(ex), markersize=4, linewidth=1.8, label=f"{key} (last {values[-1]:.4g})")
        ax.set(xlabel="step", ylabel="value", title="validation metrics")
        finish(ax)
    fig.suptitle(title, fontsize="large")
    return fig


def image_grid(images: np.ndarray, titles: list[str], colours: list[str], title: str = "",
               notes: list[str] | None = None, columns: int = 4, text_width: int = 28) -> Figure:
    """One panel per image: its title above it in its colour, its note (if any) beneath it in grey,
    both wrapped to text_width characters a line.
    images: (N, H, W, C) uint8 with C 1 or 3; len(titles) == len(colours) == len(notes) == N."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.dtype != np.uint8:
        raise ValueError(f"image_grid wants (N, H, W, 1 or 3) uint8 images, got {images.shape} {images.dtype}")
    n = len(images)
    notes = [""] * n if notes is None else list(notes)
    if not (len(titles) == len(colours) == len(notes) == n):
        raise ValueError(f"{n} images, {len(titles)} titles, {len(colours)} colours and {len(notes)} notes")
    columns = max(1, min(columns, n))
    rows = max(1, math.ceil(n / columns))
    above = [wrap(t, text_width) for t in titles]
    below = [wrap(t, text_width) if t else "" for t in notes]
    lines = max((t.count("\n") + 1 for t in above), default=1) + max((t.count("\n") + 1 for t in below if t), default=0)
    panel = 2.1  # inches a side for the image; the text gets about 0.18 in a line
    fig = Figure(figsize=(columns * panel, rows * (panel + 0.18 * lines + 0.1) + 0.4), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, image, text, note, colour in zip(axes, images, above, below, colours, strict=False):
        grey = image.shape[-1] == 1
        ax.imshow(image[..., 0] if grey else image, cmap="gray" if grey else None, vmin=0, vmax=255,
                  interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(text, color=colour, fontsize=9, linespacing=1.15)
        if note:
            ax.set_xlabel(note, color="#666666", fontsize=8.5, linespacing=1.15)
        for spine in ax.spines.values():
            spine.set_edgecolor(colour)
    for ax in axes[n:]:
        fig.delaxes(ax)
    if title:
        fig.suptitle(title, fontsize="large")
    return fig


def confusion_figure(confusion: np.ndarray, classes: list[str], title: str) -> Figure:
    """The confusion matrix (rows: true class, columns: predicted), each row as shares of its images."""
    shares = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    size = 2.5 + 0.45 * len(classes)
    fig = Figure(figsize=(size + 1.5, size), dpi=100)
    ax = fig.add_subplot()
    shown = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(shown, ax=ax, fraction=0.046, label="share of the true class's images")
    ticks = range(len(classes))
    ax.set_xticks(ticks, classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(ticks, classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(classes) <= 20:
        for (row, col), count in np.ndenumerate(confusion):
            ax.text(col, row, str(count), ha="center", va="center", fontsize=7,
                    color="white" if shares[row, col] > 0.5 else "black")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def pixels(fig: Figure) -> np.ndarray:
    """Draw a figure; (H, W, 3) uint8 RGB."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save(fig: Figure, path: Path) -> np.ndarray:
    """Draw a figure once and write it as a PNG, atomically; returns its (H, W, 3) uint8 pixels
    (for TensorBoard, without drawing it again)."""
    rgb = pixels(fig)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=6)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return rgb


def metric_keys(metrics: dict) -> list[str]:
    """The metrics of an evaluation worth a curve besides the losses: val_acc; bleu4, cider,
    exact_match... (numbers that are not a loss, the lr or a throughput)."""
    return [k for k, v in metrics.items() if k not in NOT_PLOTTED and not k.endswith("_per_s")
            and isinstance(v, (int, float)) and not isinstance(v, bool)]


def draw_evaluation(run_dir: Path, task, model, metrics: dict) -> dict[str, np.ndarray]:
    """RUN_DIR/plots/loss.png and, where the task has examples, samples.png; {name: (H, W, 3) pixels}."""
    run_dir = Path(run_dir)
    folder = run_dir / "plots"
    folder.mkdir(exist_ok=True)
    title = f"{task.name}: run {run_dir.name}"
    drawn = {"loss": save(loss_curves(run_dir, title, metric_keys(metrics)), folder / "loss.png")}
    examples = task.examples(model)  # a multitx.engine.task.Examples, or None
    if examples is not None:
        heading = f"{title} \N{EM DASH} {examples.heading}" if examples.heading else title
        grid = image_grid(examples.images, examples.titles, examples.colours, title=heading, notes=examples.notes)
        drawn["samples"] = save(grid, folder / "samples.png")
    return drawn


def at_evaluation(run_dir: Path, task, model, metrics: dict, step: int, log, *, debug: bool = False,
                  say=print) -> float:
    """Draw the evaluation's pictures, write them to RUN_DIR/plots and to TensorBoard (log.image);
    returns the seconds it took. A picture is not worth losing a run: any failure (a read-only
    folder, a full disk, a bug) is one warning line and training goes on; debug=true raises it."""
    t0 = time.perf_counter()
    try:
        for name, rgb in draw_evaluation(run_dir, task, model, metrics).items():
            log.image(f"plots/{name}", rgb, step)
    except Exception as err:
        if debug:
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        say(f"warning: no plots at step {step} ({type(err).__name__}: {first}); training goes on; "
            f"turn them off with plots=false")
    # A Figure and its Agg renderer hold each other: without a collection here they wait for Python's
    # rare full collection, and a long run's resident memory creeps up by a figure's buffers each time.
    gc.collect()
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------- helpers


def rows_by_step(path: Path) -> list[dict]:
    """The lines of a .jsonl file, one per step (the last written wins), in step order; [] if absent."""
    if not Path(path).exists():
        return []
    by_step = {row["step"]: row for row in read_jsonl(path) if "step" in row}
    return [by_step[s] for s in sorted(by_step)]


def series(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of the rows that have a number under key; (K,) and (K,) floats."""
    pairs = [(row["step"], number(row.get(key))) for row in rows]
    pairs = [(s, v) for s, v in pairs if v is not None]
    return np.array([s for s, _ in pairs], dtype=float), np.array([v for _, v in pairs], dtype=float)


def number(value) -> float | None:
    """A finite number as a float; None for null, NaN, inf, text, booleans."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def as_float(value) -> float:
    return float("nan") if number(value) is None else float(value)


def smoothing_window(n: int) -> int:
    """Steps in the running mean: about a twentieth of the run, at least 5, at most 501; odd, so that
    the window is centred (as many steps before each as after)."""
    return 1 if n < 10 else int(min(500, max(5, n // 20))) | 1


def running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the finite values among the `window` around each (centred, so that the curve does not lag;
    the half beyond an end is cut off); (S,) -> (S,)."""
    finite = np.isfinite(values)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, values, 0.0))])  # (S + 1,)
    counts = np.concatenate([[0], np.cumsum(finite)])  # (S + 1,)
    middle = np.arange(len(values))
    start = np.maximum(middle - window // 2, 0)
    end = np.minimum(middle + window // 2 + 1, len(values))
    n = counts[end] - counts[start]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (sums[end] - sums[start]) / np.maximum(n, 1), np.nan)


def dots(x: np.ndarray) -> str | None:
    """A marker on each evaluation, while there are few enough to tell apart."""
    return "o" if len(x) <= 60 else None


def finish(ax) -> None:
    ax.grid(True, alpha=0.3)
    if ax.lines:
        ax.legend(fontsize="small", loc="best")


def wrap(text: str, width: int) -> str:
    """Each line of text wrapped to `width` characters."""
    return "\n".join(textwrap.fill(line, width) or line for line in str(text).splitlines() or [""])
