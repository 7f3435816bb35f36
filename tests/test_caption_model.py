"""The captioner's maths: cross-attention, causality, padding, KV cache, beam search."""

import pytest
import torch
import torch.nn.functional as F

from multitx.models.captioner import Captioner, CaptionerConfig
from multitx.models.decoding import beam_search, caption_images, greedy
from multitx.nn.trunk import TrunkConfig

BOS, EOS, PAD = 1, 2, 0


def tiny_captioner(**overrides) -> Captioner:
    config = CaptionerConfig(vocab_size=23, image_size=16, patch_size=4, encoder=TrunkConfig(dim=32, layers=2, heads=4),
                             decoder=TrunkConfig(dim=32, layers=2, heads=4), max_caption_len=12, **overrides)
    model = Captioner(config).eval()
    with torch.no_grad():  # larger weights than the 0.02 init: confident, image-dependent predictions
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.3)
    return model


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def model() -> Captioner:
    return tiny_captioner()


def test_caption_logits_change_with_the_image(model):
    ids = torch.tensor([[BOS, 5, 6, 7]])
    a, b = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        logits_a = model.decode(ids, model.encode(a))
        logits_b = model.decode(ids, model.encode(b))
        same = model.decode(ids, model.encode(a.clone()))
    assert torch.equal(logits_a, same)
    assert (logits_a - logits_b).abs().amax(dim=-1).min() > 1e-3, "every position reads the image"


def test_decoder_is_causal(model):
    images = torch.rand(1, 3, 16, 16)
    ids = torch.tensor([[BOS, 5, 6, 7, 8, 9]])
    changed = ids.clone()
    changed[0, 3] = 11
    with torch.no_grad():
        memory = model.encode(images)
        before, after = model.decode(ids, memory), model.decode(changed, memory)
    torch.testing.assert_close(before[:, :3], after[:, :3], rtol=0, atol=1e-6)  # earlier words unaffected
    assert (before[:, 3:] - after[:, 3:]).abs().amax(dim=-1).min() > 1e-3  # later words see the change


def test_padded_batch_gives_each_caption_its_own_logits_and_loss(model):
    captions = [[BOS, 5, 6, 7, 8, EOS], [BOS, 9, EOS], [BOS, 10, 11, 12, EOS]]
    images = torch.rand(3, 3, 16, 16)
    width = max(map(len, captions))
    padded = torch.tensor([c + [PAD] * (width - len(c)) for c in captions])  # (3, 6)
    with torch.no_grad():
        logits, loss = model(images, padded)
        token_losses = []
        for i, caption in enumerate(captions):
            alone = torch.tensor([caption])
            logits_alone, _ = model(images[i : i + 1], alone)
            n = len(caption) - 1
            torch.testing.assert_close(logits[i, :n], logits_alone[0], rtol=1e-5, atol=1e-5)
            token_losses.append(F.cross_entropy(logits_alone[0], alone[0, 1:], reduction="none"))
    # The loss is the mean over real tokens: padding counts for nothing.
    torch.testing.assert_close(loss, torch.cat(token_losses).mean(), rtol=1e-5, atol=1e-6)


def test_several_captions_per_image_share_one_encoding(model):
    images = torch.rand(2, 3, 16, 16)
    ids = torch.tensor([[[BOS, 5, 6, EOS], [BOS, 7, EOS, PAD]], [[BOS, 8, EOS, PAD], [BOS, 9, 10, EOS]]])  # (2, 2, 4)
    with torch.no_grad():
        logits, loss = model(images, ids)  # (4, 3, vocab)
        flat_logits, flat_loss = model(images.repeat_interleave(2, dim=0), ids.flatten(0, 1))
    torch.testing.assert_close(logits, flat_logits)
    torch.testing.assert_close(loss, flat_loss)


def test_kv_cached_decoding_equals_full_recomputation(model):
    images = torch.rand(4, 3, 16, 16)
    cached_ids, cached_logits = greedy(model, images, bos=BOS, eos=EOS)
    full_ids, full_logits = greedy(model, images, bos=BOS, eos=EOS, use_cache=False)
    assert torch.equal(cached_ids, full_ids)
    torch.testing.assert_close(cached_logits, full_logits, rtol=1e-4, atol=1e-5)
    assert cached_logits.shape[1] == model.config.max_caption_len - 1 or (cached_ids == EOS).any(dim=1).all()


def test_image_keys_and_values_are_computed_once_per_caption(model):
    calls = []
    hooks = [block.cross.to_kv.register_forward_hook(lambda *_: calls.append(1)) for block in model.decoder.blocks]
    try:
        ids, _ = greedy(model, torch.rand(2, 3, 16, 16), bos=BOS, eos=EOS)
        assert ids.shape[1] > 1  # several steps were decoded ...
        assert len(calls) == len(model.decoder.blocks)  # ... and each layer projected the memory once
        calls.clear()
        beam_search(model, torch.rand(2, 3, 16, 16), bos=BOS, eos=EOS, beam=3)
        assert len(calls) == len(model.decoder.blocks)
    finally:
        for hook in hooks:
            hook.remove()


def test_beam_search_with_one_beam_is_greedy(model):
    images = torch.rand(6, 3, 16, 16)
    greedy_rows = caption_images(model, images, bos=BOS, eos=EOS, beam=1)
    beams = beam_search(model, images, bos=BOS, eos=EOS, beam=1, alpha=0.0)
    assert [b.ids for b in beams] == greedy_rows


def sequence_log_prob(model, image, words: list[int]) -> float:
    """log P(words <eos> | image) by one teacher-forced pass, no cache."""
    ids = torch.tensor([[BOS, *words, EOS]])
    with torch.no_grad():
        logits = model.decode(ids[:, :-1], model.encode(image))
    return logits.log_softmax(-1)[0].gather(1, ids[0, 1:, None]).sum().item()


@pytest.mark.parametrize("beam", [2, 4])
def test_beam_search_scores_are_the_captions_log_probabilities(beam):
    model = tiny_captioner()
    with torch.no_grad():  # make <eos> likely enough that captions end at different lengths
        model.embed.token.weight[EOS] *= 3
    images = torch.rand(3, 3, 16, 16)
    found = beam_search(model, images, bos=BOS, eos=EOS, beam=beam, alpha=0.0)
    greedy_rows = caption_images(model, images, bos=BOS, eos=EOS, beam=1)
    for i, (b, g) in enumerate(zip(found, greedy_rows, strict=True)):
        # The reordered cache must give exactly the log-probability of the caption it returns ...
        assert b.log_prob == pytest.approx(sequence_log_prob(model, images[i : i + 1], b.ids), abs=1e-4)
        # ... and a wider search never finds a worse caption than greedy (both finished here).
        if len(b.ids) < model.config.max_caption_len - 1 and len(g) < model.config.max_caption_len - 1:
            assert b.log_prob >= sequence_log_prob(model, images[i : i + 1], g) - 1e-4


def test_length_penalty_prefers_longer_captions_as_alpha_grows():
    model = tiny_captioner()
    with torch.no_grad():
        model.embed.token.weight[EOS] *= 3
    images = torch.rand(8, 3, 16, 16)
    short = sum(len(b.ids) for b in beam_search(model, images, bos=BOS, eos=EOS, beam=4, alpha=0.0))
    long = sum(len(b.ids) for b in beam_search(model, images, bos=BOS, eos=EOS, beam=4, alpha=3.0))
    assert long >= short
