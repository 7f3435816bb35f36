"""Weight averaging (ema_decay=, multitx/engine/ema.py): the average follows its formula after each step that
changed the weights, evaluation and multitx.load use it (and say so), swapping it in and out leaves the trained
weights bit for bit, and it is saved, verified and resumed exactly like the trained weights."""

import json
import os
import shutil
import signal

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from multitx import train
from multitx.cli import run_cli
from multitx.engine import checkpoint
from multitx.engine.ema import WeightAverage, note
from multitx.engine.metrics import read_jsonl
from multitx.engine.runtime import setup_runtime
from multitx.engine.stopping import Interrupted
from multitx.errors import UserError
from multitx.loading import load, task_class
from multitx.tasks.charlm import CharLMTask
from tests.conftest import run_here, tiny_charlm_args, write_line_corpus
from tests.test_checkpoint_integrity import flip_a_byte
from tests.test_engine import assert_same_training, train_in_process, weights

pytestmark = pytest.mark.usefixtures("one_thread")

DECAY = 0.5  # far from 1, so that the average and the trained weights differ clearly after a few steps


class StoppedCharLM(CharLMTask):
    """The char LM, except that training step `cfg.stop_at_step` sends this process SIGTERM, as a cluster's
    scheduler would: the trainer saves at the next step boundary and stops (in this process, no kill needed)."""

    def loss(self, model, batch) -> torch.Tensor:
        loss = super().loss(model, batch)
        if model.training:
            self.training_calls = getattr(self, "training_calls", 0) + 1
            if self.training_calls == self.cfg.stop_at_step:
                os.kill(os.getpid(), signal.SIGTERM)
        return loss


class Tiny(torch.nn.Module):
    """Parameters that train, a frozen one (norm.weight), buffers (the norm's running statistics), and a tied
    pair: head.weight is out.weight, one Parameter under two names (as the char LM's head and embedding)."""

    def __init__(self):
        super().__init__()
        self.inp, self.norm, self.out = torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 4)
        self.head = torch.nn.Linear(4, 4, bias=False)
        self.head.weight = self.out.weight
        self.norm.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3) -> (B, 4)
        return self.head(self.out(self.norm(self.inp(x))))


def tiny_model() -> torch.nn.Module:
    return Tiny()


def sgd_steps(model, count: int, average: WeightAverage | None = None) -> list[dict[str, torch.Tensor]]:
    """`count` SGD steps on random data; the trained weights after each (and the average updated after each)."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    after = []
    for _ in range(count):
        model(torch.randn(5, 3)).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        if average is not None:
            average.update(model)
        after.append({name: p.detach().clone() for name, p in model.named_parameters()})
    return after


def test_the_average_follows_the_formula_from_the_weights_at_step_0():
    model = tiny_model()
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    average = WeightAverage(model, DECAY)
    trained = sgd_steps(model, 3, average)
    state = average.state_dict()
    assert set(state) == {"inp.weight", "inp.bias", "norm.bias", "out.weight", "out.bias"}, "not the frozen one"
    for name, got in state.items():
        expected = start[name]
        for weights_then in trained:
            expected = DECAY * expected + (1 - DECAY) * weights_then[name]
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
        assert not torch.equal(got, trained[-1][name]), name


def test_swapping_the_average_in_and_out_leaves_the_trained_weights_bit_for_bit():
    model = tiny_model()
    average = WeightAverage(model, DECAY)
    sgd_steps(model, 3, average)
    trained = {name: t.clone() for name, t in model.state_dict().items()}
    averaged = {name: t.clone() for name, t in average.state_dict().items()}
    for fails in (False, True):
        with pytest.raises(RuntimeError) if fails else torch.no_grad():
            with average.swapped_in(model):
                inside = model.state_dict()
                for name, tensor in inside.items():  # the average in, buffers and the frozen weight the model's
                    assert torch.equal(tensor, averaged.get(name, averaged["out.weight"] if name == "head.weight"
                                                            else trained[name])), name
                if fails:
                    raise RuntimeError("an evaluation that fails")
        for name, tensor in model.state_dict().items():
            assert torch.equal(tensor, trained[name]), name
        for name, tensor in average.state_dict().items():
            assert torch.equal(tensor, averaged[name]), name


def test_an_average_loads_from_a_whole_model_file_under_either_name_of_a_tied_weight():
    model = tiny_model()
    average = WeightAverage(model, DECAY)
    sgd_steps(model, 2, average)
    whole = {name: t + 1 for name, t in model.state_dict().items() if name != "out.weight"}  # the tie as head.*
    other = WeightAverage(model, DECAY)
    other.load_state_dict(whole)
    assert torch.equal(other.state_dict()["out.weight"], whole["head.weight"])
    with pytest.raises(ValueError, match="no tensor for inp.bias"):
        other.load_state_dict({k: v for k, v in whole.items() if k != "inp.bias"})
    with pytest.raises(ValueError, match=r"inp.weight has shape \(1,\)"):
        other.load_state_dict({**whole, "inp.weight": torch.zeros(1)})


def test_the_note_says_when_the_decay_is_too_slow_for_the_run():
    assert "%" not in note(0.9, 1000)
    slow = note(0.999, 400)
    assert "the starting weights still make up 67% of the average" in slow and "at most 0.9886" in slow


@pytest.fixture(scope="module")
def averaged_run(tmp_path_factory):
    """ema_decay=0.5, a checkpoint after each of 4 steps, and step 3's loss NaN (skipped: no update). Its task is
    a test's (NaNAtStep), so that loading it takes trust_code."""
    tmp = tmp_path_factory.mktemp("ema")
    corpus = write_line_corpus(tmp / "corpus.txt")
    run_dir = tmp / "run"
    argv = tiny_charlm_args(corpus, run_dir, "steps=4", "eval_every=1", "keep_checkpoints=10", f"ema_decay={DECAY}",
                            "show_tokens=0", "plots=false", "device=cpu", "+nan_step=3", "nonfinite=skip",
                            "task._target_=tests.engine_helpers.NaNAtStep")
    with torch.random.fork_rng():
        train_in_process(*argv)
    return corpus, run_dir, argv


