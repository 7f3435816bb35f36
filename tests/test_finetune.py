"""task=vit_finetune: a timm ViT fine-tuned on an image folder at its own resolution, end to end.
Nothing can be downloaded here, so timm's randomly initialised model stands in for its weights."""

import pytest
import torch
from omegaconf import OmegaConf

import multitx
from multitx.cli import load_config
from multitx.engine.optimizers import build_optimizer
from multitx.engine.runtime import setup_runtime
from multitx.engine.trainer import train
from multitx.tasks.vit import ViTTask
from tests.helpers_vision import write_imagefolder

timm = pytest.importorskip("timm")
NAME = "vit_tiny_patch16_224"


@pytest.fixture
def offline_timm(monkeypatch):
    """timm.create_model(..., pretrained=True) without the download: the same model, randomly initialised."""
    create = timm.create_model
    made = []

    def random_weights(name, pretrained=False, **kwargs):
        made.append(create(name, pretrained=False, **kwargs))
        return made[-1]

    monkeypatch.setattr(timm, "create_model", random_weights)
    return made


def args(tmp_path, *extra):
    images = write_imagefolder(tmp_path / "images", per_class=6)
    return ["task=vit_finetune", f"model.pretrained=timm:{NAME}", f"data.root={images}", f"run_dir={tmp_path / 'run'}",
            "steps=2", "eval_every=2", "batch_size=4", "warmup_steps=1", "eval_batch_size=8", "device=cpu",
            "progress=false", "plots=false", "data.val_fraction=0.2", *extra]


def test_a_timm_started_run_records_the_vit_it_built_and_loads_back_without_timm(tmp_path, offline_timm, one_thread):
    train(load_config(args(tmp_path)))
    saved = OmegaConf.load(tmp_path / "run" / "config.yaml").model
    assert (saved.trunk.dim, saved.trunk.layers, saved.trunk.heads) == (192, 12, 3)  # timm's, not the YAML's
    assert list(saved.image_size) == [224, 224] and list(saved.patch_size) == [16, 16]  # its own resolution
    made = len(offline_timm)
    run = multitx.load(tmp_path / "run")  # strictly: every tensor of the checkpoint fits the rebuilt model
    assert len(offline_timm) == made  # loading built it from config.yaml, without timm
    assert run.classes == ["circle", "square"] and run.info["mean"] == [0.5, 0.5, 0.5]  # timm's normalisation
    with torch.no_grad():
        assert run.model(torch.zeros(1, 3, 224, 224)).shape == (1, 2)


def test_the_pretrained_part_trains_at_a_lower_learning_rate_than_the_new_head(tmp_path, offline_timm):
    cfg = load_config(args(tmp_path))
    runtime = setup_runtime("cpu", "fp32")
    model = ViTTask(cfg, runtime).build_model()
    optimizer = build_optimizer(model, cfg, runtime)
    by_lr = {}
    for group in optimizer.param_groups:
        by_lr.setdefault(group["lr"], set()).update(id(p) for p in group["params"])
    head = {id(p) for p in model.head.parameters()}
    assert by_lr[cfg.lr] == head
    assert by_lr[cfg.lr * cfg.pretrained_lr_scale] == {id(p) for p in model.parameters()} - head
