"""The options from the modded-nanogpt speedruns, each off by default: QK-norm, zero-initialised
projections, an untied head, value embeddings and logit soft-capping. Each does what it says, and
none breaks causality or the KV cache."""

import pytest
import torch

from multitx import LanguageModel, LanguageModelConfig, TrunkConfig
from multitx.nn.trace import trace

ALL_ON = {"tie_head": False, "value_embeds": True, "logit_softcap": 5.0}
TRUNK_ON = {"qk_norm": True, "zero_init": True}


def lm(context: int = 16, trunk: dict | None = None, **options) -> LanguageModel:
    torch.manual_seed(0)
    return LanguageModel(LanguageModelConfig(vocab_size=11, context=context, positions="rotary",
                                             trunk=TrunkConfig(dim=32, layers=2, heads=4, **(trunk or {})),
                                             **options)).eval()


def trained(model: LanguageModel, steps: int = 5) -> LanguageModel:
    """A few AdamW steps, so that zero-initialised parts are no longer zero."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.randint(0, 11, (4, 17), generator=torch.Generator().manual_seed(1))
    model.train()
    for _ in range(steps):
        model(ids[:, :-1], ids[:, 1:])[1].backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


def test_qk_norm_gives_every_head_normalised_queries_and_keys():
    model = lm(trunk={"qk_norm": True})
    with trace(model) as seen:
        model(torch.randint(0, 11, (2, 16)))
    for layer in seen.layers():
        for tensor in (layer.q, layer.k):  # (B, H, T, Dh), as they meet in attention
            rms = tensor.pow(2).mean(-1).sqrt()  # rotary turns them but keeps their length; LayerNorm's epsilon
            torch.testing.assert_close(rms, torch.ones_like(rms), atol=1e-2, rtol=0)  # keeps it a little under 1
    without = lm()
    with trace(without) as seen:
        without(torch.randint(0, 11, (2, 16)))
    assert (seen.layers()[0].q.pow(2).mean(-1).sqrt() - 1).abs().max() > 0.5, "without it, queries are not unit RMS"


def test_zero_init_makes_every_block_start_as_the_identity():
    model = lm(trunk={"zero_init": True})
    x = torch.randn(2, 16, 32)
    assert torch.equal(model.trunk(x), model.trunk.norm_out(x)), "every residual branch writes zeros at first"
    gpt2 = lm()
    assert not torch.equal(gpt2.trunk(x), gpt2.trunk.norm_out(x))
    assert all(block.attn.to_qkv.weight.abs().sum() > 0 for block in model.trunk.blocks), "only projections are 0"


def test_an_untied_head_has_its_own_weights_and_starts_from_uniform_predictions():
    model = lm(tie_head=False)
    assert model.head.proj.weight is not model.embed.token.weight
    logits, _ = model(torch.randint(0, 11, (2, 16)))
    assert torch.equal(logits, torch.zeros_like(logits))
    tied = lm()
    assert tied.head.proj.weight is tied.embed.token.weight


def test_value_embeddings_start_at_zero_and_then_change_the_values():
    with_tables, without = lm(value_embeds=True), lm()
    assert len(with_tables.value_embeds) == 2 and without.value_embeds is None
    without.load_state_dict({k: v for k, v in with_tables.state_dict().items() if "value_embeds" not in k})
    ids = torch.randint(0, 11, (2, 16))
    torch.testing.assert_close(with_tables(ids)[0], without(ids)[0]), "zero tables: the same model as without"
    trained(with_tables)
    assert all(table.weight.abs().sum() > 0 for table in with_tables.value_embeds), "the tables learn"


def test_logit_softcap_bounds_every_logit():
    model = trained(lm(logit_softcap=0.5), steps=20)  # a cap well below what the logits would reach
    logits, _ = model(torch.randint(0, 11, (4, 16)))
    assert logits.abs().max() < 0.5
    assert logits.abs().max() > 0.4, "the cap is reached, so it is what bounds them"


@pytest.mark.parametrize("options", [ALL_ON, {}])
def test_with_every_option_on_a_later_token_never_changes_earlier_logits(options):
    model = trained(lm(trunk=TRUNK_ON, **options))
    ids = torch.randint(0, 11, (2, 16))
    logits, _ = model(ids)
    changed = ids.clone()
    changed[:, 8] = (changed[:, 8] + 1) % 11
    new_logits, _ = model(changed)
    torch.testing.assert_close(new_logits[:, :8], logits[:, :8])
    assert not torch.allclose(new_logits[:, 8], logits[:, 8])


def test_with_every_option_on_the_kv_cache_gives_the_logits_of_recomputing():
    model = trained(lm(trunk=TRUNK_ON, **ALL_ON))
    ids = torch.randint(0, 11, (3, 12))
    full, _ = model(ids)
    cache = model.trunk.new_cache(3, 16)
    prefill, _ = model(ids[:, :5], cache=cache)
    steps = [model(ids[:, t:t + 1], cache=cache)[0] for t in range(5, 12)]
    torch.testing.assert_close(torch.cat([prefill, *steps], dim=1), full, atol=1e-5, rtol=1e-4)


def test_the_options_train_from_the_command_line_and_resume(tmp_path, small_corpus):
    from multitx import train
    from multitx.cli import run_cli
    from tests.conftest import tiny_charlm_args

    options = ["model.trunk.qk_norm=true", "model.trunk.zero_init=true", "model.tie_head=false",
               "model.value_embeds=true", "model.logit_softcap=15", "plots=false"]
    run_dir = tmp_path / "run"
    run_cli(train.main, tiny_charlm_args(small_corpus, run_dir, *options, "steps=4", "eval_every=2"))
    run_cli(train.main, tiny_charlm_args(small_corpus, run_dir, *options, "steps=6", "eval_every=2", "resume=auto"))
    assert (run_dir / "checkpoints" / "step_0000006").is_dir()
    tied = [o if o != "model.tie_head=false" else "model.tie_head=true" for o in options]
    with pytest.raises(SystemExit) as stop:  # the same run folder with an option changed is refused
        run_cli(train.main, tiny_charlm_args(small_corpus, run_dir, *tied, "steps=8", "eval_every=2", "resume=auto"))
    assert stop.value.code == 2