def at_step(run_dir, step: int, file: str) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "checkpoints" / f"step_{step:07d}" / file)


def test_each_step_that_trains_moves_the_average_and_a_skipped_one_does_not(averaged_run):
    _, run_dir, _ = averaged_run
    for step in (2, 4):
        before, trained, now = at_step(run_dir, step - 1, "ema.safetensors"), at_step(run_dir, step,
                                                                                       "model.safetensors"), \
            at_step(run_dir, step, "ema.safetensors")
        for name in now:
            torch.testing.assert_close(now[name], DECAY * before[name] + (1 - DECAY) * trained[name], rtol=1e-6,
                                       atol=1e-7)
    for file in ("model.safetensors", "ema.safetensors"):  # step 3 was skipped: nothing moved
        two, three = at_step(run_dir, 2, file), at_step(run_dir, 3, file)
        assert all(torch.equal(two[name], three[name]) for name in two), file


def val_loss(run, config) -> float:
    """The trainer's own evaluation (task.evaluate, the same val windows every time) of a loaded model."""
    cfg = OmegaConf.merge(config, {"resume": None, "task": {"_target_": "multitx.tasks.charlm.CharLMTask"}})
    task = task_class(cfg, False)(cfg, setup_runtime("cpu", "fp32"))
    task.vocab = run.vocab
    return task.evaluate(run.model)["val_loss"]


def test_evaluation_and_the_best_checkpoint_are_the_averaged_weights(averaged_run):
    _, run_dir, _ = averaged_run
    logged = read_jsonl(run_dir / "metrics.jsonl")
    config = checkpoint.read_config(run_dir)
    averaged = load(run_dir, "latest", trust_code=True)
    trained = load(run_dir, "latest", trust_code=True, weights="trained")
    assert logged[-1]["val_loss"] == pytest.approx(val_loss(averaged, config), rel=1e-6)
    assert abs(logged[-1]["val_loss"] - val_loss(trained, config)) > 1e-4
    best = min(logged, key=lambda row: row["val_loss"])["step"]
    assert (run_dir / "checkpoints" / "best.txt").read_text() == f"step_{best:07d}"


