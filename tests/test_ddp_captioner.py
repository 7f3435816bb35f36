"""Many processes train a captioner as one process does: its loss is a mean per caption token, and the
processes' slices of a global batch hold different numbers of tokens, so the Stepper weights each process's
loss by its share of the global batch's tokens (Task.scored_in) before DDP averages the gradients."""

from types import SimpleNamespace

import pytest
import torch

from multitx.engine.metrics import read_jsonl
from multitx.engine.step import Stepper
from multitx.engine.task import Task
from tests.conftest import tiny_caption_args
from tests.test_engine import train_in_process, train_in_two_processes, weights


@pytest.mark.parametrize("fusion", ["cross", "prefix"])
def test_two_gloo_processes_train_a_captioner_as_one_process_with_the_same_global_batch(tmp_path, fusion):
    """Without the weighting the weights part by ~1e-2 after 6 steps (and the logged losses by ~1e-3)."""
    common = ["steps=6", "eval_every=6", "eval_images=2", "show_captions=0", "plots=false", "device=cpu",
              "optimizer=adamw", f"model.fusion={fusion}",
              "model.word_dropout=0",  # its draws come from each process's own generator
              # The recipe's convstem has BatchNorm, whose statistics are each process's own slice of the batch.
              "model.tokenizer.name=conv",
              f"data_dir={tmp_path / 'datasets'}"]  # one dataset for both runs
    train_in_process(*tiny_caption_args(tmp_path / "single", *common, "batch_size=8"))
    train_in_two_processes(*tiny_caption_args(tmp_path / "ddp", *common, "batch_size=4"))
    single, ddp = tmp_path / "single" / "run", tmp_path / "ddp" / "run"
    a, b = weights(single), weights(ddp)
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    # The logged loss is the global batch's mean per token, the number one process prints.
    assert [r["loss"] for r in read_jsonl(ddp / "steps.jsonl")] == pytest.approx(
        [r["loss"] for r in read_jsonl(single / "steps.jsonl")], rel=1e-5)


class Scored(Task):
    """A task whose loss is a mean over a batch's `scored` targets: batch = {"loss": tensor, "scored": int}."""

    def loss(self, model, batch):
        return model(batch["loss"])

    def scored_in(self, batch):
        return batch["scored"]

    def items_in(self, batch):
        return 1


def test_each_process_weighs_its_loss_by_its_share_of_the_global_batch_s_targets(monkeypatch):
    """The Stepper alone, without processes: all_reduce stands in for two processes, this one scoring 3
    targets at a mean loss of 2, the other 9 at a mean loss of 1. The gradient DDP averages over 2 processes
    is the global mean's: this process's loss weighs 2 x 3/12, and the step reports (3x2 + 9x1) / 12."""
    import multitx.engine.step as step

    def all_reduce(tensor, op=step.dist.ReduceOp.SUM):  # the other process: [loss x scored, scored] = [9, 9]
        if op == step.dist.ReduceOp.SUM and tensor.dim() == 1:  # (the flags' all_reduce, a maximum, finds them
            tensor += torch.tensor([9.0 * 1.0, 9.0])  # the same there; the unweighed losses' sum is 0 in both)

    monkeypatch.setattr(step.dist, "all_reduce", all_reduce)
    model = torch.nn.Module()
    model.weight = torch.nn.Parameter(torch.tensor(1.0))
    runtime = SimpleNamespace(device=torch.device("cpu"), precision="fp32", distributed=True, world_size=2,
                              to_device=lambda batch: batch, autocast=lambda: torch.autocast("cpu", enabled=False))
    cfg = SimpleNamespace(grad_accum=1, grad_clip=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    seen = []
    optimizer.step = lambda *a, **k: seen.append(model.weight.grad.item())  # the gradient the step would apply
    stepper = Stepper(Scored(None, runtime), model, lambda x: model.weight * x, optimizer, runtime, cfg)
    result = stepper(iter([{"loss": torch.tensor(2.0), "scored": 3}]), stop_asked=False)
    assert seen == [pytest.approx(2.0 * 2 * 3 / 12)]
    assert result.loss == pytest.approx((3 * 2.0 + 9 * 1.0) / 12)
