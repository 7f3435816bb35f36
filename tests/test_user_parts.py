"""A text tokenizer and a metric logger of the user's own, each one registered class in the user's package
(tests/helpers_user_data.py), chosen from the command line as the built-in ones are: data.tokenizer=NAME with
data.module=PACKAGE, loggers=[NAME] with loggers_module=PACKAGE."""

import csv
import json

import pytest

import multitx
from tests.conftest import registries_restored, run_here, tiny_charlm_args, torch_threads

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread each, no fight for the cores


@pytest.fixture(autouse=True)
def fresh_registries():
    """The commands run in this process: each test starts from the registries of a fresh one (no test_bytes, no
    test_csv), and what the run's modules registered is gone again after it."""
    with registries_restored("tests.helpers_user_data", builtin_only=True):
        yield


def tiny_lm_args(corpus, run_dir, *extra: str) -> list[str]:
    """The tiny char LM's settings on task=lm, the language model that takes any tokenizer."""
    return ["task=lm" if arg == "task=charlm" else arg for arg in tiny_charlm_args(corpus, run_dir, *extra)]


@pytest.fixture(scope="module")
def byte_run(tmp_path_factory):
    """A tiny language model trained on UTF-8 bytes by the user's tokenizer, logging to TensorBoard and the user's
    CSV."""
    root = tmp_path_factory.mktemp("user_parts")
    corpus = root / "corpus.txt"
    corpus.write_text("naïve café, Grüße — to be or not to be\n" * 40, encoding="utf-8")
    run_dir = root / "run"
    with torch_threads(1), registries_restored("tests.helpers_user_data"):
        result = run_here("multitx.train", *tiny_lm_args(corpus, run_dir, "steps=4", "eval_every=2"),
                          "data.module=tests.helpers_user_data", "data.tokenizer=test_bytes",
                          "loggers=[tensorboard,test_csv]", "loggers_module=tests.helpers_user_data", "device=cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    return run_dir


def test_a_user_tokenizer_makes_the_tokens_and_is_saved_with_the_run(byte_run):
    assert json.loads((byte_run / "vocab.json").read_text()) == {"kind": "test_bytes"}
    run = multitx.load(byte_run, trust_code=True)
    assert run.model.config.vocab_size == 256
    assert run.vocab.decode(run.vocab.encode("Grüße")) == "Grüße"


def test_a_user_logger_gets_every_scalar_and_picture_the_run_logs(byte_run):
    rows = list(csv.reader((byte_run / "scalars.csv").open(encoding="utf-8")))
    names = {name for _, name, _ in rows}
    assert {"train/loss_step", "val/loss"} <= names
    assert sorted({int(step) for step, name, _ in rows if name == "train/loss_step"}) == [1, 2, 3, 4]
    images = list(csv.reader((byte_run / "images.csv").open(encoding="utf-8")))
    assert images and all(int(h) > 0 and int(w) > 0 for _, _, h, w in images)
    assert list((byte_run / "tensorboard").iterdir()), "the built-in logger still writes beside it"


def test_the_run_folder_names_the_module_so_sampling_needs_trust(byte_run):
    refused = run_here("multitx.sample", f"run_dir={byte_run}", "max_new_tokens=5")
    assert refused.returncode == 2 and "trust_code=true" in refused.stderr
    sampled = run_here("multitx.sample", f"run_dir={byte_run}", "max_new_tokens=5", "prompt=na", "trust_code=true")
    assert sampled.returncode == 0, sampled.stderr[-2000:]
    assert sampled.stdout.startswith("na")


@pytest.mark.parametrize(("override", "said"), [
    ("data.tokenizer=nope", "error: unknown text tokenizer 'nope'; registered: bpe, char"),
    ("loggers=[nope]", "error: unknown metric logger 'nope'; registered: mlflow, tensorboard, wandb"),
])
def test_an_unknown_name_is_one_line_listing_the_registered_ones(tmp_path, small_corpus, override, said):
    refused = run_here("multitx.train", *tiny_lm_args(small_corpus, tmp_path / "run"), override, "device=cpu")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[0].startswith(said), refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
