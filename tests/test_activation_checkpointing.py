"""Activation checkpointing (model.trunk.activation_checkpointing, nn/trunk.py): each block recomputes its
activations in backward instead of keeping them. The gradients are the same (dropout and drop-path
replay the same random numbers), far less is kept for backward, and nothing changes where no backward
comes (evaluation, no_grad, decoding with a KV cache)."""

import json

import pytest
import torch
import torch.nn.functional as F

from multitx import LanguageModel, LanguageModelConfig, TrunkConfig
from multitx.benchmarks.activation_memory import saved_for_backward
from multitx.models.captioner import Captioner, CaptionerConfig
from multitx.models.decoding import greedy
from multitx.models.vit import build_vit
from multitx.nn import trunk as trunk_module
from multitx.nn.trunk import Trunk
from tests.conftest import run_here, tiny_charlm_args
from tests.test_engine import train_in_process, weights

pytestmark = pytest.mark.usefixtures("one_thread")

RANDOM = {"dropout": 0.1, "drop_path": 0.2}  # on the trunk: the recomputation must draw the same masks


@pytest.fixture
def checkpoints(monkeypatch) -> list:
    """Every call of torch.utils.checkpoint.checkpoint that a trunk makes, as it is made."""
    calls = []
    real = trunk_module.checkpoint

    def counted(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(trunk_module, "checkpoint", counted)
    return calls


def checkpointing(model: torch.nn.Module, on: bool) -> torch.nn.Module:
    """The same model (the same weights) with activation checkpointing on or off in every trunk it has."""
    for module in model.modules():
        if isinstance(module, Trunk):
            module.config.activation_checkpointing = on
    return model


def char_lm(**trunk) -> LanguageModel:
    return LanguageModel(LanguageModelConfig(vocab_size=65, context=32, positions="learned",
                                             trunk=TrunkConfig(dim=32, layers=3, heads=4, **trunk)))


def captioner(fusion: str) -> Captioner:
    return Captioner(CaptionerConfig(vocab_size=23, image_size=16, patch_size=4, fusion=fusion, max_caption_len=12,
                                     encoder=TrunkConfig(dim=32, layers=2, heads=4, **RANDOM),
                                     decoder=TrunkConfig(dim=32, layers=2, heads=4, **RANDOM)))


def lm_loss(model):
    ids = torch.randint(0, 65, (4, 33), generator=torch.Generator().manual_seed(1))
    return lambda: model(ids[:, :-1], ids[:, 1:])[1]


def vit_loss(model):
    images, labels = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    return lambda: F.cross_entropy(model(images), labels)


def caption_loss(model):
    ids = torch.randint(4, 23, (4, 9), generator=torch.Generator().manual_seed(1))
    ids[:, 0], ids[:, 6], ids[2:, 7:] = 1, 2, 0  # <bos> words <eos>, and two captions padded after it
    images = torch.rand(4, 3, 16, 16)
    return lambda: model(images, ids)[1]


def model_and_loss(name: str):
    """A tiny model of each kind with dropout and drop-path on its trunks, and its training loss on a fixed batch."""
    if name == "char LM":
        model = char_lm(**RANDOM)
        return model, lm_loss(model)
    if name == "ViT":
        model = build_vit(image_size=16, patch_size=4, dim=32, layers=3, heads=4, classes=4, **RANDOM)
        return model, vit_loss(model)
    model = captioner(name.removeprefix("captioner, "))
    return model, caption_loss(model)


def gradients(model, loss, seed: int) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the same dropout and drop-path masks, drawn in the same order
    loss().backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", ["char LM", "ViT", "captioner, cross", "captioner, prefix"])
def test_every_gradient_is_the_same_with_dropout_and_drop_path_in_training(name, checkpoints):
    model, loss = model_and_loss(name)
    model.train()
    plain = gradients(checkpointing(model, False), loss, seed=5)
    assert checkpoints == []
    recomputed = gradients(checkpointing(model, True), loss, seed=5)
    trunks = [m for m in model.modules() if isinstance(m, Trunk)]
    assert len(checkpoints) == sum(len(t.blocks) for t in trunks), "each block of each trunk, once a forward"
    assert all(c["use_reentrant"] is False and c["preserve_rng_state"] is True for c in checkpoints)
    assert plain.keys() == recomputed.keys() and len(plain) == len(list(model.parameters()))
    for key in plain:
        torch.testing.assert_close(recomputed[key], plain[key], atol=1e-6, rtol=0, msg=key)
    other_masks = gradients(model, loss, seed=6)
    assert any(not torch.allclose(other_masks[k], plain[k]) for k in plain), "dropout draws: the seed matters"


def test_evaluation_and_no_grad_run_no_checkpoint_and_give_the_same_outputs(checkpoints):
    model = char_lm(**RANDOM)
    ids = torch.randint(0, 65, (2, 32))
    with torch.no_grad():
        expected = checkpointing(model, False).eval()(ids)[0]
    checkpointing(model, True)
    torch.testing.assert_close(model.eval()(ids)[0], expected, atol=0, rtol=0)  # eval, gradients on
    with torch.no_grad():
        torch.manual_seed(0)
        training_no_grad = model.train()(ids)[0]
    assert checkpoints == [], "no backward can come: nothing to recompute"
    torch.manual_seed(0)
    assert torch.equal(training_no_grad, checkpointing(model, False)(ids)[0].detach())


def test_kv_cached_decoding_runs_no_checkpoint_and_is_unchanged(checkpoints):
    lm = char_lm()  # no dropout: training mode and gradients on, with a cache, equal to the plain model
    prompt = torch.randint(0, 65, (2, 3))
    expected = checkpointing(lm, False).eval().generate(prompt, 20, temperature=0)
    assert torch.equal(checkpointing(lm, True).generate(prompt, 20, temperature=0), expected)
    cache = lm.train().trunk.new_cache(2, 32)
    cached = lm(prompt, cache=cache)[0]
    assert cached.requires_grad and checkpoints == [], "a cache is written once: never recomputed"
    torch.testing.assert_close(cached, checkpointing(lm, False)(prompt)[0], atol=1e-6, rtol=0)
    for fusion in ("cross", "prefix"):
        model = checkpointing(captioner(fusion), False).eval()
        images = torch.rand(2, 3, 16, 16)
        words, logits = greedy(model, images, bos=1, eos=2)
        again, again_logits = greedy(checkpointing(model, True), images, bos=1, eos=2)
        assert torch.equal(again, words) and torch.equal(again_logits, logits)
    assert checkpoints == []


def test_far_less_is_kept_for_backward():
    """4 blocks at T=256: each keeps about 16 (B, T, D) tensors' worth for backward (the MLP's hidden layer
    before and after GELU alone is 8), and only its input x when checkpointed."""
    ids = torch.randint(0, 65, (2, 257))
    model = LanguageModel(LanguageModelConfig(vocab_size=65, context=256, positions="learned",
                                              trunk=TrunkConfig(dim=32, layers=4, heads=4))).train()
    saved = {}
    for on in (False, True):
        loss, saved[on] = saved_for_backward(checkpointing(model, on), lambda: model(ids[:, :-1], ids[:, 1:])[1],
                                             {"trunk": model.trunk})
        loss.backward()
    btd = 2 * 256 * 32 * 4  # bytes of one (B, T, D) float tensor
    assert saved[False]["trunk"] >= 4 * 12 * btd
    assert 4 * btd <= saved[True]["trunk"] <= (4 + 2) * btd, "each block's input, and the final LayerNorm's"
    assert saved[True]["rest"] == saved[False]["rest"], "the embeddings and the head are not checkpointed"
    assert sum(saved[True].values()) < sum(saved[False].values()) / 2


def test_a_run_with_the_key_trains_to_the_same_weights(tmp_path, small_corpus):
    """Measured: the weights after 4 steps (AdamW, dropout 0.1, drop-path 0.2) are equal, not only within 1e-5."""
    runs = {}
    for on in ("false", "true"):
        runs[on] = tmp_path / on
        train_in_process(*tiny_charlm_args(small_corpus, runs[on], "steps=4", "eval_every=4", "eval_batches=1",
                                           "show_tokens=0", "model.trunk.dropout=0.1", "model.trunk.drop_path=0.2",
                                           f"model.trunk.activation_checkpointing={on}"))
    plain, recomputed = weights(runs["false"]), weights(runs["true"])
    assert plain.keys() == recomputed.keys()
    for key in plain:
        torch.testing.assert_close(recomputed[key], plain[key], atol=1e-5, rtol=0, msg=key)
    assert "activation_checkpointing: true" in (runs["true"] / "config.yaml").read_text(encoding="utf-8")


def test_the_benchmarks_smoke_run_prints_less_with_checkpointing():
    done = run_here("multitx.benchmarks.activation_memory", "--smoke")
    assert done.returncode == 0, done.stderr[-3000:]
    off, on = (json.loads(line) for line in done.stdout.splitlines() if line.startswith("{"))
    assert (off["checkpointing"], on["checkpointing"]) == (False, True)
    assert on["loss"] == off["loss"], "the same model, the same batch"
    assert 0 < on["saved"] < off["saved"] / 2 and 0 < on["saved_trunk"] < off["saved_trunk"] / 4
    assert 0 < on["peak_growth"] < off["peak_growth"]
    assert all(row[key] > 0 for row in (off, on) for key in ("first_s", "best_s"))
    assert "| on | " in done.stdout and "goal: saved at most 0.5x: met" in done.stdout
