"""multitx.trace records every attention layer from outside the model: Q, K, V, the weights
with the masks applied, the outputs; the model computes exactly what it computes untraced."""

import pytest
import torch
from einops import rearrange

import multitx
from multitx import Captioner, CaptionerConfig, LanguageModel, LanguageModelConfig, TrunkConfig, build_vit


def tiny_models() -> dict[str, tuple[torch.nn.Module, tuple]]:
    torch.manual_seed(0)
    lm = LanguageModel(LanguageModelConfig(vocab_size=13, context=16, positions="rotary",
                                           trunk=TrunkConfig(dim=32, layers=2, heads=4)))
    vit = build_vit(image_size=16, patch_size=4, dim=24, layers=3, heads=3, classes=5)
    captioner = Captioner(CaptionerConfig(vocab_size=20, image_size=16, patch_size=4,
                                          encoder=TrunkConfig(dim=24, layers=1, heads=2),
                                          decoder=TrunkConfig(dim=32, layers=2, heads=4)))
    for model in (lm, vit, captioner):
        for p in model.parameters():  # away from the near-uniform start, so the maps say something
            torch.nn.init.normal_(p, std=0.3)
    ids = torch.randint(4, 20, (2, 7))
    ids[1, 5:] = 0  # the second caption is padded
    return {"charlm": (lm.eval(), (torch.randint(0, 13, (2, 9)),)),
            "vit": (vit.eval(), (torch.randn(2, 3, 16, 16),)),
            "caption": (captioner.eval(), (torch.rand(2, 3, 16, 16), ids))}


MODELS = tiny_models()


def output(model, inputs):
    out = model(*inputs)
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("name", list(MODELS))
def test_traced_outputs_equal_untraced_outputs(name):
    model, inputs = MODELS[name]
    plain = output(model, inputs)
    with multitx.trace(model) as trace:
        traced = output(model, inputs)
    assert (traced - plain).abs().max().item() <= 1e-5
    assert trace.attention, "every attention layer was recorded"
    assert torch.equal(trace.logits, plain)
    assert trace.trunks[0].tokens_in.shape[-1] == trace.trunks[0].tokens_out.shape[-1]


@pytest.mark.parametrize("name", list(MODELS))
def test_nothing_stays_hooked_after_the_trace(name):
    model, inputs = MODELS[name]
    with multitx.trace(model):
        output(model, inputs)
    assert all(not m._forward_hooks and not m._forward_hooks_with_kwargs for m in model.modules())


@pytest.mark.parametrize("name", list(MODELS))
def test_the_weights_times_v_reproduce_the_recorded_output(name):
    model, inputs = MODELS[name]
    with multitx.trace(model) as trace:
        output(model, inputs)
    modules = dict(model.named_modules())
    kinds = set()
    for record in trace.attention:
        kinds.add(record.kind)
        mixed = record.weights @ record.v  # (B, H, T, Dh): each query's weighted sum of the values
        torch.testing.assert_close(mixed, record.mixed, atol=1e-5, rtol=1e-4)
        joined = rearrange(mixed, "b h t d -> b t (h d)")  # (B, T, D): heads side by side
        torch.testing.assert_close(modules[record.name].proj(joined), record.out, atol=1e-5, rtol=1e-4)
    assert kinds == ({"self", "cross"} if name == "caption" else {"self"})


def test_shapes_are_b_h_t_dh_and_the_weights_b_h_t_s():
    model, (ids,) = MODELS["charlm"]
    with multitx.trace(model) as trace:
        model(ids)
    first = trace.attention[0]
    assert first.x.shape == (2, 9, 32) and first.out.shape == (2, 9, 32)
    assert first.q.shape == first.k.shape == first.v.shape == (2, 4, 9, 8)
    assert first.weights.shape == (2, 4, 9, 9)
    assert [r.layer for r in trace.attention] == [0, 1]


def test_causal_weights_sum_to_one_and_are_zero_on_future_tokens():
    model, (ids,) = MODELS["charlm"]
    with multitx.trace(model) as trace:
        model(ids)
    for record in trace.attention:
        torch.testing.assert_close(record.weights.sum(-1), torch.ones(record.weights.shape[:-1]))
        assert torch.all(record.weights.triu(1) == 0), "no token attends to a later one"
        seen = torch.ones(record.weights.shape[-2:], dtype=torch.bool).tril()  # (T, S): itself and earlier ones
        assert torch.all(record.weights[..., seen] > 0)


def test_padding_is_never_attended_to_and_cross_attention_reads_every_patch():
    model, (images, ids) = MODELS["caption"]
    with multitx.trace(model) as trace:
        model(images, ids)
    inputs = ids[:, :-1]  # what the decoder reads
    padded = inputs == 0  # (B, T)
    decoder_self = [r for r in trace.layers("self") if r.name.startswith("decoder")]
    assert len(decoder_self) == 2 and len(trace.layers("cross")) == 2
    for record in decoder_self:
        torch.testing.assert_close(record.weights.sum(-1), torch.ones(record.weights.shape[:-1]))
        assert torch.all(record.weights[1, :, :, padded[1]] == 0), "padded keys get no weight"
        assert torch.all(record.weights.triu(1) == 0)
    for record in trace.layers("cross"):
        assert record.weights.shape == (2, 4, inputs.shape[1], 16)  # T words x S = 4x4 patches
        assert record.memory.shape == (2, 16, 32)
        torch.testing.assert_close(record.weights.sum(-1), torch.ones(record.weights.shape[:-1]))


def test_the_vit_traced_runs_its_cls_shortcut_too():
    model, (images,) = MODELS["vit"]
    with multitx.trace(model) as trace:
        model(images)
    shapes = [tuple(r.weights.shape) for r in trace.attention]
    assert shapes == [(2, 3, 17, 17), (2, 3, 17, 17), (2, 3, 1, 17)], "the last block computes CLS alone"
    assert trace.trunks[0].tokens_out.shape == (2, 1, 24)
