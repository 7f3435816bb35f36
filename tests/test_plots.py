"""Pictures during training: every evaluation draws RUN_DIR/plots/loss.png (and, for the image
tasks, samples.png) and puts the same pictures in TensorBoard (multitx/engine/plots.py)."""

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from multitx.cli import load_config
from multitx.data.captions.vocab import WordVocab
from multitx.engine import plots
from multitx.engine.checkpoint import latest
from multitx.engine.task import RIGHT, WRONG
from multitx.engine.trainer import train
from multitx.tasks.caption import CaptionTask
from tests.conftest import tiny_caption_args, tiny_charlm_args
from tests.helpers_vision import write_imagefolder
from tests.test_bad_inputs import image_args

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------ the figures alone


def write_jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def line(ax, label_start: str):
    found = [ln for ln in ax.lines if ln.get_label().startswith(label_start)]
    assert len(found) == 1, [ln.get_label() for ln in ax.lines]
    return found[0]


@pytest.fixture
def run_folder(tmp_path):
    """40 steps of known losses (step 7's NaN: a skipped step; step 40 written twice: a resumed run) and
    evaluations at steps 20 and 40 (step 20 written twice: the later line counts)."""
    run = tmp_path / "my_run"
    run.mkdir()
    losses = [3.0 - 0.05 * s for s in range(1, 41)]
    losses[6] = float("nan")
    write_jsonl(run / "steps.jsonl", [{"step": 40, "loss": 99.0, "lr": 1e-3}]
                + [{"step": s, "loss": loss, "lr": 1e-3} for s, loss in zip(range(1, 41), losses, strict=True)])
    write_jsonl(run / "metrics.jsonl", [{"step": 20, "val_loss": 9.0, "val_acc": 0.0},
                                        {"step": 20, "val_loss": 2.5, "val_acc": 0.5, "lr": 1e-3},
                                        {"step": 40, "val_loss": 1.5, "val_acc": 0.75, "lr": 1e-3}])
    return run, np.array(losses)


def test_loss_curves_plot_every_step_and_every_evaluation(run_folder):
    run, losses = run_folder
    fig = plots.loss_curves(run, "vit_cifar: run my_run", ["val_acc", "bleu4"])  # bleu4: not in this run
    assert "my_run" in fig.get_suptitle()
    loss_ax, metric_ax = fig.axes
    assert loss_ax.get_xlabel() == metric_ax.get_xlabel() == "step" and "loss" in loss_ax.get_ylabel()
    every = line(loss_ax, "train loss (every step)")
    np.testing.assert_array_equal(every.get_xdata(), np.arange(1, 41))
    np.testing.assert_array_equal(every.get_ydata(), losses)  # the resumed step 40 counts once, NaN stays a gap
    smooth = line(loss_ax, "train loss (mean of 5 steps")
    assert np.isfinite(smooth.get_ydata()).all(), "the running mean steps over a NaN"
    assert smooth.get_ydata()[19] == pytest.approx(losses[17:22].mean())  # centred: steps 18..22
    assert smooth.get_ydata()[-1] == pytest.approx(losses[37:].mean())  # at the end: steps 38..40
    val = line(loss_ax, "val loss")
    assert list(val.get_xdata()) == [20, 40] and list(val.get_ydata()) == [2.5, 1.5]
    assert [ln.get_label() for ln in metric_ax.lines] == ["val_acc (last 0.75)"]
    assert list(metric_ax.lines[0].get_xdata()) == [20, 40] and list(metric_ax.lines[0].get_ydata()) == [0.5, 0.75]
    assert {t.get_text() for t in loss_ax.get_legend().get_texts()} >= {"val loss (last 1.5)"}


def test_a_task_without_metrics_besides_the_loss_gets_one_panel(run_folder):
    run, _ = run_folder
    fig = plots.loss_curves(run, "charlm", plots.metric_keys({"train_loss": 2.0, "val_loss": 1.0, "lr": 1e-3,
                                                              "tokens_per_s": 5e4}))
    assert len(fig.axes) == 1


