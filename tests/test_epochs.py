"""The length of a run in epochs (multitx/engine/length.py): epochs=, warmup_epochs= and
eval_every_epochs= worked out as steps from the training set's size and the batch, refused
beside a steps= of the user's own and for a task without epochs."""

import io
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import yaml

from multitx import train
from multitx.cli import load_config, run_cli
from multitx.data.sampler import BatchSampler
from multitx.engine.length import resolve_length, steps_for
from multitx.engine.metrics import read_jsonl
from multitx.errors import UserError
from tests.conftest import tiny_charlm_args, write_line_corpus
from tests.helpers_vision import write_imagefolder
from tests.test_bad_inputs import image_args

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("epochs, items, batch_size, world_size, grad_accum, steps", [
    (10, 50_000, 128, 1, 1, 3900),  # CIFAR-10: 390 full batches an epoch, the last 80 images dropped
    (10, 50_000, 64, 2, 1, 3900),  # 2 processes of 64: the same global batch, the same steps
    (10, 50_000, 128, 1, 2, 1950),  # two micro-batches a step
    (10, 50_000, 128, 1, 3, 1300),
    (5, 50_000, 128, 1, 4, 487),  # 5 x 390 = 1950 batches make 487 whole steps of 4
    (1, 60_000, 100, 4, 1, 150),
    (3, 14, 4, 1, 1, 9),
])
def test_steps_for_an_epoch_count(epochs, items, batch_size, world_size, grad_accum, steps):
    assert steps_for(epochs, items, batch_size, world_size, grad_accum) == steps


@pytest.mark.parametrize("items, batch_size, world_size", [(50, 4, 1), (50, 4, 2), (37, 3, 3)])
def test_the_formula_is_what_the_sampler_does(items, batch_size, world_size):
    """After steps_for(E, ...) x grad_accum batches (grad_accum 1) the sampler of every process has gone
    through exactly E epochs: the incomplete last batch of each is dropped, as the formula says."""
    epochs = 3
    steps = steps_for(epochs, items, batch_size, world_size)
    for rank in range(world_size):
        sampler = BatchSampler(items, batch_size, seed=1, rank=rank, world_size=world_size)
        for _ in range(steps):
            next(sampler)
        assert sampler.state_dict() == {"seed": 1, "epoch": epochs, "position": 0}


def resolved(*overrides: str, items: int = 50_000, world_size: int = 1):
    cfg = load_config(["task=vit_cifar", *overrides])
    said = io.StringIO()
    resolve_length(cfg, items, world_size, say=lambda *a, **_: print(*a, file=said))
    return cfg, said.getvalue()


def test_epochs_replace_steps_and_are_printed():
    cfg, said = resolved("epochs=10", "warmup_epochs=1", "eval_every_epochs=5")
    assert (cfg.steps, cfg.warmup_steps, cfg.eval_every) == (3900, 390, 1950)
    assert said.startswith("3900 steps = 10 epochs of 390 steps (50000 examples an epoch, batches of 128)")
    assert "warmup_steps=390 (1 epoch)" in said and "eval_every=1950 (5 epochs)" in said


def test_epochs_with_grad_accum_and_two_processes():
    cfg, said = resolved("epochs=10", "batch_size=64", "grad_accum=2", "warmup_epochs=2", world_size=2)
    assert (cfg.steps, cfg.warmup_steps) == (1950, 390)
    assert said.startswith("1950 steps = 10 epochs of 195 steps")


def test_warmup_epochs_alone_keep_the_steps():
    cfg, _ = resolved("warmup_epochs=3", "steps=5000")
    assert (cfg.steps, cfg.warmup_steps) == (5000, 1170)


def test_without_epoch_keys_nothing_changes():
    cfg, said = resolved("epochs=null", "warmup_epochs=null", "eval_every_epochs=null", "steps=123",
                         "warmup_steps=7", "eval_every=50")
    assert (cfg.steps, cfg.warmup_steps, cfg.eval_every, said) == (123, 7, 50, "")


def test_the_vision_recipes_are_written_in_epochs():
    """CIFAR-10's 50,000 training images less the 5,000 held out: 351 batches of 128 an epoch."""
    cfg, said = resolved(items=45_000)
    assert (cfg.epochs, cfg.steps, cfg.warmup_steps, cfg.eval_every) == (100, 35_100, 3_510, 1_755)
    assert said.startswith("35100 steps = 100 epochs of 351 steps (45000 examples an epoch, batches of 128)")
    fashion = load_config(["task=vit_fashion"])
    resolve_length(fashion, 54_000, 1, say=lambda *_, **__: None)
    assert (fashion.steps, fashion.warmup_steps, fashion.eval_every) == (14 * 421, 250, 7 * 421)
    for task in ("vit_cifar_quick", "vit_finetune"):
        assert load_config([f"task={task}"]).epochs is not None


