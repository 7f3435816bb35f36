"""The training engine's promises: exact resume, safe checkpoints, signals,
non-finite numbers, and many processes giving what one process gives."""

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from multitx.cli import load_config
from multitx.engine import checkpoint
from multitx.engine.metrics import MetricsLog, read_jsonl
from multitx.engine.trainer import train
from multitx.errors import UserError
from multitx.loading import load
from tests.conftest import REPO, tiny_caption_args, tiny_charlm_args
from tests.helpers_vision import write_cifar10


def train_in_process(*argv: str) -> dict:
    return train(load_config(list(argv)))


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(checkpoint.latest(run_dir) / "model.safetensors")


def optimizer_states(run_dir: Path) -> list[dict]:
    """Per-parameter state of the optimizer, or of each one in a chain (optimizer=muon)."""
    saved = checkpoint.load_state(checkpoint.latest(run_dir))["optimizer"]
    return [optimizer["state"] for optimizer in saved.get("chained", [saved])]


def assert_same_training(run_a: Path, run_b: Path) -> None:
    """Same parameters, same optimizer state, same loss at every step."""
    wa, wb = weights(run_a), weights(run_b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name
    for oa, ob in zip(optimizer_states(run_a), optimizer_states(run_b), strict=True):
        assert oa.keys() == ob.keys()
        for i in oa:
            for key in oa[i]:
                assert torch.equal(oa[i][key], ob[i][key]), (i, key)
    la, lb = read_jsonl(run_a / "steps.jsonl"), read_jsonl(run_b / "steps.jsonl")
    assert [r["step"] for r in la] == [r["step"] for r in lb] == list(range(1, len(la) + 1))
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]


def start_training(*argv: str) -> subprocess.Popen:
    # One thread: these tiny models gain nothing from more, and two processes at once (or a second pytest
    # worker) would otherwise fight over the cores, each thread spinning while it waits for the other.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "multitx.train", *argv], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> None:
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err


@contextmanager
def trained_beside(*argv: str):
    """A reference run in a process of its own, started now and run beside the block (the killed and resumed
    runs it is compared with): finished, exit 0, after the block; killed if the block fails."""
    process = start_training(*argv)
    try:
        yield process
    except BaseException:
        process.kill()
        process.communicate()
        raise
    finish(process)


def wait_for_checkpoint(run_dir: Path, process: subprocess.Popen, timeout: float = 120) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = checkpoint.latest(run_dir)
        if found is not None:
            return found
        if process.poll() is not None:
            raise AssertionError(f"training ended early: {process.communicate()[1]}")
        time.sleep(0.05)
    process.kill()
    raise AssertionError("no checkpoint appeared")


def resume_args(corpus: Path, run_dir: Path, *extra: str) -> list[str]:
    # Deterministic CPU maths; a model large enough that a run takes a few seconds. No plots: they draw no
    # random numbers, and matplotlib would only add to each evaluation.
    return tiny_charlm_args(corpus, run_dir, "steps=120", "eval_every=10", "model.trunk.dim=64", "deterministic=true",
                            "device=cpu", "show_tokens=0", "model.trunk.dropout=0.1", "plots=false", *extra)


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_sigkill_then_resume_gives_exactly_the_uninterrupted_run(tmp_path, small_corpus, optimizer):
    args = [f"optimizer={optimizer}"]
    reference = tmp_path / "reference"  # a clean process, like the killed one: no torch state from other tests
    with trained_beside(*resume_args(small_corpus, reference, *args)):
        killed = tmp_path / "killed"
        process = start_training(*resume_args(small_corpus, killed, *args))
        wait_for_checkpoint(killed, process)
        process.send_signal(signal.SIGKILL)
        process.wait()
        interrupted_at = int(checkpoint.latest(killed).name.split("_")[1])
        assert process.returncode == -signal.SIGKILL and interrupted_at < 120, "the kill must land mid-run"

        finish(start_training(*resume_args(small_corpus, killed, *args), "resume=auto"))
    assert_same_training(reference, killed)


def killed_then_resumed(argv: list[str], kill_at: int) -> None:
    """Train with the process SIGKILLing itself inside step `kill_at`, then resume=auto to the end."""
    process = start_training(*argv, f"+kill_at={kill_at}")
    process.communicate(timeout=300)
    assert process.returncode == -signal.SIGKILL
    finish(start_training(*argv, "+kill_at=0", "resume=auto"))