def test_metric_keys_are_the_numbers_that_are_not_a_loss_lr_or_throughput():
    metrics = {"train_loss": 2.0, "val_loss": 1.0, "bleu4": 0.2, "cider": 0.9, "exact_match": 0.0,
               "captions_per_s": 3e3, "lr": 1e-3, "note": "text"}
    assert plots.metric_keys(metrics) == ["bleu4", "cider", "exact_match"]


def test_image_grid_has_a_panel_per_image_with_its_title_and_colour():
    images = np.stack([np.full((8, 6, 1), 40 * i, dtype=np.uint8) for i in range(5)])  # (5, 8, 6, 1): grey
    titles = [f"cat / {name}" for name in ("cat", "dog", "cat", "dog", "cat")]
    colours = [RIGHT, WRONG, RIGHT, WRONG, RIGHT]
    notes = ["", "a note beneath", "", "", "a very long note that has to be wrapped onto several lines"]
    fig = plots.image_grid(images, titles, colours, title="predicted / true", notes=notes)
    assert len(fig.axes) == 5, "4 columns, 2 rows: the 3 unused panels are removed"
    for ax, image, title, colour in zip(fig.axes, images, titles, colours, strict=True):
        assert ax.get_title() == title and ax.title.get_color() == colour
        np.testing.assert_array_equal(ax.images[0].get_array(), image[..., 0])
    assert fig.axes[1].get_xlabel() == "a note beneath" and fig.axes[0].get_xlabel() == ""
    assert max(len(row) for row in fig.axes[4].get_xlabel().splitlines()) <= 28


def test_image_grid_refuses_channels_first_images():
    with pytest.raises(ValueError, match=r"\(N, H, W, 1 or 3\) uint8"):
        plots.image_grid(np.zeros((2, 3, 8, 8), dtype=np.uint8), ["a", "b"], [RIGHT, RIGHT])


def test_save_writes_a_whole_png_and_returns_its_pixels(tmp_path, run_folder):
    run, _ = run_folder
    rgb = plots.save(plots.loss_curves(run, "r", ["val_acc"]), tmp_path / "loss.png")
    with Image.open(tmp_path / "loss.png") as png:
        png.verify()
    with Image.open(tmp_path / "loss.png") as png:
        assert png.format == "PNG" and png.size == (rgb.shape[1], rgb.shape[0])
        np.testing.assert_array_equal(np.asarray(png.convert("RGB")), rgb)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.png", "my_run"], "no temporary file left"


# --------------------------------------------------------------------------------------- during training


class Recorder:
    """Wraps plots.loss_curves and plots.image_grid, keeping every figure they make."""

    def __init__(self, mp: pytest.MonkeyPatch):
        self.losses, self.grids = [], []
        for name, kept in (("loss_curves", self.losses), ("image_grid", self.grids)):
            real = getattr(plots, name)
            mp.setattr(plots, name, lambda *a, _real=real, _kept=kept, **k: _kept.append(_real(*a, **k)) or _kept[-1])


BOARD = "loggers=[tensorboard]"  # the pictures are read back from TensorBoard's event files


