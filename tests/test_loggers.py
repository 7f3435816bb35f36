"""loggers=[tensorboard,wandb,mlflow]: one tiny run logs to all three, then resumes, and each tool reads its own
record back with its own reader: TensorBoard's EventAccumulator, W&B's `wandb leet inspect` on the offline
transaction log (.wandb), MLflow's MlflowClient on the file store. Nothing reaches the network: W&B is offline and
MLflow writes ./mlruns of the folder training starts in (its default, MLFLOW_TRACKING_URI unset)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from multitx.cli import load_config, run_cli
from multitx.engine.loggers import LOGGERS, flat_params, logger_classes
from multitx.engine.trainer import train
from multitx.errors import UserError
from multitx.train import main
from tests.conftest import tiny_charlm_args

STEPS, RESUMED_STEPS = 4, 6  # evaluations (and the loss plot) at steps 2 and 4, then at 6 after the resume
QUIET_OFFLINE_WANDB = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off",
                       "WANDB_DISABLE_GIT": "true", "WANDB_DISABLE_CODE": "true", "WANDB_ERROR_REPORTING": "false",
                       "WANDB_X_DISABLE_STATS": "true", "WANDB_X_DISABLE_MACHINE_INFO": "true"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The run folder after its first part (4 steps, trained in folder tmp) and after its resume to 6 steps;
    the first part's tracker ids and W&B files."""
    tmp = tmp_path_factory.mktemp("loggers")
    corpus = tmp / "corpus.txt"
    corpus.write_text("To be, or not to be, that is the question.\n" * 40, encoding="utf-8")
    run_dir = tmp / "run"
    args = tiny_charlm_args(corpus, run_dir, f"steps={STEPS}", "eval_every=2", "eval_batches=1", "device=cpu",
                            "loggers=[tensorboard,wandb,mlflow]")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        for key in [key for key in os.environ if key.startswith(("WANDB_", "MLFLOW_"))]:
            mp.delenv(key)  # no W&B or MLflow setting of this machine leaks in
        mp.setenv("MLFLOW_ALLOW_FILE_STORE", "")
        mp.delenv("MLFLOW_ALLOW_FILE_STORE")  # unset for the runs; the logger's opt-in is undone afterwards
        for key, value in {**QUIET_OFFLINE_WANDB, "WANDB_CONFIG_DIR": str(tmp / "wandb_config"),
                           "WANDB_CACHE_DIR": str(tmp / "wandb_cache"), "WANDB_DATA_DIR": str(tmp / "wandb_data"),
                           "MLFLOW_EXPERIMENT_NAME": "multitx-test"}.items():
            mp.setenv(key, value)
        mp.chdir(tmp)
        torch.set_num_threads(1)
        try:
            train(load_config(args))
            first = {"mlflow_id": (run_dir / "mlflow_run_id.txt").read_text().strip(),
                     "wandb_id": (run_dir / "wandb_run_id.txt").read_text().strip(),
                     "wandb_files": sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))}
            train(load_config([*args, f"steps={RESUMED_STEPS}", "resume=auto"]))
        finally:
            torch.set_num_threads(threads)
    return tmp, run_dir, first