def test_multitx_load_uses_the_averaged_weights_and_says_so(averaged_run):
    _, run_dir, _ = averaged_run
    newest = checkpoint.latest(run_dir)
    for weights_asked, file, said in (("averaged", "ema.safetensors", f"averaged (ema_decay={DECAY:g})"),
                                      ("trained", "model.safetensors", "trained")):
        run = load(run_dir, "latest", trust_code=True, weights=weights_asked)
        assert run.info["weights"] == said
        saved = load_file(newest / file)
        assert all(torch.equal(p, saved[name]) for name, p in run.model.named_parameters())
    with pytest.raises(UserError, match="weights must be one of averaged, trained"):
        load(run_dir, trust_code=True, weights="best")
    result = run_here("multitx.sample", f"run_dir={run_dir}", "checkpoint=latest", "max_new_tokens=3",
                      "trust_code=true")
    assert result.returncode == 0, result.stderr
    assert f"using the averaged weights (ema_decay={DECAY:g}) of {newest}" in result.stderr


def test_the_manifest_holds_the_average_and_a_damaged_one_is_named_and_skipped(averaged_run, tmp_path, capsys):
    corpus, run_dir, argv = averaged_run
    newest = checkpoint.latest(run_dir)
    recorded = json.loads((newest / "manifest.json").read_text())["sha256"]
    assert "ema.safetensors" in recorded
    copy = shutil.copytree(run_dir, tmp_path / "run")
    damaged = checkpoint.latest(copy)
    flip_a_byte(damaged / "ema.safetensors")
    with pytest.raises(UserError, match=rf"{damaged / 'ema.safetensors'} is truncated or corrupt: .*sha256"):
        load(copy, "latest", trust_code=True)
    assert load(copy, "latest", trust_code=True, weights="trained").info["weights"] == "trained"  # its own is intact
    resumed = [arg.replace(str(run_dir), str(copy)) for arg in argv]
    run_cli(train.main, [*resumed, "steps=5", "resume=auto"])
    out = capsys.readouterr().out
    assert f"skipping a damaged checkpoint: {damaged / 'ema.safetensors'} is truncated or corrupt" in out
    assert f"resuming from {checkpoint.step_dirs(copy / 'checkpoints')[-3]}" in out  # step 3; 4 and 5 written anew
    checkpoint.verify(damaged)


def test_changing_ema_decay_on_resume_is_one_line(averaged_run, tmp_path, capsys):
    _, run_dir, argv = averaged_run
    copy = shutil.copytree(run_dir, tmp_path / "run")
    before = {p.name: p.read_bytes() for p in checkpoint.latest(copy).iterdir()}
    resumed = [arg.replace(str(run_dir), str(copy)) for arg in argv]
    for other in ("0.9", "0"):
        with pytest.raises(SystemExit) as stop:
            run_cli(train.main, [*resumed, "steps=6", f"ema_decay={other}", "resume=auto"])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err.count("\n") == 1, err
        assert f"was trained with ema_decay={DECAY}, not {other}" in err and f"resume with ema_decay={DECAY}" in err
    assert {p.name: p.read_bytes() for p in checkpoint.latest(copy).iterdir()} == before


def test_a_run_stopped_and_resumed_reaches_the_trained_and_averaged_weights_of_one_that_never_stopped(tmp_path):
    corpus = write_line_corpus(tmp_path / "corpus.txt")

    def argv(run_dir, *extra):
        return tiny_charlm_args(corpus, run_dir, "steps=8", "eval_every=4", "ema_decay=0.8", "show_tokens=0",
                                "plots=false", "device=cpu", "model.trunk.dropout=0.1",
                                "task._target_=tests.test_ema.StoppedCharLM", *extra)

    reference, stopped = tmp_path / "reference", tmp_path / "stopped"
    with torch.random.fork_rng():
        train_in_process(*argv(reference, "+stop_at_step=0"))
        with pytest.raises(Interrupted):  # asked at step 2, saved after step 3: between two evaluations
            train_in_process(*argv(stopped, "+stop_at_step=2"))
        assert [p.name for p in checkpoint.step_dirs(stopped / "checkpoints")] == ["step_0000003"]
        train_in_process(*argv(stopped, "+stop_at_step=0", "resume=auto"))
    assert_same_training(reference, stopped)
    a, b = (load_file(checkpoint.latest(run) / "ema.safetensors") for run in (reference, stopped))
    assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)
    assert any(not torch.equal(a[name], weights(reference)[name]) for name in a)
