"""Faults with many processes (2 gloo processes on the CPU, through python -m multitx.launch):
a rank killed mid-run stops the other at once with one line and leaves the last complete
checkpoint resumable; SIGTERM to the launcher saves once and exits 143; a run checkpointed
on 2 processes resumes on 1, and the reverse, from the same data position."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from multitx.engine import checkpoint
from multitx.engine.run_setup import check_same_global_batch
from multitx.engine.runtime import Runtime
from multitx.engine.sharded_checkpoint import is_sharded
from multitx.errors import UserError
from tests.conftest import REPO, tiny_charlm_args, write_line_corpus
from tests.test_engine import train_in_process, weights

COMMON = ["steps=8", "eval_every=3", "device=cpu", "show_tokens=0", "optimizer=adamw"]
KILLABLE = ["task._target_=tests.engine_helpers.KilledCharLM"]


def launch(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "multitx.launch", "--standalone", "--nproc_per_node=2",
                             "-m", "multitx.train", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def single_process(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # as launch()
    return subprocess.run([sys.executable, "-m", "multitx.train", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=240)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """8 steps in one process at batch 8: what every split of the run must reach."""
    tmp = tmp_path_factory.mktemp("ddp_faults")
    corpus = tmp / "corpus.txt"
    write_line_corpus(corpus)
    train_in_process(*tiny_charlm_args(corpus, tmp / "reference", *COMMON, "batch_size=8"))
    return corpus, tmp / "reference"


def assert_same_weights(run_a: Path, run_b: Path, tolerance: float = 1e-5) -> None:
    a, b = weights(run_a), weights(run_b)
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= tolerance


def test_a_killed_rank_stops_the_other_with_one_line_and_the_run_resumes_on_one_process(reference, tmp_path):
    corpus, ref = reference
    run_dir = tmp_path / "run"
    process = launch(*tiny_charlm_args(corpus, run_dir, *COMMON, "batch_size=4", *KILLABLE, "+kill_at=5",
                                       "+kill_rank=1"))
    start = time.time()
    _, err = process.communicate(timeout=180)
    assert process.returncode == 1, err[-3000:]
    assert "multitx.launch: process 1 " in err and "was killed by SIGKILL" in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("error: process 0 of 2 lost the others")]
    assert len(lines) == 1, err[-3000:]
    assert "at step 5" in lines[0] and "step_0000003 is intact: continue with resume=auto" in lines[0]
    assert "Traceback" not in err
    assert time.time() - start < 120, "the survivor gives up at once, not after a timeout"

    last = checkpoint.latest(run_dir)
    assert last.name == "step_0000003"
    checkpoint.verify(last)
    # Resumed on one process with the same global batch, it ends where the uninterrupted run ends.
    train_in_process(*tiny_charlm_args(corpus, run_dir, *COMMON, "batch_size=8", "resume=auto"))
    assert_same_weights(ref, run_dir)


def test_a_run_checkpointed_on_one_process_resumes_on_two(reference, tmp_path):
    corpus, ref = reference
    run_dir = tmp_path / "run"
    killed = single_process(*tiny_charlm_args(corpus, run_dir, *COMMON, "batch_size=8", *KILLABLE, "+kill_at=5"))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert checkpoint.latest(run_dir).name == "step_0000003"
    process = launch(*tiny_charlm_args(corpus, run_dir, *COMMON, "batch_size=4", "resume=auto"))
    _, err = process.communicate(timeout=180)
    assert process.returncode == 0, err[-3000:]
    assert_same_weights(ref, run_dir)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_sigterm_to_the_launcher_saves_one_checkpoint_and_exits_143(reference, tmp_path, strategy):
    """Under FSDP the one checkpoint is sharded: each process writes its part, process 0 the rest."""
    corpus, _ = reference
    run_dir = tmp_path / "run"
    process = launch(*tiny_charlm_args(corpus, run_dir, "steps=100000", "eval_every=100000", "device=cpu",
                                       "show_tokens=0", "batch_size=4", f"strategy={strategy}"))
    deadline = time.time() + 120
    while not (run_dir / "steps.jsonl").exists() or not (run_dir / "steps.jsonl").read_text():
        assert time.time() < deadline and process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    saved = checkpoint.step_dirs(run_dir / "checkpoints")
    assert len(saved) == 1, "one checkpoint, written once by rank 0"
    assert is_sharded(saved[0]) == (strategy == "fsdp")
    checkpoint.verify(saved[0])
    step = checkpoint.load_state(saved[0])["step"]
    assert out.count(f"stopped at step {step} by signal 15") == 1
    assert checkpoint.load_state(saved[0])["processes"] == 2


def test_resuming_on_another_number_of_processes_keeps_the_global_batch(tmp_path):
    state = {"processes": 2, "batch_size": 4}
    one = Runtime(device=None, autocast_dtype=None, rank=0, world_size=1)
    check_same_global_batch(state, OmegaConf.create({"batch_size": 8}), one, tmp_path)
    with pytest.raises(UserError, match=r"trained on 2 processes of batch_size=4 \(global batch 8\); on 1 give "
                                        r"batch_size=8"):
        check_same_global_batch(state, OmegaConf.create({"batch_size": 4}), one, tmp_path)
    three = Runtime(device=None, autocast_dtype=None, rank=0, world_size=3)
    with pytest.raises(UserError, match="on 3 give a batch_size that keeps it"):
        check_same_global_batch(state, OmegaConf.create({"batch_size": 4}), three, tmp_path)