def test_a_steps_of_the_users_own_sets_the_recipes_epochs_aside():
    cfg, said = resolved("steps=500", items=45_000)
    assert (cfg.steps, cfg.epochs, cfg.warmup_steps, cfg.eval_every) == (500, None, 3_510, 1_755)
    assert "steps=500 given: the task file's epochs=100 set aside" in said
    cfg, said = resolved("warmup_steps=20", "eval_every=100", items=45_000)
    assert (cfg.steps, cfg.warmup_steps, cfg.eval_every) == (35_100, 20, 100)
    assert (cfg.warmup_epochs, cfg.eval_every_epochs) == (None, None)


@pytest.mark.parametrize("key, target", [("epochs", "steps"), ("warmup_epochs", "warmup_steps"),
                                         ("eval_every_epochs", "eval_every")])
def test_a_length_given_neither_way_is_refused_before_the_data(tmp_path, capsys, key, target):
    code, err = one_line(["task=vit_cifar", f"{key}=null", f"{target}=null", f"run_dir={tmp_path / 'run'}",
                          f"data.root={tmp_path / 'no-cifar'}"], capsys)
    assert (code, err) == (2, f"error: {target} and {key} are both null: give {target}=N or {key}=N\n")


def test_a_steps_that_agrees_with_the_epochs_is_let_through():
    cfg, _ = resolved("epochs=10", "steps=3900")  # e.g. a config whose length was worked out already
    assert cfg.steps == 3900


@pytest.mark.parametrize("given, message", [
    (["epochs=10", "steps=500"], "steps=500 and epochs=10 both say how long: give one of them (epochs=10 makes "
                                 "steps=3900 here)"),
    (["warmup_epochs=1", "warmup_steps=10"], "warmup_steps=10 and warmup_epochs=1 both say how long"),
    (["eval_every_epochs=1", "eval_every=7"], "eval_every=7 and eval_every_epochs=1 both say how long"),
])
def test_a_length_given_twice_is_refused(given, message):
    with pytest.raises(UserError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        resolved(*given)


def test_an_epoch_smaller_than_a_batch_is_refused():
    with pytest.raises(UserError, match="an epoch of 100 examples holds no whole batch of 128 "):
        resolved("epochs=1", items=100)
    with pytest.raises(UserError, match="make no whole step of grad_accum=4"):
        resolved("epochs=1", "batch_size=10", "grad_accum=4", items=30)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return write_imagefolder(tmp_path_factory.mktemp("epochs") / "images", per_class=8)


def without_length(args: list[str]) -> list[str]:
    return [a for a in args if not a.startswith(("steps=", "warmup_steps=", "eval_every="))]


def one_line(argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as stop:
        run_cli(train.main, argv)
    return stop.value.code, capsys.readouterr().err


def test_a_vit_run_in_epochs_trains_that_many_steps_and_records_them(images, tmp_path):
    """16 training images, 2 held out for validation: 14 // 4 = 3 batches an epoch, 3 epochs = 9 steps."""
    run_dir = tmp_path / "run"
    out = io.StringIO()
    with redirect_stdout(out):
        run_cli(train.main, without_length(image_args(images, run_dir, "epochs=3", "warmup_epochs=1",
                                                      "eval_every_epochs=2", "plots=false")))
    assert "9 steps = 3 epochs of 3 steps (14 examples an epoch, batches of 4)" in out.getvalue()
    recorded = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert (recorded["steps"], recorded["warmup_steps"], recorded["eval_every"], recorded["epochs"]) == (9, 3, 6, 3)
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("split") != "test"] == [6, 9]


@pytest.mark.parametrize("extra, message", [
    (["epochs=3"], "error: steps=2 and epochs=3 both say how long: give one of them (epochs=3 makes steps=9 here)"),
    (["warmup_epochs=1"], "error: warmup_steps=1 and warmup_epochs=1 both say how long"),
])
def test_epochs_beside_steps_on_the_command_line_is_one_line(images, tmp_path, capsys, extra, message):
    code, err = one_line(image_args(images, tmp_path / "run", *extra), capsys)
    assert code == 2 and err.startswith(message) and err.count("\n") == 1, err
    assert not (tmp_path / "run" / "config.yaml").exists()


@pytest.mark.parametrize("key", ["epochs", "warmup_epochs", "eval_every_epochs"])
def test_charlm_has_no_epochs(tmp_path, capsys, key):
    corpus = write_line_corpus(tmp_path / "corpus.txt")
    code, err = one_line(tiny_charlm_args(corpus, tmp_path / "run", f"{key}=2"), capsys)
    target = {"epochs": "steps", "warmup_epochs": "warmup_steps", "eval_every_epochs": "eval_every"}[key]
    assert code == 2
    assert err == f"error: task=charlm has no epochs (random windows of a text): give {target}= instead of {key}=\n"
    assert not (tmp_path / "run").exists()
