"""Every benchmark takes its options the one way the tools do: key=value over the settings of its
`<Name>Args` (multitx.cli.parse_args), `--help` for its docstring and keys, and a wrong key or value
refused in one line, exit 2, before anything runs. All in-process: each costs an import and a parse."""

import importlib
import io
from contextlib import redirect_stdout
from dataclasses import is_dataclass

import pytest

from multitx.benchmarks import own_and_training
from multitx.benchmarks.charlm import CharLMArgs
from multitx.cli import run_cli
from multitx.config.settings import defaults_of
from tests.conftest import REPO

FOLDER = REPO / "multitx" / "benchmarks"
BENCHMARKS = sorted(p.stem for p in FOLDER.glob("*.py") if "\ndef main(" in p.read_text(encoding="utf-8"))


def benchmark(name: str):
    return importlib.import_module(f"multitx.benchmarks.{name}")


def keys_of(module) -> type:
    """The module's own `<Name>Args` dataclass: its keys."""
    found = [value for name, value in vars(module).items() if name.endswith("Args") and is_dataclass(value)
             and value.__module__ == module.__name__]
    assert len(found) == 1, f"{module.__name__} defines one <Name>Args dataclass of settings, not {found}"
    return found[0]


def test_every_benchmark_is_found_and_none_parses_argparse_flags():
    assert {"charlm", "gpu", "soak", "subword", "text_prep", "vit_data", "vit_fashion", "vit_vs_timm", "vs_nanogpt",
            "caption_shapes"} <= set(BENCHMARKS)
    assert not {"budget", "peaks"} & set(BENCHMARKS), "helpers, not benchmarks"
    assert [p.name for p in FOLDER.glob("*.py") if "argparse" in p.read_text(encoding="utf-8")] == []


@pytest.mark.parametrize("name", BENCHMARKS)
def test_a_benchmark_answers_help_with_its_docstring_and_every_key(name):
    module = benchmark(name)
    shown = io.StringIO()
    with redirect_stdout(shown), pytest.raises(SystemExit) as stop:
        module.main(["--help"])
    assert stop.value.code == 0
    text = shown.getvalue()
    assert text.startswith(module.__doc__.strip().splitlines()[0])
    listed = [line.split()[0] for line in text.split("\nkeys (key=value):\n")[1].splitlines()]
    assert listed == list(defaults_of(keys_of(module)))
    assert "History\n---" not in text and "history\n---" not in text, "the tuning history is for readers of the source"


@pytest.mark.parametrize("name", BENCHMARKS)
def test_a_benchmark_refuses_an_unknown_key_in_one_line_before_anything_runs(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        run_cli(benchmark(name).main, ["no_such_key=1"])
    out, err = capsys.readouterr()
    assert stop.value.code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "no_such_key" in err, err
    assert out == "" and list(tmp_path.iterdir()) == [], "nothing ran, nothing was written"


@pytest.mark.parametrize("name, argv, message", [
    ("charlm", ["only=nanogpt"], "only must be one of nanogpt-cpu, recipe or null, got 'nanogpt'"),
    ("charlm", ["--only", "recipe"], "unknown argument '--only'; the keys are: only, data_dir, device, budget"),
    ("gpu", ["only=[mfu,gpt]"], "only must be a part or a list of them ([mfu,vit]), from babygpt, mfu, vit, "),
    ("subword", ["vocab=[100]"], "vocab must be a list of one or more numbers, each whole number at least 258"),
    ("text_prep", ["sizes=[1,0]"], "sizes must be a list of one or more numbers, each number positive"),
    ("text_prep", ["workers=all"], "workers must be auto or a whole number at least 0, got 'all'"),
    ("vit_data", ["source=cifar"], "source must be one of random, real, got 'cifar'"),
    ("vit_data", ["workers=[0,-2]"], "workers must be a list of one or more numbers, each whole number at least 0"),
    ("vit_fashion", ["recipe=tpu"], "recipe must be one of cpu, gpu, got 'tpu'"),
    ("vit_vs_timm", ["device=mps"], "device must be one of auto, cpu, cuda, got 'mps'"),
    ("vs_nanogpt", ["steps=100"], "steps must be at least 250, got 100"),
    ("vs_nanogpt", [], "say which nanoGPT checkout to run: nanogpt=DIR"),
    ("soak", ["steps=1"], "steps must be at least 2, got 1"),
    ("caption_shapes", ["beam=0"], "beam must be at least 1, got 0"),
])
def test_a_bad_value_is_one_line_before_anything_runs(name, argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        run_cli(benchmark(name).main, argv)
    out, err = capsys.readouterr()
    assert stop.value.code == 2 and err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert out == "" and list(tmp_path.iterdir()) == []


def test_a_benchmark_that_trains_keeps_its_own_keys_and_passes_the_rest_on():
    ours, training = own_and_training(["only=recipe", "lr=3e-3", "--debug", "model.trunk.dim=64", "budget=60",
                                       "+data.module=mine"], CharLMArgs)
    assert ours == ["only=recipe", "--debug", "budget=60"]
    assert training == ["lr=3e-3", "model.trunk.dim=64", "+data.module=mine"]
    assert own_and_training(["lr=1e-3", "--help"], CharLMArgs) == (["--help"], [])
