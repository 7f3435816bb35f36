"""One trainer per run folder: a second is refused at once; a killed run's lock is taken over."""

import os
import signal

import pytest

from multitx import train
from multitx.cli import load_config, run_cli
from multitx.engine import checkpoint
from multitx.engine.run_lock import LOCK_FILE, RunLock
from multitx.engine.trainer import train as train_run
from multitx.errors import UserError
from tests.conftest import tiny_charlm_args
from tests.test_engine import resume_args, start_training, wait_for_checkpoint


def checkpoint_names(run_dir) -> set[str]:
    """What checkpoints/ holds, less the hidden temporary files of an atomic write still under way
    (the first trainer keeps writing while the second is refused)."""
    return {p.name for p in (run_dir / "checkpoints").iterdir() if not p.name.startswith(".")}


def test_a_second_trainer_in_the_same_run_folder_is_refused_at_once(tmp_path, small_corpus, capsys):
    run_dir = tmp_path / "run"
    first = start_training(*resume_args(small_corpus, run_dir, "steps=100000"))
    try:
        wait_for_checkpoint(run_dir, first)
        before = checkpoint_names(run_dir)
        with pytest.raises(SystemExit) as stop:
            run_cli(train.main, resume_args(small_corpus, run_dir, "steps=100000", "resume=auto"))
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err.count("\n") == 1, err
        assert f"is being trained by pid {first.pid} on " in err and "choose another run_dir" in err
        assert first.poll() is None, "the first trainer goes on"
        assert before <= checkpoint_names(run_dir), "the refused trainer removed none of the first one's files"
    finally:
        first.kill()
        first.wait()


def test_the_lock_of_a_killed_trainer_is_taken_over(tmp_path, small_corpus, capsys):
    run_dir = tmp_path / "run"
    killed = start_training(*resume_args(small_corpus, run_dir, "steps=100000"))
    wait_for_checkpoint(run_dir, killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert f"pid {killed.pid} " in (run_dir / LOCK_FILE).read_text(), "a kill leaves the file naming the holder"

    run_cli(train.main, tiny_charlm_args(small_corpus, run_dir, "resume=auto", "model.trunk.dim=64",
                                         "model.trunk.dropout=0.1", "steps=12", "eval_every=10", "show_tokens=0"))
    out = capsys.readouterr().out
    assert f"named pid {killed.pid} " in out and "which is gone" in out and "takes the folder over" in out
    assert checkpoint.load_state(checkpoint.latest(run_dir))["step"] == 12
    assert (run_dir / LOCK_FILE).read_text() == "", "a clean exit leaves the lock free and empty"


def test_the_lock_names_its_holder_and_is_free_after_release(tmp_path):
    lock = RunLock(tmp_path / "run").acquire()
    assert (tmp_path / "run" / LOCK_FILE).read_text().startswith(f"pid {os.getpid()} on ")
    lock.release()
    RunLock(tmp_path / "run").acquire().release()


def test_a_run_refused_on_bad_input_leaves_no_folder_behind(tmp_path, small_corpus):
    run_dir = tmp_path / "new_run"
    with pytest.raises(UserError, match="fewer than context"):
        train_run(load_config(tiny_charlm_args(small_corpus, run_dir, "model.context=100000")))
    assert not run_dir.exists()