def test_vit_killed_mid_epoch_with_mixup_resumes_exactly(tmp_path):
    """vit_cifar's own augmentation (AutoAugment, random erasing, Mixup/CutMix, drop-path) draws
    random numbers in a data worker and in the training process; 80 images make 10 steps an epoch,
    so the checkpoint at step 5 and the kill in step 7 both fall mid-epoch, and the run goes on
    across the epoch boundary."""
    write_cifar10(tmp_path / "data", per_batch=16, archive=False)

    def argv(run_dir: Path) -> list[str]:
        return ["task=vit_cifar", f"data_dir={tmp_path / 'data'}", f"run_dir={run_dir}", "batch_size=8",
                "steps=14", "warmup_steps=2", "eval_every=5", "eval_images=8", "model.trunk.dim=24",
                "model.trunk.layers=2", "model.trunk.heads=2", "data.workers=1", "deterministic=true", "device=cpu",
                "progress=false", "task._target_=tests.engine_helpers.KilledViT"]

    with trained_beside(*argv(tmp_path / "reference"), "+kill_at=0"):
        killed_then_resumed(argv(tmp_path / "killed"), kill_at=7)
    assert_same_training(tmp_path / "reference", tmp_path / "killed")


@pytest.mark.parametrize("fusion", ["cross", "prefix"])
def test_captioner_killed_mid_run_resumes_exactly(tmp_path, fusion):
    """Word dropout, the shuffled image order and the choice of captions per image all draw random numbers;
    with either way of joining image and text (model.fusion)."""

    def argv(folder: Path) -> list[str]:
        return tiny_caption_args(folder, "steps=16", "eval_every=6", "deterministic=true", "device=cpu",
                                 "model.decoder.dropout=0.1", "task._target_=tests.engine_helpers.KilledCaptioner",
                                 f"model.fusion={fusion}")

    with trained_beside(*argv(tmp_path / "reference"), "+kill_at=0"):
        killed_then_resumed(argv(tmp_path / "killed"), kill_at=9)
    assert_same_training(tmp_path / "reference" / "run", tmp_path / "killed" / "run")


def test_a_line_torn_by_a_kill_is_cut_off_before_the_resumed_run_appends(tmp_path):
    (tmp_path / "steps.jsonl").write_text('{"step": 1, "loss": 2.5, "lr": 0.1}\n{"step": 2, "lo')
    log = MetricsLog(tmp_path)
    log.step(2, 1.5, 0.1)
    log.close()
    assert read_jsonl(tmp_path / "steps.jsonl") == [{"step": 1, "loss": 2.5, "lr": 0.1},
                                                    {"step": 2, "loss": 1.5, "lr": 0.1}]


def test_sigterm_saves_a_loadable_checkpoint_and_exits_143(tmp_path, small_corpus):
    run_dir = tmp_path / "run"
    process = start_training(*resume_args(small_corpus, run_dir), "steps=100000", "eval_every=100000")
    deadline = time.time() + 120
    while not (run_dir / "steps.jsonl").exists() or not (run_dir / "steps.jsonl").read_text():
        assert time.time() < deadline and process.poll() is None
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    saved = checkpoint.latest(run_dir)
    assert saved is not None, "SIGTERM saves a checkpoint at the next step boundary"
    state = checkpoint.load_state(saved)
    assert 0 < state["step"] < 100000
    loaded = load(run_dir, "latest").checkpoint  # the weights load into the configured model
    assert loaded == saved


def test_a_second_ctrl_c_exits_at_once_and_the_last_checkpoint_stays_intact(tmp_path, small_corpus):
    run_dir = tmp_path / "run"
    # Steps of about a second: the second Ctrl-C lands before the step boundary the first one waits for.
    slow = ["steps=100000", "eval_every=1", "batch_size=64", "model.trunk.dim=256", "model.context=64"]
    process = start_training(*resume_args(small_corpus, run_dir), *slow)
    wait_for_checkpoint(run_dir, process)
    process.send_signal(signal.SIGINT)
    time.sleep(0.15)  # two signals sent together reach Python's handler as one
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "stopped at once by a second Ctrl-C" in err and "Traceback" not in err
    checkpoint.load_state(checkpoint.latest(run_dir))
    load(run_dir, "latest")  # the weights load into the configured model


