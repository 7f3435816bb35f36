"""Honest splits and python -m multitx.evaluate: the best checkpoint is chosen on images held out of
training, and a finished run of any task is scored on its val or test split by one command."""

import json
from pathlib import Path

import pytest
import torch

from multitx.cli import load_config
from multitx.data.images.datasets import ImageSet
from multitx.data.images.splits import hold_out, hold_out_images
from multitx.engine.runtime import setup_runtime
from multitx.engine.trainer import train
from multitx.tasks.vit import ViTTask
from tests.conftest import run_here, tiny_caption_args, tiny_charlm_args, write_line_corpus
from tests.helpers_vision import write_imagefolder
from tests.test_bad_inputs import image_args

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_validation_split_is_held_out_per_class_and_disjoint_from_training():
    labels = torch.tensor([0] * 20 + [1] * 10 + [2] * 1)
    images = torch.arange(len(labels), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()
    train_set, val = hold_out(ImageSet(images, labels, ["a", "b", "c"]), 0.1, seed=3)
    ids = lambda s: set(s.images[:, 0, 0, 0].tolist())  # noqa: E731 - each image's own pixel value
    assert ids(train_set).isdisjoint(ids(val)) and ids(train_set) | ids(val) == set(range(len(labels)))
    assert val.labels.tolist() == [0, 0, 1]  # 10% of each class, at least one; a class of one stays in training
    again, _ = hold_out(ImageSet(images, labels, ["a", "b", "c"]), 0.1, seed=3)
    assert torch.equal(again.images, train_set.images)  # the same seed holds out the same images
    kept, held = hold_out_images(100, 0.05, seed=0)
    assert len(held) == 5 and set(kept.tolist()).isdisjoint(held.tolist()) and len(kept) == 95


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("vit")
    images = write_imagefolder(tmp / "images", per_class=10)
    train(load_config(image_args(images, tmp / "run", "steps=6", "eval_every=2", "plots=false")))
    return tmp / "run"


def test_the_vit_task_evaluates_on_images_it_does_not_train_on_and_keeps_the_test_split_apart(vit_run):
    cfg = load_config(image_args(vit_run.parent / "images", vit_run.parent / "probe"))
    task = ViTTask(cfg, setup_runtime("cpu", "fp32"))
    pixels = lambda s: {bytes(img.numpy()) for img in s.images}  # noqa: E731
    assert pixels(task.val_set).isdisjoint(pixels(task.train_set))
    assert len(task.val_set) == 2 and len(task.train_set) == 18  # 10% of 10 images of each of two classes
    assert len(task.test_set) == 10  # the folder's val/ images: the test split
    rows = [json.loads(line) for line in (vit_run / "metrics.jsonl").read_text().splitlines()]
    evaluations = [r for r in rows if "val_acc" in r]
    assert evaluations and all("test_acc" not in r for r in evaluations)  # the test split is not what picks


def test_evaluate_a_vit_run_on_its_test_split(vit_run):
    done = run_here("multitx.evaluate", f"run_dir={vit_run}", "split=test", "device=cpu")
    assert done.returncode == 0, done.stderr
    written = next((vit_run / "eval").glob("test_step_*.json"))
    report = json.loads(written.read_text())
    assert report["images"] == 10 and 0 <= report["acc"] <= 1 and "top5" not in report  # two classes: top-5 is 1
    assert sum(map(sum, report["confusion"])) == 10 and set(report["per_class_acc"]) == {"circle", "square"}
    assert Path(report["confusion_png"]).stat().st_size > 1000
    assert f"acc: {report['acc']:.4f}" in done.stdout


def test_evaluate_a_charlm_run_gives_loss_and_bits_per_character(tmp_path):
    corpus = write_line_corpus(tmp_path / "corpus.txt")
    train(load_config(tiny_charlm_args(corpus, tmp_path / "run", "steps=4", "eval_every=4", "plots=false")))
    done = run_here("multitx.evaluate", f"run_dir={tmp_path / 'run'}", "split=val", "device=cpu")
    assert done.returncode == 0, done.stderr
    report = json.loads(next((tmp_path / "run" / "eval").glob("val_*.json")).read_text())
    assert report["bits_per_char"] == pytest.approx(report["loss"] / 0.6931471805599453)
    refused = run_here("multitx.evaluate", f"run_dir={tmp_path / 'run'}", "split=test")
    assert refused.returncode == 2 and "split=val" in refused.stderr and "Traceback" not in refused.stderr


def test_evaluate_a_caption_run_writes_bleu_cider_and_a_picture(tmp_path):
    train(load_config(tiny_caption_args(tmp_path, "steps=4", "eval_every=4", "plots=false")))
    done = run_here("multitx.evaluate", f"run_dir={tmp_path / 'run'}", "split=test", "device=cpu")
    assert done.returncode == 0, done.stderr
    report = json.loads(next((tmp_path / "run" / "eval").glob("test_*.json")).read_text())
    assert {"bleu4", "cider", "exact_match"} <= report.keys() and report["images"] == 12
    assert Path(report["captions_png"]).is_file() and report["examples"][0]["written"] is not None


@pytest.mark.parametrize("args, message", [
    (["run_dir=/nonexistent/run"], "does not exist"),
    (["split=train"], "split must be one of val, test"),
])
def test_bad_input_to_evaluate_is_one_line(vit_run, args, message):
    argv = [f"run_dir={vit_run}", *args] if not args[0].startswith("run_dir") else args
    done = run_here("multitx.evaluate", *argv)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
