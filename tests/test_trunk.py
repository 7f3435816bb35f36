"""The trunk and the language model built on it: what attention may see, and
that the KV cache changes speed, not results."""

import pytest
import torch

from multitx import LanguageModel, LanguageModelConfig, Trunk, TrunkConfig
from multitx.nn.attention import Attention
from multitx.nn.trace import trace


def tiny_lm(positions: str = "learned", context: int = 16, **kw) -> LanguageModel:
    return LanguageModel(LanguageModelConfig(vocab_size=11, context=context, positions=positions,
                                             trunk=TrunkConfig(dim=32, layers=2, heads=4, **kw))).eval()


@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rotary"])
def test_changing_a_later_token_never_changes_earlier_logits(positions):
    model = tiny_lm(positions)
    ids = torch.randint(0, 11, (2, 16))
    logits, _ = model(ids)
    for t in range(15):
        changed = ids.clone()
        changed[:, t + 1] = (changed[:, t + 1] + 1) % 11
        new_logits, _ = model(changed)
        torch.testing.assert_close(new_logits[:, : t + 1], logits[:, : t + 1])
        assert not torch.allclose(new_logits[:, t + 1], logits[:, t + 1]), "the changed token itself must matter"


def test_bidirectional_trunk_lets_every_token_see_every_other():
    trunk = Trunk(TrunkConfig(dim=32, layers=2, heads=4), causal=False).eval()
    x = torch.randn(1, 8, 32)
    changed = x.clone()
    changed[:, -1] = torch.randn(32)  # (a constant shift would vanish in LayerNorm)
    assert (trunk(x)[:, 0] - trunk(changed)[:, 0]).abs().max() > 1e-6


@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rotary"])
def test_kv_cached_logits_equal_recomputing_the_whole_sequence(positions):
    model = tiny_lm(positions)
    ids = torch.randint(0, 11, (3, 12))
    full, _ = model(ids)  # (B, T, vocab), no cache
    cache = model.trunk.new_cache(3, 16)
    prefill, _ = model(ids[:, :5], cache=cache)  # several tokens at once into the cache
    steps = [model(ids[:, t : t + 1], cache=cache)[0] for t in range(5, 12)]  # then one at a time
    cached = torch.cat([prefill, *steps], dim=1)
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-4)


def test_generation_with_cache_matches_generation_without(monkeypatch):
    """Greedy decoding past the context: the cache refill gives what cropping and recomputing gives."""
    model = tiny_lm("learned", context=8)
    prompt = torch.randint(0, 11, (2, 3))
    generated = model.generate(prompt, 12, temperature=0)
    ids = prompt
    for _ in range(12):
        logits, _ = model(ids[:, -8:])
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(generated, ids)


def test_padding_mask_hides_padded_keys():
    attn = Attention(TrunkConfig(dim=32, heads=4)).eval()
    x = torch.randn(1, 6, 32)
    mask = torch.tensor([[True, True, True, True, False, False]])
    garbage = x.clone()
    garbage[:, 4:] = torch.randn(1, 2, 32) * 10
    torch.testing.assert_close(attn(x, key_mask=mask)[:, :4], attn(garbage, key_mask=mask)[:, :4])


@pytest.mark.parametrize("causal", [False, True])
def test_traced_attention_weights_come_from_the_same_maths_as_the_fused_path(causal):
    trunk = Trunk(TrunkConfig(dim=32, layers=2, heads=4), causal=causal).eval()
    x = torch.randn(2, 7, 32)
    fused = trunk(x)
    with trace(trunk) as recorded:
        traced = trunk(x)
    torch.testing.assert_close(traced, fused, atol=1e-5, rtol=1e-4)
    weights = recorded.attention[0].weights  # (B, H, T, T)
    assert weights.shape == (2, 4, 7, 7)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 7))
    if causal:
        assert torch.all(weights.triu(1) == 0)


def test_cross_attention_reads_the_memory():
    trunk = Trunk(TrunkConfig(dim=32, layers=1, heads=4), causal=True, cross_attention=True).eval()
    x, memory = torch.randn(2, 5, 32), torch.randn(2, 9, 32)
    assert (trunk(x, memory=memory) - trunk(x, memory=torch.randn(2, 9, 32))).abs().max() > 1e-6


def test_a_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model = LanguageModel(LanguageModelConfig(vocab_size=11, context=16, trunk=TrunkConfig(dim=64, layers=2, heads=4)))
    ids = torch.randint(0, 11, (4, 17))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        _, loss = model(ids[:, :-1], ids[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1


def test_relu2_mlp_squares_the_positive_part():
    model = tiny_lm(activation="relu2")
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0])
    assert torch.equal(model.trunk.blocks[0].mlp.act(x), torch.tensor([0.0, 0.0, 0.0, 0.25, 9.0]))
    with pytest.raises(ValueError, match="activation must be one of"):
        tiny_lm(activation="swish")


def test_lm_head_is_tied_to_the_token_embedding():
    model = tiny_lm()
    assert model.head.proj.weight is model.embed.token.weight
