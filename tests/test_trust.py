"""Loading a run folder runs no code: a config.yaml that names a module or a class is
refused by every loading command, the module is not imported, and trust_code=true
on that command loads it."""

import shutil
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from multitx.cli import load_config
from multitx.engine.trainer import train
from tests.conftest import registries_restored, run_here, tiny_caption_args, tiny_charlm_args, write_line_corpus

pytestmark = pytest.mark.usefixtures("one_thread", "user_code")

# A module with a side effect the test can see: importing it creates MARKER.
USER_MODULE = '''
from pathlib import Path
Path(MARKER).touch()
from multitx.nn.patches import ConvStemPatches, register_tokenizer

@register_tokenizer("users_own")
class UsersOwn(ConvStemPatches):
    """The built-in stem under another name: the trained weights fit it."""
'''


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny caption run and a tiny charlm run, trained with built-ins only; a user's module beside them."""
    tmp = tmp_path_factory.mktemp("trust")
    torch.set_num_threads(1)
    train(load_config(tiny_caption_args(tmp / "caption", "steps=4", "eval_every=4", "eval_images=2")))
    corpus = tmp / "corpus.txt"
    write_line_corpus(corpus)
    train(load_config(tiny_charlm_args(corpus, tmp / "charlm", "steps=2", "eval_every=2")))
    code = tmp / "code"
    code.mkdir()
    marker = tmp / "imported"
    (code / "users_module.py").write_text(f"MARKER = {str(marker)!r}\n{USER_MODULE}")
    picture = tmp / "picture.png"
    Image.new("RGB", (16, 16), "red").save(picture)
    return {"caption": tmp / "caption" / "run", "charlm": tmp / "charlm", "code": code, "marker": marker,
            "picture": picture, "corpus": corpus, "tmp": tmp}


def naming_code(run: Path, to: Path, **tokenizer) -> Path:
    """A copy of a run whose config.yaml files (the run's and each checkpoint's) name code."""
    shutil.copytree(run, to)
    for config in to.rglob("config.yaml"):
        cfg = OmegaConf.load(config)
        for key, value in tokenizer.items():
            OmegaConf.update(cfg, f"model.tokenizer.{key}", value, force_add=True)
        config.write_text(OmegaConf.to_yaml(cfg))
    return to


@pytest.fixture
def user_code(runs, monkeypatch):
    """The user's module is importable (a refusal is not an import failure) and not imported yet, as in a fresh
    process: the commands run in this one. Whatever a trusted load imported and registered goes afterwards."""
    monkeypatch.syspath_prepend(str(runs["code"]))
    with registries_restored("users_module"):
        yield


def assert_refused(result, key: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert key in result.stderr and "trust_code=true" in result.stderr, result.stderr


@pytest.mark.parametrize("setting", [{"module": "users_module"}, {"_target_": "users_module.UsersOwn"}],
                         ids=["module", "class"])
def test_caption_refuses_a_run_that_names_code_and_trust_code_loads_it(runs, setting, tmp_path):
    run = naming_code(runs["caption"], tmp_path / "run", **setting)
    runs["marker"].unlink(missing_ok=True)
    args = [f"run_dir={run}", f"image={runs['picture']}", "beam=1"]
    result = run_here("multitx.caption", *args)
    assert_refused(result, f"model.tokenizer.{next(iter(setting))}")
    assert not runs["marker"].exists() and "users_module" not in sys.modules, "the module was imported"

    result = run_here("multitx.caption", *args, "trust_code=true")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "a caption"
    assert runs["marker"].exists(), "trusted: the module the run names is imported"


def test_a_registered_name_of_the_users_loads_with_its_module_when_trusted(runs, tmp_path):
    run = naming_code(runs["caption"], tmp_path / "run", name="users_own", module="users_module")
    args = [f"run_dir={run}", f"image={runs['picture']}", "beam=1"]
    assert_refused(run_here("multitx.caption", *args), "model.tokenizer.module")
    assert run_here("multitx.caption", *args, "trust_code=true").returncode == 0


def test_sample_refuses_a_run_that_names_code(runs, tmp_path):
    run = naming_code(runs["charlm"], tmp_path / "run", module="users_module")
    runs["marker"].unlink(missing_ok=True)
    result = run_here("multitx.sample", f"run_dir={run}", "max_new_tokens=5")
    assert_refused(result, "model.tokenizer.module=users_module")
    assert not runs["marker"].exists() and "users_module" not in sys.modules
    trusted = run_here("multitx.sample", f"run_dir={run}", "max_new_tokens=5", "trust_code=true")
    assert trusted.returncode == 0, trusted.stderr


def test_a_task_class_of_the_users_in_a_run_folder_is_refused(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["charlm"], run)
    cfg = OmegaConf.load(run / "config.yaml")
    cfg.task._target_ = "users_module.Task"
    (run / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    assert_refused(run_here("multitx.sample", f"run_dir={run}"), "task._target_")


def test_resuming_builds_from_the_command_line_not_from_the_run_folder(runs, tmp_path):
    """The checkpoint says to import a module; resuming without typing it is refused, and nothing is imported."""
    run = naming_code(runs["charlm"], tmp_path / "run", module="users_module")
    runs["marker"].unlink(missing_ok=True)
    result = run_here("multitx.train", *tiny_charlm_args(runs["corpus"], run, "steps=4", "eval_every=2",
                                                         "resume=auto"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "different model configuration" in result.stderr
    assert not runs["marker"].exists() and "users_module" not in sys.modules
