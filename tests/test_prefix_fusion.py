"""Prefix fusion (model.fusion=prefix): the image's tokens, through the modality projector, placed before the
words in one causal trunk. The pixel shuffle, the prefix-LM mask, the loss on the words alone, cached greedy
and beam decoding, bad settings in one line, a tiny run that learns, and what inspect and the explorer (its
server and its page) show of the one self-attention map over the image's tokens and the words."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from PIL import Image

from multitx.cli import load_config, run_cli
from multitx.config.settings import from_settings
from multitx.engine.trainer import train
from multitx.explore.analysis import Explorer
from multitx.explore.app import build_app
from multitx.inspect.__main__ import main as inspect_main
from multitx.inspect.runs import inspect_run
from multitx.models.captioner import Captioner, CaptionerConfig
from multitx.models.decoding import beam_search, caption_images, greedy
from multitx.nn.projector import ModalityProjector, ProjectorConfig, pixel_shuffle
from multitx.nn.trace import trace
from tests.conftest import run_here, tiny_caption_args, torch_threads
from tests.helpers_explore import serving
from tests.test_caption_model import sequence_log_prob, tiny_captioner
from tests.test_explore import client, png, unpacked, upload
from tests.test_explore_page import Tab, browser, tab  # noqa: F401 - the page tests' browser and tab fixtures

BOS, EOS, PAD = 1, 2, 0
IMAGE_TOKENS = 4  # a 16 x 16 image in 4 x 4 patches is a 4 x 4 grid; a pixel shuffle of 2 makes it 2 x 2

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_prefix_captioner(shuffle: int = 2) -> Captioner:
    return tiny_captioner(fusion="prefix", projector=ProjectorConfig(shuffle=shuffle))


# The pixel shuffle and the projector

def test_pixel_shuffle_merges_each_s_by_s_block_of_neighbouring_patches():
    patches = torch.arange(16.0).view(1, 16, 1)  # a 4 x 4 grid of one-channel patches, row by row: r * 4 + c
    merged = pixel_shuffle(patches, (4, 4), 2)
    assert merged.shape == (1, 4, 4)
    assert merged[0].tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]


def test_pixel_shuffle_keeps_each_patchs_channels_together_on_a_grid_that_is_not_square():
    patches = torch.tensor([[[10 * r + c, -(10 * r + c)] for r in range(2) for c in range(4)]], dtype=torch.float)
    merged = pixel_shuffle(patches, (2, 4), 2)  # (1, 8, 2) on a 2 x 4 grid -> (1, 2, 8) on a 1 x 2 grid
    assert merged.shape == (1, 2, 8)
    assert merged[0, 1].tolist() == [2, -2, 3, -3, 12, -12, 13, -13]


def test_the_projector_maps_the_merged_tokens_to_the_decoders_width():
    projector = ModalityProjector(32, 48, (6, 6), shuffle=3)
    assert projector(torch.randn(5, 36, 32)).shape == (5, 4, 48)
    assert (projector.grid, projector.num_tokens, projector.proj.in_features) == ((2, 2), 4, 32 * 9)
    assert ModalityProjector(32, 48, (6, 6), shuffle=1)(torch.randn(5, 36, 32)).shape == (5, 36, 48)


@pytest.mark.parametrize("extra, message", [
    (["model.fusion=prefix", "model.projector.shuffle=3"], "model.projector.shuffle=3 does not divide the 4x4 "
                                                           "patch grid"),
    (["model.projector.shuffle=2"], "model.projector.shuffle=2 is for model.fusion=prefix"),
    (["model.fusion=both"], "model.fusion must be one of cross, prefix"),
], ids=["shuffle-3-on-4x4", "shuffle-with-cross", "unknown-fusion"])
def test_bad_prefix_settings_are_one_line_and_exit_2(tmp_path, extra, message):
    result = run_here("multitx.train", *tiny_caption_args(tmp_path, *extra))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert message in result.stderr, result.stderr
    assert not (tmp_path / "run").exists(), "refused before anything was built"


# The model: mask, loss, decoding

def test_image_tokens_see_each_other_and_each_word_the_image_and_only_earlier_words():
    model = tiny_prefix_captioner()
    n, t = IMAGE_TOKENS, 4
    with trace(model) as recorded:
        model(torch.rand(1, 3, 16, 16), torch.tensor([[BOS, 5, 6, 7, EOS]]))
    decoder = [r for r in recorded.layers("self") if r.name.startswith("decoder")]
    assert len(decoder) == 2 and not recorded.layers("cross")
    expected = torch.ones(n + t, n + t, dtype=torch.bool).tril()
    expected[:n, :n] = True  # the image's block is seen both ways
    for r in decoder:
        assert torch.equal(r.allowed, expected), r.name
        w = r.weights[0]  # (H, N + T, N + T)
        assert (w[:, :n, :n] > 0).all(), "every image token reads every other, later ones too"
        assert (w[:, :n, n:] == 0).all(), "no image token reads a word"
        assert (w[:, n:, :n] > 0).all(), "every word reads the whole image"
        assert (w[:, n:, n:].triu(1) == 0).all(), "no word reads a later word"
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:2]))


def test_a_later_word_changes_no_earlier_logit_and_the_image_changes_every_one():
    model = tiny_prefix_captioner()
    ids = torch.tensor([[BOS, 5, 6, 7, 8, 9]])
    changed = ids.clone()
    changed[0, 3] = 11
    image, other = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        memory = model.encode(image)
        before, after = model.decode(ids, memory), model.decode(changed, memory)
        elsewhere = model.decode(ids, model.encode(other))
    torch.testing.assert_close(before[:, :3], after[:, :3], rtol=0, atol=1e-6)
    assert (before[:, 3:] - after[:, 3:]).abs().amax(dim=-1).min() > 1e-3
    assert (before - elsewhere).abs().amax(dim=-1).min() > 1e-3, "every position reads the image"


def test_the_loss_scores_the_words_alone_never_the_image_positions():
    model = tiny_prefix_captioner()
    ids = torch.tensor([[BOS, 5, 6, 7, EOS], [BOS, 8, EOS, PAD, PAD]])
    read = []
    hook = model.head.register_forward_hook(lambda module, args, out: read.append(tuple(args[0].shape)))
    try:
        with torch.no_grad():
            logits, loss = model(torch.rand(2, 3, 16, 16), ids)
    finally:
        hook.remove()
    assert read == [(2, 4, 32)], "the head reads the T = 4 word positions, not the N + T of the trunk"
    assert logits.shape == (2, 4, 23)
    torch.testing.assert_close(loss, F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), ignore_index=PAD))


def test_a_padded_batch_gives_each_caption_its_own_logits():
    model = tiny_prefix_captioner()
    captions = [[BOS, 5, 6, 7, 8, EOS], [BOS, 9, EOS]]
    images = torch.rand(2, 3, 16, 16)
    padded = torch.tensor([c + [PAD] * (6 - len(c)) for c in captions])
    with torch.no_grad():
        logits, _ = model(images, padded)
        for i, caption in enumerate(captions):
            alone, _ = model(images[i : i + 1], torch.tensor([caption]))
            torch.testing.assert_close(logits[i, : len(caption) - 1], alone[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shuffle", [1, 2])
def test_kv_cached_decoding_equals_recomputing_the_image_and_the_words_at_every_step(shuffle):
    model = tiny_prefix_captioner(shuffle)
    images = torch.rand(4, 3, 16, 16)
    cached_ids, cached_logits = greedy(model, images, bos=BOS, eos=EOS)
    full_ids, full_logits = greedy(model, images, bos=BOS, eos=EOS, use_cache=False)
    assert torch.equal(cached_ids, full_ids) and cached_ids.shape[1] > 1
    torch.testing.assert_close(cached_logits, full_logits, rtol=1e-4, atol=1e-5)


def test_the_image_passes_through_the_decoder_once_then_one_word_a_step():
    model = tiny_prefix_captioner()
    lengths = []
    hook = model.decoder.blocks[0].register_forward_hook(lambda module, args, out: lengths.append(args[0].shape[1]))
    try:
        ids, _ = greedy(model, torch.rand(2, 3, 16, 16), bos=BOS, eos=EOS)
    finally:
        hook.remove()
    assert lengths == [IMAGE_TOKENS + 1] + [1] * (ids.shape[1] - 1), "<bos> after the image, then each new word"


def test_beam_search_with_one_beam_is_greedy_and_its_scores_are_the_captions_log_probabilities():
    model = tiny_prefix_captioner()
    with torch.no_grad():  # make <eos> likely enough that captions end at different lengths
        model.embed.token.weight[EOS] *= 3
    images = torch.rand(4, 3, 16, 16)
    greedy_rows = caption_images(model, images, bos=BOS, eos=EOS, beam=1)
    assert [b.ids for b in beam_search(model, images, bos=BOS, eos=EOS, beam=1, alpha=0.0)] == greedy_rows
    for i, b in enumerate(beam_search(model, images, bos=BOS, eos=EOS, beam=3, alpha=0.0)):
        # the cache's rows, the image's positions in them too, followed each surviving beam
        assert b.log_prob == pytest.approx(sequence_log_prob(model, images[i : i + 1], b.ids), abs=1e-4)


def test_settings_written_before_fusion_existed_build_the_cross_attention_captioner():
    settings = {"image_size": 16, "patch_size": 4, "encoder": {"dim": 32, "layers": 1, "heads": 2},
                "decoder": {"dim": 32, "layers": 1, "heads": 2}}  # a run's model: section without fusion=
    model = Captioner(from_settings(CaptionerConfig, settings, vocab_size=23))
    assert model.config.fusion == "cross" and model.image_prefix == 0
    assert all(block.cross is not None for block in model.decoder.blocks)
    assert not any(name.startswith("projector.") for name in model.state_dict())


# A tiny run: training, inspect, the explorer

@pytest.fixture(scope="module")
def prefix_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("prefix")
    with torch_threads(1):
        train(load_config(tiny_caption_args(tmp, "model.fusion=prefix", "model.projector.shuffle=2")))
    return tmp / "run"


def test_a_prefix_captioner_learns_on_shapes(prefix_run):
    steps = [json.loads(line) for line in (prefix_run / "steps.jsonl").read_text().splitlines()]
    losses = [s["loss"] for s in steps]
    assert len(losses) == 24 and np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.5, losses
    recorded = OmegaConf.load(prefix_run / "config.yaml").model
    assert (recorded.fusion, recorded.projector.shuffle) == ("prefix", 2), "config.yaml records how it was joined"


def test_inspect_traces_one_map_over_the_image_tokens_and_the_words(prefix_run, tmp_path, capsys):
    run_cli(inspect_main, [f"run_dir={prefix_run}", f"out={tmp_path}"])
    out = capsys.readouterr().out
    shapes = (tmp_path / "shapes.txt").read_text()
    assert f"prefix-LM mask: the first {IMAGE_TOKENS} see each other, then causal" in shapes and "cross" not in shapes
    words = out.split("output: ")[1].splitlines()[0].split()
    maps = sorted(p.name for p in tmp_path.glob("word_*_L0.png"))
    assert len(maps) == len(words) + 1, "each word, and the <eos> that ends the caption"
    for name in [maps[0], maps[-1], "self_L0_Hmean.png", "self_L0_H1.png"]:
        with Image.open(tmp_path / name) as picture:
            assert picture.format == "PNG" and picture.width > 100, name
    ins = inspect_run(prefix_run, new_tokens=0)
    one_map = next(r for r in ins.trace.layers("self") if r.name.startswith("decoder"))
    s = IMAGE_TOKENS + len(words) + 1  # the image's tokens, <bos> and the words
    assert one_map.weights.shape[-1] == s and ins.fused_grid == (2, 2)
    torch.testing.assert_close(one_map.weights.sum(-1), torch.ones(one_map.weights.shape[:-1]))


def test_the_explorer_sends_the_one_map_with_the_image_tokens_first(prefix_run):
    app = client(build_app(Explorer(prefix_run), max_bytes=2_000_000))
    whole = app.post("/api/attention", json=upload(png())).json()
    written = whole["caption"]["written"]
    assert not any(layer["kind"] == "cross" for layer in whole["layers"]) and whole["fused_grid"] == [2, 2]
    decoder = next(layer for layer in whole["layers"] if layer["trunk"] == "decoder")
    s = IMAGE_TOKENS + written
    assert (decoder["queries"], decoder["keys"], decoder["query_labels"], decoder["key_labels"]) == (
        s, s, "prefix_writes", "prefix_reads")
    image = ["patches (0-1,0-1)", "patches (0-1,2-3)", "patches (2-3,0-1)", "patches (2-3,2-3)"]
    assert whole["labels"]["prefix_reads"] == image + ["<bos>", *whole["caption"]["words"][:-1]]
    assert whole["labels"]["prefix_writes"] == image + whole["caption"]["words"]
    weights = unpacked(decoder)
    assert np.allclose(weights.sum(-1), 1, atol=s / 255), "each row sums to 1 over the image's tokens and the words"

    two = app.post("/api/attention", json={**upload(png()), "words": 2}).json()
    shown = next(layer for layer in two["layers"] if layer["trunk"] == "decoder")
    assert (shown["queries"], shown["keys"]) == (IMAGE_TOKENS + 2, IMAGE_TOKENS + 2)
    assert np.array_equal(unpacked(shown), weights[:, :IMAGE_TOKENS + 2, :IMAGE_TOKENS + 2])
    ask = {**upload(png()), "words": 2, "layer": decoder["index"], "head": 1}
    word = app.post("/api/neuron", json={**ask, "query": IMAGE_TOKENS + 1}).json()
    assert word["query_label"] == two["caption"]["words"][1] and word["allowed"] == [True] * (IMAGE_TOKENS + 2)
    patch = app.post("/api/neuron", json={**ask, "query": 0}).json()
    assert patch["allowed"] == [True] * IMAGE_TOKENS + [False, False], "an image token reads no word"


def test_the_page_lays_the_image_part_over_the_picture_and_steps_word_by_word(prefix_run, tab):  # noqa: F811
    page = tab.page
    with torch_threads(1), serving(Explorer(prefix_run)) as url:
        tab.open(url)
        layer = page.evaluate("S.a.layers[S.sel.layer]")
        assert (layer["key_labels"], page.evaluate("S.sel.query")) == ("prefix_reads", IMAGE_TOKENS), \
            "the first word's row of the decoder's one map"
        assert page.locator("#caption-view table canvas").count() == 3, "the word's mean over the 2 heads, and each"
        assert page.locator("#head-view img.picture").count() == 1
        assert page.locator("#head-view .words-part .key-token").count() == 1, "the word part: <bos>"
        assert page.locator("#model-view canvas.head-map").count() == 4, "encoder and decoder, 2 heads each"
        tab.redraws(lambda: page.click("#generate"))
        assert page.locator("#caption-view table canvas").count() == 6
        assert page.evaluate("S.neuron.query") == IMAGE_TOKENS + 1, "the neuron view follows the newest word"
        assert page.locator("#head-view .words-part .key-token").count() == 2


# The benchmark: both fusions side by side

def test_the_caption_benchmark_trains_each_fusion_and_writes_their_figures_side_by_side(tmp_path):
    tiny = [a for a in tiny_caption_args(tmp_path) if a.split("=")[0] not in ("task", "run_dir", "progress", "steps")]
    result = run_here("multitx.benchmarks.caption_shapes", f"run_dir={tmp_path / 'bench'}", "steps=2", "beam=2",
                      "show=1", "progress=false", *tiny, "eval_every=2")
    assert result.returncode == 0, result.stderr
    both = json.loads((tmp_path / "bench" / "benchmark.json").read_text())
    assert list(both["fusions"]) == ["cross", "prefix"]
    for fusion, figures in both["fusions"].items():
        assert figures["fusion"] == fusion and figures["steps"] == 2 and figures["test_images"] == 12
        assert {"exact_match", "bleu4", "greedy_exact_match", "train_seconds"} <= figures.keys()
        assert json.loads((tmp_path / "bench" / fusion / "benchmark.json").read_text()) == figures
        assert (tmp_path / "bench" / fusion / "samples.png").is_file()
    table = result.stdout.split("the fusions side by side (beam 2):")[1]
    assert "| cross |" in table and "| prefix |" in table


@pytest.mark.parametrize("extra, message", [
    (["model.fusion=prefix"], "model.fusion=prefix: this benchmark sets model.fusion from fusions=; write "
                              "fusions=prefix"),
    (["fusions=[cross,cross]"], "fusions must be one of cross, prefix or a list of them, each once"),
    (["fusions=both"], "fusions must be one of cross, prefix or a list of them, each once"),
], ids=["model.fusion", "twice", "unknown"])
def test_the_benchmarks_fusions_are_checked_in_one_line(tmp_path, extra, message):
    result = run_here("multitx.benchmarks.caption_shapes", f"run_dir={tmp_path / 'bench'}", *extra)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "bench").exists()