def wandb_records(path) -> list[dict]:
    """The records of a .wandb transaction log, read by W&B's own reader."""
    result = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(path)],
                            capture_output=True, text=True, timeout=60, env={**os.environ, **QUIET_OFFLINE_WANDB})
    assert result.returncode == 0, result.stderr[-2000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_tensorboard_reads_every_step_the_evaluations_and_the_loss_plot(runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run_dir, _ = runs
    board = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    board.Reload()
    assert [event.step for event in board.Scalars("train/loss_step")] == list(range(1, RESUMED_STEPS + 1))
    assert [event.step for event in board.Scalars("val/loss")] == [2, 4, 6]
    assert [event.step for event in board.Images("plots/loss")] == [2, 4, 6]
    assert all(event.width > 0 and event.height > 0 for event in board.Images("plots/loss"))


def test_wandb_keeps_the_run_offline_under_run_dir_and_a_resume_goes_on_in_the_same_run(runs):
    _, run_dir, first = runs
    (first_log,) = first["wandb_files"]
    logs = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 2 and first_log in logs, "W&B's files are in RUN_DIR/wandb, one offline run per part"
    assert {log.name for log in logs} == {f"run-{first['wandb_id']}.wandb"}, "the resumed part has the same id"
    rows = {}
    for log in logs:
        records = wandb_records(log)
        (run,) = [r["run"] for r in records if r["type"] == "run"]
        assert (run["project"], run["display_name"], run["run_id"]) == ("multitx", "run", first["wandb_id"])
        assert run["resume"] is True
        config = run["config"]["update"]
        assert config["steps"] in (STEPS, RESUMED_STEPS) and config["model"]["trunk"]["dim"] == 32
        for record in records:
            if record["type"] == "history":
                rows[record["history"]["step"]["num"]] = record["history"]["item"]
    assert sorted(rows) == list(range(1, RESUMED_STEPS + 1))
    assert all(isinstance(row["train/loss_step"], float) and row["_step"] == step for step, row in rows.items())
    for step in (2, 4, 6):
        assert isinstance(rows[step]["val/loss"], float)
        assert rows[step]["plots/loss._type"] == "image-file" and rows[step]["plots/loss.width"] > 0
    image = next(run_dir.glob(f"wandb/offline-run-*/files/{rows[6]['plots/loss.path']}"))
    assert image.stat().st_size == rows[6]["plots/loss.size"]


def test_mlflow_reads_the_metrics_images_and_params_and_a_resume_goes_on_in_the_same_run(runs, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 opens a file store only when asked to
    tmp, run_dir, first = runs
    client = MlflowClient((tmp / "mlruns").as_uri())  # the default store: ./mlruns where training started
    experiment = client.get_experiment_by_name("multitx-test")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == first["mlflow_id"] == (run_dir / "mlflow_run_id.txt").read_text().strip()
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    assert run.data.tags["multitx.run_dir"] == str(run_dir.resolve())
    history = client.get_metric_history(run.info.run_id, "train/loss_step")
    assert sorted(metric.step for metric in history) == list(range(1, RESUMED_STEPS + 1))
    assert sorted(metric.step for metric in client.get_metric_history(run.info.run_id, "val/loss")) == [2, 4, 6]
    images = [artifact.path for artifact in client.list_artifacts(run.info.run_id, "images")]
    for step in (2, 4, 6):
        assert any(path.startswith(f"images/plots~loss+step+{step}+") and path.endswith(".png") for path in images)
    params = run.data.params
    assert params["model.trunk.dim"] == "32" and params["steps"] == str(STEPS), "the params the run began with"
    assert params["loggers"] == '["tensorboard", "wandb", "mlflow"]'


def test_mlflow_params_are_flat_dotted_and_cut_to_mlflow_s_limit():
    params = flat_params({"model": {"trunk": {"dim": 32}}, "betas": [0.9, 0.99], "note": "x" * 9000,
                          "stop_at": None}, 6000)
    assert params == {"model.trunk.dim": "32", "betas": "[0.9, 0.99]", "note": "x" * 6000, "stop_at": "null"}


def test_no_logger_is_chosen_by_default_and_the_built_in_ones_are_registered():
    assert list(load_config(["task=charlm"]).loggers) == []
    assert {"tensorboard", "wandb", "mlflow"} <= set(LOGGERS)


@pytest.mark.parametrize("name", ["tensorboard", "wandb", "mlflow"])
def test_a_logger_whose_package_is_missing_is_one_line_naming_the_extra(name, monkeypatch, small_corpus, capsys):
    tmp_path = small_corpus.parent
    monkeypatch.setitem(sys.modules, name, None)  # as if it were not installed: importing it fails
    with pytest.raises(UserError, match=rf"pip install 'multitx\[{name}\]'"):
        logger_classes([name])
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, tiny_charlm_args(small_corpus, tmp_path / "run", f"loggers=[{name}]"))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err == f"error: loggers=[{name}] needs the {name} package, which is not installed: " \
                  f"pip install 'multitx[{name}]'\n"
    assert not (tmp_path / "run").exists(), "refused before anything was built or written"


def test_an_unknown_logger_is_one_line_listing_the_built_in_ones(small_corpus, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, tiny_charlm_args(small_corpus, small_corpus.parent / "run", "loggers=[tensorboard,wandbb]"))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert err.startswith("error: unknown metric logger 'wandbb'; registered: mlflow, tensorboard, wandb"), err


def test_an_mlflow_store_that_cannot_be_opened_is_one_line(tmp_path, monkeypatch):
    from multitx.engine.loggers import MLflowLogger

    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "store").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "false")  # MLflow 3 refuses a file store chosen without it
    with pytest.raises(UserError, match=r"^loggers=\[mlflow\]: MLflow could not open a run in file:") as refused:
        MLflowLogger(tmp_path, {"steps": 4})
    assert "\n" not in str(refused.value) and "MLFLOW_ALLOW_FILE_STORE" in str(refused.value)