class RunsCode:
    """Unpickling this would create a file: the classic checkpoint attack."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_that_would_run_code_is_refused_and_the_code_does_not_run(tmp_path):
    ckpt = tmp_path / "checkpoints" / "step_0000001"
    ckpt.mkdir(parents=True)
    marker = tmp_path / "pwned"
    torch.save({"step": 1, "payload": RunsCode(marker)}, ckpt / "state.pt")
    with pytest.raises(UserError, match="refused to load .* would run code"):
        checkpoint.load_state(ckpt)
    assert not marker.exists()


def test_a_nan_at_step_k_stops_training_at_step_k_and_never_reaches_a_checkpoint(tmp_path, small_corpus):
    run_dir = tmp_path / "run"
    argv = tiny_charlm_args(small_corpus, run_dir, "eval_every=2", "+nan_step=5",
                            "task._target_=tests.engine_helpers.NaNAtStep")
    with pytest.raises(UserError, match=r"non-finite loss or gradient norm at step 5 .*training stopped"):
        train_in_process(*argv)
    assert [p.name for p in checkpoint.step_dirs(run_dir / "checkpoints")] == ["step_0000002", "step_0000004"]
    for name, tensor in weights(run_dir).items():
        assert torch.isfinite(tensor).all(), name


def test_nonfinite_skip_skips_the_bad_step_and_goes_on(tmp_path, small_corpus):
    run_dir = tmp_path / "run"
    train_in_process(*tiny_charlm_args(small_corpus, run_dir, "steps=8", "eval_every=4", "+nan_step=3",
                                       "nonfinite=skip", "task._target_=tests.engine_helpers.NaNAtStep"))
    assert checkpoint.load_state(checkpoint.latest(run_dir))["skipped"] == 1
    assert all(torch.isfinite(t).all() for t in weights(run_dir).values())


def test_a_full_disk_while_saving_keeps_the_last_good_checkpoint(tmp_path, small_corpus, monkeypatch):
    run_dir = tmp_path / "run"
    train_in_process(*tiny_charlm_args(small_corpus, run_dir, "steps=4", "eval_every=4"))
    good = checkpoint.latest(run_dir)
    before = {p.name: p.read_bytes() for p in good.iterdir()}

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    with pytest.raises(UserError, match="could not write checkpoint .*No space left.*step_0000004 is untouched"):
        train_in_process(*tiny_charlm_args(small_corpus, run_dir, "steps=8", "eval_every=2", "resume=auto"))
    assert checkpoint.latest(run_dir) == good
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before
    assert not list((run_dir / "checkpoints").glob("*.tmp")), "no half-written folder is left behind"


def test_newest_checkpoints_and_the_best_are_kept(tmp_path, small_corpus):
    run_dir = tmp_path / "run"
    train_in_process(*tiny_charlm_args(small_corpus, run_dir, "steps=12", "eval_every=2", "keep_checkpoints=2"))
    names = [p.name for p in checkpoint.step_dirs(run_dir / "checkpoints")]
    best = (run_dir / "checkpoints" / "best.txt").read_text()
    assert names[-2:] == ["step_0000010", "step_0000012"]
    assert set(names) == {"step_0000010", "step_0000012", best}


@pytest.mark.parametrize("optimizer, tolerance", [("adamw", 1e-6), ("muon", 1e-4)])
def test_two_gloo_processes_reach_the_weights_of_one_process_with_the_same_global_batch(tmp_path, small_corpus,
                                                                                       optimizer, tolerance):
    """Float sums in another order differ in the last bits; Muon's orthogonalisation
    amplifies that (3e-5 after 6 steps), still far below one step's change (~1e-3)."""
    common = ["steps=6", "eval_every=6", "device=cpu", "show_tokens=0", f"optimizer={optimizer}"]
    single = tmp_path / "single"
    train_in_process(*tiny_charlm_args(small_corpus, single, *common, "batch_size=8"))
    ddp = tmp_path / "ddp"
    train_in_two_processes(*tiny_charlm_args(small_corpus, ddp, *common, "batch_size=4"))
    a, b = weights(single), weights(ddp)
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= tolerance
    assert len(read_jsonl(ddp / "metrics.jsonl")) == 1, "only rank 0 logs"


def train_in_two_processes(*argv: str) -> str:
    """python -m multitx.train argv under torchrun: two gloo processes on the CPU, a thread each; their stdout."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "multitx.train", *argv], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout
