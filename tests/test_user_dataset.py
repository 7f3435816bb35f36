"""A dataset of the user's own: one registered class in the user's package, chosen from the command line
with data.module=PACKAGE data=NAME, its keys listed by --help and checked by their rules, and a run folder
that names the module loads only when the user trusts it."""

import json

import pytest

import multitx
from tests.conftest import REPO, registries_restored, run_here, run_module

ENV = {"PYTHONPATH": str(REPO)}
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread each, no fight for the cores


@pytest.fixture(autouse=True)
def fresh_registries():
    """The commands run in this process: each test starts from the registries of a fresh one (no test_stripes),
    and what its data.module registered is gone again after it."""
    with registries_restored("tests.helpers_user_data", builtin_only=True):
        yield


def stripes_args(run_dir, *extra: str) -> list[str]:
    return ["task=vit_cifar", "data.module=tests.helpers_user_data", "data=test_stripes", f"run_dir={run_dir}",
            "model.image_size=8", "model.patch_size=4", "model.trunk.dim=16", "model.trunk.layers=1",
            "model.trunk.heads=2", "augment.policy=none", "augment.mixup=0", "augment.cutmix=0", "epochs=null",
            "steps=2", "warmup_epochs=null", "warmup_steps=1", "eval_every_epochs=null", "eval_every=2",
            "batch_size=4", "data.workers=0", "progress=false", "plots=false", "device=cpu", *extra]


def test_a_registered_user_dataset_trains_from_the_command_line(tmp_path):
    result = run_here("multitx.train", *stripes_args(tmp_path / "run", "data.count=5"))
    assert result.returncode == 0, result.stderr[-2000:]
    run = tmp_path / "run"
    assert json.loads((run / "classes.json").read_text())["classes"] == ["horizontal", "vertical"]
    assert "name: test_stripes" in (run / "config.yaml").read_text()
    assert "count: 5" in (run / "config.yaml").read_text()


def test_its_keys_are_listed_by_help_and_checked_by_their_rules(tmp_path):
    shown = run_here("multitx.train", "--help", "data.module=tests.helpers_user_data", "data=test_stripes",
                     "task=vit_cifar")
    assert shown.returncode == 0, shown.stderr
    assert "data.count" in shown.stdout and "images per class in each split" in shown.stdout
    refused = run_here("multitx.train", *stripes_args(tmp_path / "run", "data.count=0"))
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == ["error: data.count must be at least 1, got 0"]


def test_without_its_module_the_name_is_unknown_and_the_run_folder_needs_trust(tmp_path):
    # A fresh process: in this one, an earlier test may have imported the module, and so registered the name.
    unknown = run_module("multitx.train", *[a for a in stripes_args(tmp_path / "other") if "data.module" not in a],
                         cwd=REPO, env=ENV)
    assert unknown.returncode == 2 and "unknown data 'test_stripes'" in unknown.stderr
    trained = run_here("multitx.train", *stripes_args(tmp_path / "run"))
    assert trained.returncode == 0, trained.stderr[-2000:]
    refused = run_here("multitx.sample", f"run_dir={tmp_path / 'run'}")
    assert refused.returncode == 2 and "data.module=tests.helpers_user_data" in refused.stderr
    assert multitx.load(tmp_path / "run", trust_code=True).classes == ["horizontal", "vertical"]


def test_a_dataset_of_another_kind_is_refused_before_anything_is_read(tmp_path):
    refused = run_here("multitx.train", "task=vit_cifar_quick", "data=shakespeare", f"run_dir={tmp_path / 'r'}")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "error: data=shakespeare holds text, and this task reads images: use data=cifar10, data=fashion_mnist, "
        "data=imagefolder, data=hf_images"]
    assert not (tmp_path / "r").exists()
