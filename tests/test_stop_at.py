"""stop_at="METRIC<=VALUE" (or >=) ends a run at the first evaluation that reaches the target;
every evaluation records time_s, the seconds since training started (time-to-target figures)."""

import pytest

from multitx import train
from multitx.cli import run_cli
from multitx.engine.metrics import read_jsonl
from tests.conftest import tiny_charlm_args

pytestmark = pytest.mark.usefixtures("one_thread")


def evaluations(run_dir) -> list[dict]:
    return [row for row in read_jsonl(run_dir / "metrics.jsonl") if row.get("split") != "test"]


def test_a_reached_target_ends_the_run_at_that_evaluation(tmp_path, small_corpus, capsys):
    run_dir = tmp_path / "run"
    run_cli(train.main, tiny_charlm_args(small_corpus, run_dir, "steps=30", "eval_every=10",
                                         "stop_at='val_loss<=1000'"))
    rows = evaluations(run_dir)
    assert [row["step"] for row in rows] == [10], "the first evaluation reaches val_loss <= 1000"
    assert "stop_at val_loss<=1000 reached at step 10" in capsys.readouterr().out
    assert (run_dir / "checkpoints" / "step_0000010").is_dir(), "the evaluation that stops the run is saved"


def test_a_target_not_reached_trains_every_step_and_times_each_evaluation(tmp_path, small_corpus):
    run_dir = tmp_path / "run"
    run_cli(train.main, tiny_charlm_args(small_corpus, run_dir, "steps=30", "eval_every=10",
                                         "stop_at='val_loss<=0.0001'"))
    rows = evaluations(run_dir)
    assert [row["step"] for row in rows] == [10, 20, 30]
    times = [row["time_s"] for row in rows]
    assert 0 < times[0] < times[1] < times[2], times


def test_a_metric_at_least_a_value_stops_as_well(tmp_path, small_corpus):
    run_dir = tmp_path / "run"
    run_cli(train.main, tiny_charlm_args(small_corpus, run_dir, "steps=30", "eval_every=10",
                                         "stop_at='train_loss>=0'"))
    assert [row["step"] for row in evaluations(run_dir)] == [10]


@pytest.mark.parametrize("value, message", [
    ("'val_loss<1.5'", "stop_at must be a metric, <= or >= and a number, e.g. val_loss<=1.47 or null, got "),
    ("'val_loss<=fast'", "stop_at must be a metric, <= or >= and a number"),
    ("val_loss<=1.5", "cannot parse stop_at=val_loss<=1.5: the command line needs <= and >= quoted, as in "
                      "'stop_at=\"val_loss<=1.5\"'"),
    ("'val_bleu>=0.5'", "stop_at names val_bleu, which task=charlm's evaluations do not report (they report "),
])
def test_a_bad_target_is_one_line(value, message, tmp_path, small_corpus, capsys):
    with pytest.raises(SystemExit) as stop:
        run_cli(train.main, tiny_charlm_args(small_corpus, tmp_path / "run", "steps=10", "eval_every=5",
                                             f"stop_at={value}"))
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: " + message), err