def board_images(run_dir) -> dict[str, list[int]]:
    """{tag: steps} of the image summaries in RUN_DIR/tensorboard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    board.Reload()
    return {tag: [event.step for event in board.Images(tag)] for tag in board.Tags()["images"]}


def png_size(path) -> tuple[int, int]:
    with Image.open(path) as png:
        png.verify()
    with Image.open(path) as png:
        assert png.format == "PNG"
        return png.size


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    path.write_text("ROMEO: speak the sword, good romeo!\nJULIET: hold the rose, good juliet!\n" * 60,
                    encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def charlm_run(corpus):
    run_dir = corpus.parent / "run"
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        seen = Recorder(mp)
        train(load_config(tiny_charlm_args(corpus, run_dir, BOARD)))  # 30 steps, evaluations at 15 and 30
    return run_dir, seen


def test_a_charlm_run_redraws_its_loss_curves_at_each_evaluation(charlm_run):
    run_dir, seen = charlm_run
    width, height = png_size(run_dir / "plots" / "loss.png")
    assert 500 <= width <= 2000 and 300 <= height <= 1200
    assert [list(line(fig.axes[0], "val loss").get_xdata()) for fig in seen.losses] == [[15], [15, 30]]
    assert list(line(seen.losses[-1].axes[0], "train loss (every step)").get_xdata()) == list(range(1, 31))
    assert len(seen.losses[-1].axes) == 1, "charlm has no metric besides its loss"
    assert not (run_dir / "plots" / "samples.png").exists() and not seen.grids
    assert board_images(run_dir) == {"plots/loss": [15, 30]}


def test_plots_false_draws_nothing(corpus):
    run_dir = corpus.parent / "no_plots"
    off = "plots=false" if "plots" in load_config(["task=charlm"]) else "+plots=false"  # before config.yaml has it
    train(load_config(tiny_charlm_args(corpus, run_dir, "steps=2", "eval_every=2", off, BOARD)))
    assert latest(run_dir).name == "step_0000002"
    assert not (run_dir / "plots").exists() and board_images(run_dir) == {}


def test_a_picture_that_cannot_be_written_is_a_warning_and_training_goes_on(corpus, capsys):
    run_dir = corpus.parent / "blocked"
    run_dir.mkdir()
    (run_dir / "plots").write_text("a file where the plots folder goes")
    train(load_config(tiny_charlm_args(corpus, run_dir, "steps=4", "eval_every=2")))
    assert latest(run_dir).name == "step_0000004", "both evaluations saved their checkpoint"
    warnings = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("warning: no plots")]
    assert len(warnings) == 2 and warnings[0].startswith("warning: no plots at step 2 (FileExistsError")


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vit")
    images = write_imagefolder(tmp / "images")
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        seen = Recorder(mp)
        # validated on half the training images: 4 circles, then 4 squares
        train(load_config(image_args(images, tmp / "run", "data.val_fraction=0.5", BOARD)))  # 2 steps, one evaluation
    return tmp / "run", seen


def test_a_vit_run_draws_its_val_images_titled_predicted_and_true(vit_run):
    run_dir, seen = vit_run
    png_size(run_dir / "plots" / "samples.png")
    (grid,) = seen.grids
    assert len(grid.axes) == 8 and all(len(ax.images) == 1 for ax in grid.axes), "the 8 val images, each once"
    assert "predicted / true" in grid.get_suptitle()
    titles = [re.fullmatch(r"(circle|square) / (circle|square)", ax.get_title()) for ax in grid.axes]
    assert all(titles), [ax.get_title() for ax in grid.axes]
    assert [t.group(2) for t in titles] == ["circle"] * 4 + ["square"] * 4
    for ax, t in zip(grid.axes, titles, strict=True):
        assert ax.title.get_color() == (RIGHT if t.group(1) == t.group(2) else WRONG)
    (loss,) = seen.losses
    assert [ln.get_label().split(" (")[0] for ln in loss.axes[1].lines] == ["val_acc"]
    assert board_images(run_dir) == {"plots/loss": [2], "plots/samples": [2]}


@pytest.fixture(scope="module")
def caption_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("caption")
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        seen = Recorder(mp)
        seen.tasks = []
        real = CaptionTask.examples
        mp.setattr(CaptionTask, "examples", lambda self, model: seen.tasks.append(self) or real(self, model))
        train(load_config(tiny_caption_args(tmp, "steps=12", BOARD)))  # one evaluation, at step 12
    return tmp / "run", seen


def test_a_caption_run_draws_its_val_images_with_their_captions_and_references(caption_run):
    run_dir, seen = caption_run
    png_size(run_dir / "plots" / "samples.png")
    (grid,), (task,) = seen.grids, seen.tasks
    assert len(grid.axes) == 8
    vocab = set(WordVocab.load(run_dir / "vocab.json").vocab)
    for ax, refs in zip(grid.axes, task.val_split.captions, strict=False):
        assert ax.get_title() and set(ax.get_title().split()) <= vocab, "a caption written by the model"
        assert " ".join(ax.get_xlabel().split()) == f"reference: {refs[0]}"
    (loss,) = seen.losses
    assert [ln.get_label().split(" (")[0] for ln in loss.axes[1].lines] == ["bleu4", "cider", "exact_match"]
    assert board_images(run_dir) == {"plots/loss": [12], "plots/samples": [12]}
