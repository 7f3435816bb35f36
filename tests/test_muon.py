"""optimizer=muon: orthogonalised updates for the blocks' matrices, AdamW for the rest."""

import pytest
import torch

from multitx.cli import load_config
from multitx.engine import checkpoint
from multitx.engine.metrics import read_jsonl
from multitx.engine.muon import Muon, newton_schulz, newton_schulz_small_side, orthogonalize
from multitx.engine.optimizers import Chained, build_optimizer
from multitx.engine.runtime import setup_runtime
from multitx.engine.trainer import train
from multitx.tasks.charlm import CharLMTask
from tests.conftest import tiny_charlm_args


@pytest.mark.parametrize("shape", [(48, 16), (16, 48), (3, 24, 24)], ids=["tall", "wide", "batched"])
def test_orthogonalize_sets_singular_values_near_one_and_keeps_the_singular_vectors(shape):
    torch.manual_seed(0)
    *batch, rows, cols = shape
    k = min(rows, cols)
    u = torch.linalg.qr(torch.randn(*batch, rows, k)).Q  # orthonormal columns
    v = torch.linalg.qr(torch.randn(*batch, cols, k)).Q
    singular = torch.logspace(-1, 0, k) * 7.0  # a decade apart, any overall scale
    updates = u @ torch.diag_embed(singular.expand(*batch, k)) @ v.mT
    result = orthogonalize(updates)
    assert result.shape == updates.shape and result.dtype == updates.dtype
    inner = u.mT @ result @ v  # diagonal if the singular vectors are kept
    after = inner.diagonal(dim1=-2, dim2=-1)
    torch.testing.assert_close(inner, torch.diag_embed(after), atol=1e-4, rtol=0)
    assert after.min() > 0.6 and after.max() < 1.25, after  # the quintic's band, not exactly 1


def test_a_muon_step_has_the_same_size_whatever_the_gradient_scale():
    torch.manual_seed(0)
    gradient = torch.randn(32, 16)
    steps = []
    for scale in (1e-3, 1.0, 1e3):
        weight = torch.nn.Parameter(torch.zeros(32, 16))
        weight.grad = gradient * scale
        Muon([weight], lr=0.1).step()
        steps.append(weight.detach().clone())
    torch.testing.assert_close(steps[0], steps[1], rtol=0, atol=1e-4)
    torch.testing.assert_close(steps[2], steps[1], rtol=0, atol=1e-4)
    # a tall matrix's step is scaled by sqrt(rows / cols): RMS 0.1 * sqrt(2) * ~1 / sqrt(16)
    assert 0.02 < steps[1].pow(2).mean().sqrt() < 0.05


def test_muon_refuses_anything_but_a_matrix():
    with pytest.raises(ValueError, match="weight matrices only"):
        Muon([torch.nn.Parameter(torch.zeros(4))])


def test_muon_takes_the_block_matrices_and_adamw_everything_else():
    cfg = load_config(["task=charlm", "optimizer=muon", "model.trunk.layers=2"])
    model, _ = CharLMTask.build(cfg.model, {"vocab.json": {"kind": "char", "chars": "".join(map(chr, range(65, 115)))}})
    optimizer = build_optimizer(model, cfg, setup_runtime("cpu", "fp32"))
    assert isinstance(optimizer, Chained)
    muon, adamw = optimizer.optimizers
    names = {id(p): n for n, p in model.named_parameters()}
    to_muon = {names[id(p)] for group in muon.param_groups for p in group["params"]}
    to_adamw = {names[id(p)] for group in adamw.param_groups for p in group["params"]}
    assert to_muon == {f"trunk.blocks.{i}.{m}.weight" for i in range(2)
                       for m in ("attn.to_qkv", "attn.proj", "mlp.fc", "mlp.proj")}
    assert to_adamw == set(names.values()) - to_muon  # embedding (tied head) and norms
    assert [g["lr"] for g in optimizer.param_groups] == [cfg.muon.lr, cfg.lr, cfg.lr]


def test_a_run_with_muon_learns_and_scales_its_learning_rates_by_one_schedule(tmp_path, small_corpus):
    run_dir = tmp_path / "run"
    cfg = load_config(tiny_charlm_args(small_corpus, run_dir, "optimizer=muon", "steps=40", "eval_every=20",
                                       "lr=3e-3", "muon.lr=0.03", "show_tokens=0"))
    train(cfg)
    steps = read_jsonl(run_dir / "steps.jsonl")
    assert sum(r["loss"] for r in steps[-5:]) < 0.8 * sum(r["loss"] for r in steps[:5])
    evaluations = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "val_loss" in r]
    assert evaluations[-1]["val_loss"] < evaluations[0]["val_loss"]
    muon, adamw = checkpoint.load_state(checkpoint.latest(run_dir))["optimizer"]["chained"]
    last_lr = steps[-1]["lr"]  # lr's schedule at the last step; muon.lr follows it in proportion
    assert adamw["param_groups"][0]["lr"] == pytest.approx(last_lr)
    assert muon["param_groups"][0]["lr"] == pytest.approx(last_lr * 0.03 / 3e-3)


def test_the_small_side_iteration_gives_what_the_iteration_as_written_gives():
    torch.manual_seed(0)
    wide = torch.randn(2, 24, 96) * torch.logspace(-3, 0, 96)
    wide = wide / wide.norm(dim=(-2, -1), keepdim=True)
    torch.testing.assert_close(newton_schulz_small_side(wide, 5), newton_schulz(wide, 5), atol=2e-5, rtol=0)
