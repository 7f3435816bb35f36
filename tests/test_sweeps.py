"""`multitx train` as Hydra users run it: a sweep with -m makes one run per combination and a table of
them all; --config-dir adds a user's own task and data YAML; --cfg job shows what would run."""

import csv

import pytest

from multitx.cli import run_cli
from multitx.train import main
from tests.conftest import tiny_charlm_args, write_line_corpus

FAST = ["steps=2", "eval_every=2", "eval_batches=1", "show_tokens=0", "progress=false"]


def train(argv: list[str]) -> None:
    run_cli(main, argv)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A 2 x 2 sweep: lr in {1e-3, 3e-3}, batch_size in {4, 8}."""
    tmp = tmp_path_factory.mktemp("sweep")
    corpus = write_line_corpus(tmp / "corpus.txt")
    sweep_dir = tmp / "lr_batch"
    train(["-m", *tiny_charlm_args(corpus, sweep_dir, *FAST), "lr=1e-3,3e-3", "batch_size=4,8"])
    return sweep_dir


def test_a_two_by_two_sweep_makes_four_runs_each_in_its_own_folder(sweep):
    for job in range(4):
        run = sweep / str(job)
        assert (run / "config.yaml").is_file() and (run / "checkpoints").is_dir(), sorted(p.name for p in run.iterdir())
    assert not (sweep / "4").exists()


def test_the_sweep_ends_with_a_table_of_every_runs_overrides_and_final_metrics(sweep):
    rows = list(csv.DictReader((sweep / "summary.csv").open(encoding="utf-8")))
    assert [row["run"] for row in rows] == ["0", "1", "2", "3"]
    assert sorted((float(r["lr"]), int(r["batch_size"])) for r in rows) == [(1e-3, 4), (1e-3, 8), (3e-3, 4), (3e-3, 8)]
    for row in rows:
        assert row["outcome"] == "completed" and float(row["val_loss"]) > 0 and int(row["step"]) == 2
        config = (sweep / row["run"] / "config.yaml").read_text(encoding="utf-8")
        assert f"batch_size: {row['batch_size']}\n" in config  # the row is the run it names
    markdown = (sweep / "summary.md").read_text(encoding="utf-8")
    header = markdown.splitlines()[2]  # under "every run: ..." and a blank line: only the swept keys
    assert header.startswith("| run | ") and {"lr", "batch_size"} < set(header.split(" | "))
    assert "every run: task=charlm" in markdown and "| data.path |" not in markdown


def test_every_combination_is_checked_before_the_first_run_starts(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train(["-m", "task=charlm", f"run_dir={tmp_path / 'sweep'}", "steps=2,x"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "error: steps must be a whole number, got 'x'"
    assert not (tmp_path / "sweep").exists()


def test_a_sweeper_that_is_not_installed_is_one_line_naming_the_plugin(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train(["-m", "hydra/sweeper=nosuch", "lr=interval(1e-3,1e-2)", f"run_dir={tmp_path / 'sweep'}"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == ("error: unknown hydra/sweeper 'nosuch'; choose one of: basic (a Hydra plugin "
                                       "adds its own: pip install hydra-nosuch-sweeper)\n")
    assert not (tmp_path / "sweep").exists()


@pytest.fixture
def config_dir(tmp_path):
    """A user's own recipe (task/quick.yaml, over the built-in charlm) and dataset (data/lines.yaml)."""
    corpus = write_line_corpus(tmp_path / "lines.txt")
    (tmp_path / "conf" / "task").mkdir(parents=True)
    (tmp_path / "conf" / "data").mkdir()
    (tmp_path / "conf" / "task" / "quick.yaml").write_text(
        "# @package _global_\ndefaults:\n  - charlm\n  - override /data: lines\n  - _self_\n"
        "steps: 3\neval_every: 3\neval_batches: 1\nshow_tokens: 0\nbatch_size: 4\nprogress: false\n"
        "model:\n  context: 16\n  trunk: {dim: 16, layers: 1, heads: 2}\n", encoding="utf-8")
    (tmp_path / "conf" / "data" / "lines.yaml").write_text(
        f"defaults:\n  - textfile\n  - _self_\npath: {corpus}\n", encoding="utf-8")
    return tmp_path / "conf"


def test_a_users_task_and_data_yaml_in_config_dir_train(config_dir, tmp_path):
    run_dir = tmp_path / "run"
    train(["--config-dir", str(config_dir), "task=quick", f"run_dir={run_dir}", f"data_dir={tmp_path / 'cache'}"])
    config = (run_dir / "config.yaml").read_text(encoding="utf-8")
    assert "steps: 3\n" in config and "lines.txt" in config and "dim: 16" in config
    assert (run_dir / "checkpoints").is_dir()


def test_cfg_job_prints_the_composed_config_and_trains_nothing(config_dir, tmp_path, capsys):
    train(["--cfg", "job", "--config-dir", str(config_dir), "task=quick", "steps=7", f"run_dir={tmp_path / 'r'}"])
    shown = capsys.readouterr().out
    assert "steps: 7\n" in shown and "lines.txt" in shown and "name: charlm" in shown
    assert not (tmp_path / "r").exists()


def test_an_unknown_recipe_names_the_ones_there_are_including_the_users(config_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train(["--config-dir", str(config_dir), "task=quik"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown task 'quik'") and "quick" in err and "charlm" in err and err.count("\n") == 1


def test_help_shows_the_users_recipe_values(config_dir, capsys):
    train(["--help", "--config-dir", str(config_dir), "task=quick"])
    out = capsys.readouterr().out
    assert "-m/--multirun" in out
    assert [line.split()[1] for line in out.splitlines() if line.split()[:1] == ["steps"]] == ["3"]


def test_hydras_shell_completion_completes_the_keys_of_multitx_train(monkeypatch, capsys):
    from multitx import commands

    monkeypatch.setenv("COMP_LINE", "multitx train task=ch")
    monkeypatch.setenv("COMP_POINT", str(len("multitx train task=ch")))
    commands.main(["-sc", "query=bash"])
    assert capsys.readouterr().out.split() == ["task=charlm"]
