"""`python -m multitx.train` and `python -m multitx.sample`, run as a user runs them."""

import json

import pytest

from multitx import sample, train
from multitx.benchmarks import caption_shapes
from multitx.cli import parse_args, run_cli
from multitx.engine.checkpoint import latest, load_state
from multitx.errors import UserError
from tests.conftest import run_module, tiny_charlm_args


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("charlm")
    corpus = tmp / "corpus.txt"
    corpus.write_text("ROMEO: speak the sword, good romeo!\nJULIET: hold the rose, good juliet!\n" * 60,
                      encoding="utf-8")
    run_dir = tmp / "run"
    result = run_module("multitx.train", *tiny_charlm_args(corpus, run_dir), "loggers=[tensorboard]")
    assert result.returncode == 0, result.stderr
    return run_dir, corpus


def one_line_error(main, argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, argv)
    return exit_info.value.code, capsys.readouterr().err


def test_training_leaves_checkpoints_and_metrics(trained_run):
    run_dir, _ = trained_run
    evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [15, 30]
    assert {"step", "train_loss", "val_loss", "tokens_per_s"} <= evals[-1].keys()
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    assert list((run_dir / "tensorboard").iterdir()), "TensorBoard events are written"
    assert (run_dir / "vocab.json").exists() and (run_dir / "config.yaml").exists()
    ckpt = latest(run_dir)
    assert ckpt.name == "step_0000030"
    assert {p.name for p in ckpt.iterdir()} == {"model.safetensors", "state.pt", "config.yaml", "manifest.json",
                                                "vocab.json"}  # each checkpoint folder is complete alone
    assert load_state(ckpt)["step"] == 30  # loads with weights_only=True


def test_sampling_is_reproducible_from_the_seed(trained_run):
    run_dir, _ = trained_run
    args = [f"run_dir={run_dir}", "prompt=ROMEO:", "max_new_tokens=40", "seed=7"]
    first, second = run_module("multitx.sample", *args), run_module("multitx.sample", *args)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("ROMEO:") and len(first.stdout.rstrip("\n")) == len("ROMEO:") + 40
    assert first.stdout == second.stdout, "same seed, same text"


def test_sampling_seeds_differ(trained_run, capsys):
    run_dir, _ = trained_run
    texts = []
    for seed in (1, 2):
        run_cli(sample.main, [f"run_dir={run_dir}", "prompt=RO", "max_new_tokens=60", f"seed={seed}"])
        texts.append(capsys.readouterr().out)
    assert texts[0] != texts[1]


def test_unknown_config_key_is_one_clear_line(tmp_path):
    result = run_module("multitx.train", "task=charlm", "model.layerz=3", f"run_dir={tmp_path / 'r'}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: unknown config key 'model.layerz'; see the keys with `python -m multitx.train --cfg`, "
        "or add a new one with +model.layerz=VALUE"]
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv, message", [
    (["steps=many"], "error: steps must be a whole number, got 'many'"),
    (["compile=maybe"], "error: compile must be true or false, got 'maybe'"),
    (["task=charlmm"], "error: unknown task 'charlmm'; choose one of: "),
    (["steps=0"], "error: steps must be at least 1 or null, got 0"),
    (["device=tpu"], "error: device must be one of auto, cpu, cuda, cuda:N, mps, got 'tpu'"),
    (["data=textfile"], "error: data=textfile needs a file: add data.path=FILE"),
])
def test_bad_training_arguments_are_one_clear_line(argv, message, tmp_path, capsys):
    code, err = one_line_error(train.main, [*argv, f"run_dir={tmp_path / 'r'}", f"data_dir={tmp_path}"], capsys)
    assert code == 2
    assert err.startswith(message) and err.count("\n") == 1


def test_unknown_prompt_character_is_one_clear_line(trained_run, capsys):
    run_dir, _ = trained_run
    code, err = one_line_error(sample.main, [f"run_dir={run_dir}", "prompt=ROMEO§"], capsys)
    assert code == 2
    assert err.startswith("error: the prompt has characters this model never saw in training ('§')")


def test_unknown_sample_argument_is_one_clear_line(trained_run, capsys):
    run_dir, _ = trained_run
    code, err = one_line_error(sample.main, [f"run_dir={run_dir}", "temprature=0.5"], capsys)
    assert code == 2 and "unknown argument 'temprature=0.5'" in err


def test_a_run_folder_with_checkpoints_is_never_overwritten_by_accident(trained_run, capsys):
    run_dir, corpus = trained_run
    before = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    code, err = one_line_error(train.main, tiny_charlm_args(corpus, run_dir, "steps=2"), capsys)
    assert code == 2 and "already has checkpoints; continue it with resume=auto" in err
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == before


def test_run_dir_is_required_by_tools_that_read_a_run_and_optional_for_those_that_make_one():
    with pytest.raises(UserError, match="say which run to use: run_dir=DIR"):
        parse_args(["prompt=hi"], sample.SampleArgs)
    assert parse_args([], caption_shapes.CaptionShapesArgs)["run_dir"] == ""  # makes runs/caption_shapes/<time>


def test_the_caption_benchmark_passes_training_settings_on_and_a_wrong_one_is_one_line(capsys, tmp_path):
    code, err = one_line_error(caption_shapes.main, [f"run_dir={tmp_path / 'run'}", "model.decoder.layerz=3"], capsys)
    assert code == 2 and "unknown config key 'model.decoder.layerz'" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()  # refused before anything was generated or trained


def test_a_run_written_before_model_activation_existed_reads_as_gelu_and_resumes_with_it(tmp_path):
    from multitx.engine.checkpoint import check_resumable, read_config

    (tmp_path / "config.yaml").write_text("task: {name: charlm}\nmodel: {dim: 32, positions: rotary}\n")
    assert read_config(tmp_path).model.trunk.activation == "gelu"
    now = read_config(tmp_path)  # today's shape: model.trunk.*
    check_resumable(tmp_path, now)
    now.model.trunk.activation = "relu2"
    with pytest.raises(UserError, match="model.trunk.activation: gelu in the checkpoint, relu2 now"):
        check_resumable(tmp_path, now)
