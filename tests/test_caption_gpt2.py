"""A captioner whose decoder is GPT-2 (model.decoder_pretrained=hf:FOLDER), against `transformers` itself: a
randomly initialised GPT2LMHeadModel built and saved by the test with a byte-level BPE tokenizer.json (nothing is
downloaded). Before training its logits are GPT-2's, with either fusion; captions are in its tokens; parts can be
frozen (their weights stay bit-identical) or trained at their own learning rate; the run loads, captions and
inspects without the folder; bad settings are one line."""

import json

import numpy
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import multitx
from multitx.cli import load_config
from multitx.data.captions.batches import CaptionBatches
from multitx.data.captions.datasets import CaptionSplit
from multitx.data.captions.subwords import END, CaptionBPE
from multitx.data.captions.tokens import tokens_from_state
from multitx.engine import checkpoint
from multitx.engine.optimizers import build_optimizer
from multitx.engine.runtime import setup_runtime
from multitx.models.captioner import Captioner, CaptionerConfig, real_tokens, scored_tokens
from multitx.models.captioner_from_gpt2 import captioner_with_gpt2
from multitx.models.decoding import caption_images
from multitx.models.from_gpt2 import CONV1D, multitx_name
from multitx.nn.trunk import TrunkConfig
from multitx.tasks.caption import CaptionTask
from tests.conftest import run_here, tiny_caption_args, torch_threads
from tests.test_caption_data import make_coco, make_flickr

transformers = pytest.importorskip("transformers")  # in the test extra
pytestmark = pytest.mark.usefixtures("one_thread")
VOCAB, POSITIONS, CAPTION_LEN = 300, 32, 12
CAPTIONS = [f"a {size} {colour} {shape} {where} a {other}" for size in ("small", "large")
            for colour in ("red", "green", "blue") for shape in ("circle", "square", "triangle")
            for where in ("left of", "above") for other in ("circle", "square")]


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    """A GPT-2 folder as transformers' save_pretrained writes it, with a tokenizer.json of VOCAB tokens."""
    folder = tmp_path_factory.mktemp("gpt2")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=POSITIONS, n_embd=32, n_layer=2, n_head=2,
                                     bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1)
    reference = transformers.GPT2LMHeadModel(config).eval()
    reference.save_pretrained(folder)
    tokens = CaptionBPE.from_captions(CAPTIONS * 5, VOCAB)
    assert tokens.vocab_size == VOCAB
    tokens.bpe.tokenizer.save(str(folder / "tokenizer.json"))
    return folder, reference, tokens


def captioner(folder, fusion: str) -> Captioner:
    torch.manual_seed(1)
    config = CaptionerConfig(vocab_size=23, image_size=16, patch_size=4, encoder=TrunkConfig(dim=24, layers=1, heads=2),
                             decoder=TrunkConfig(dim=16, layers=1, heads=2), max_caption_len=CAPTION_LEN,
                             fusion=fusion)
    return captioner_with_gpt2(Captioner(config), folder).eval()


def token_ids(tokens: CaptionBPE, captions: list[str]) -> torch.Tensor:
    """<bos> and the first tokens of each caption, cut to the shortest: (B, T)."""
    rows = [tokens.encode(c, CAPTION_LEN)[:-1] for c in captions]
    return torch.tensor([row[: min(map(len, rows))] for row in rows])


# Before training: GPT-2's logits

def test_with_cross_attention_the_captioners_logits_are_gpt2s_whatever_the_image(gpt2):
    folder, reference, tokens = gpt2
    model = captioner(folder, "cross")
    ids = token_ids(tokens, CAPTIONS[:3])  # (3, T)
    with torch.no_grad():
        theirs = reference(ids).logits  # (3, T, VOCAB)
        for images in (torch.rand(3, 3, 16, 16), torch.zeros(3, 3, 16, 16)):
            ours = model.decode(ids, model.encode(images))
            assert (ours - theirs).abs().max().item() <= 1e-4
    assert all(block.cross.proj.weight.abs().sum() == 0 for block in model.decoder.blocks), \
        "the new cross-attention layers start adding nothing"


def test_with_prefix_fusion_gpt2_reads_the_projected_patches_before_the_words(gpt2):
    """The reference is transformers' GPT-2 itself, given the same sequence as input embeddings: the image's N
    projected tokens, then the words, under the prefix-LM mask (patches see each other both ways; words see the
    image and earlier words). multitx keeps GPT-2's positions 0, 1, ... for the words and adds none to the
    image's tokens; GPT-2 adds wpe to every input, so the reference gives the image tokens position 0 and
    subtracts wpe[0] from them first."""
    folder, reference, tokens = gpt2
    model = captioner(folder, "prefix")
    ids = token_ids(tokens, CAPTIONS[3:5])  # (2, T)
    images = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        memory = model.encode(images)  # (2, N, D)
        ours = model.decode(ids, memory)  # (2, T, VOCAB)
        n, t = memory.shape[1], ids.shape[1]
        wte, wpe = reference.transformer.wte, reference.transformer.wpe
        embeds = torch.cat([memory - wpe.weight[0], wte(ids)], dim=1)  # (2, N + T, D)
        positions = torch.cat([torch.zeros(n, dtype=torch.long), torch.arange(t)])[None].expand(2, -1)
        keys = torch.arange(n + t)
        allowed = (keys[None, :] <= keys[:, None]) | (keys[None, :] < n)  # (N + T, N + T): the prefix-LM mask
        theirs = reference(inputs_embeds=embeds, position_ids=positions,
                           attention_mask=allowed[None, None].expand(2, 1, -1, -1)).logits[:, n:]
    assert (ours - theirs).abs().max().item() <= 1e-4
    with torch.no_grad():
        assert (model.decode(ids, model.encode(torch.rand(2, 3, 16, 16))) - ours).abs().max() > 1e-3, \
            "the words read the image"


def test_a_caption_longer_than_gpt2s_positions_is_one_line(gpt2):
    folder, _, _ = gpt2
    config = CaptionerConfig(vocab_size=23, image_size=16, patch_size=4, encoder=TrunkConfig(dim=24, layers=1, heads=2),
                             max_caption_len=POSITIONS + 1)
    with pytest.raises(multitx.UserError, match=rf"model.max_caption_len=33 is longer than the {POSITIONS} positions"):
        captioner_with_gpt2(Captioner(config), folder)


# GPT-2's tokens

def test_captions_in_gpt2s_tokens_begin_and_end_with_its_end_of_text_and_decode_back(gpt2):
    _, _, tokens = gpt2
    end = tokens.bpe.tokenizer.token_to_id(END)
    ids = tokens.encode("A small red circle, left of a square.")
    assert ids[0] == ids[-1] == end == tokens.pad_id == tokens.unk_id
    assert tokens.decode(ids[1:] + [end, end]) == "A small red circle, left of a square."
    assert tokens.encode("a small red circle left of a square", max_len=5)[1:-1] == \
        tokens.encode("a small red circle left of a square")[1:4]
    again = tokens_from_state(json.loads(json.dumps(tokens.state())))
    assert isinstance(again, CaptionBPE) and again.encode("a blue square") == tokens.encode("a blue square")


def test_the_first_end_of_text_after_bos_is_scored_and_the_padding_after_it_is_not():
    end = 7
    ids = torch.tensor([[end, 3, 4, end, end, end], [end, 5, end, end, end, end]])  # <bos> = <eos> = <pad>
    assert real_tokens(ids, end).tolist() == [[True, True, True, True, False, False],
                                              [True, True, True, False, False, False]]
    assert scored_tokens(ids, end) == 5


def test_a_batch_of_captions_in_gpt2s_tokens_keeps_each_ones_end(gpt2):
    _, _, tokens = gpt2
    captions = [["a red circle"], ["a large green triangle above a small blue square"]]
    split = CaptionSplit(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), captions, ["short", "long"])
    ids = next(CaptionBatches(split, tokens, 2, CAPTION_LEN, seed=0))["ids"][:, 0]  # (2, T)
    longest = max(len(tokens.encode(c[0], CAPTION_LEN)) for c in captions)
    assert ids.shape[1] == longest and (ids[:, -1] == tokens.eos_id).all(), "<bos> ... <eos>, none cut"
    assert sorted(tokens.decode(row[1:]) for row in ids) == sorted(tokens.decode(tokens.encode(c[0], CAPTION_LEN)[1:])
                                                                  for c in captions)


# Training it: frozen parts stay bit-identical, each part at its own learning rate

def gpt2_args(tmp, folder, *extra):
    return tiny_caption_args(tmp, f"model.decoder_pretrained=hf:{folder}", "data.tokenizer=bpe",
                             f"model.max_caption_len={CAPTION_LEN}", "optimizer=adamw", "steps=4", "eval_every=4",
                             "eval_images=4", "show_captions=1", "plots=false", "device=cpu", *extra)


@pytest.fixture(scope="module")
def frozen_run(gpt2, tmp_path_factory):
    folder, _, _ = gpt2
    tmp = tmp_path_factory.mktemp("frozen")
    with torch_threads(1):
        result = run_here("multitx.train", *gpt2_args(tmp, folder, "freeze=[decoder]"))
    assert result.returncode == 0, result.stderr[-2000:]
    return tmp / "run"


def test_a_frozen_gpt2_decoder_keeps_its_weights_bit_identical_while_the_rest_trains(gpt2, frozen_run):
    folder, _, _ = gpt2
    theirs = load_file(str(folder / "model.safetensors"))
    ours = load_file(str(checkpoint.latest(frozen_run) / "model.safetensors"))
    for name, tensor in theirs.items():
        mine = multitx_name(name)
        if mine is None or not mine.startswith("trunk."):
            continue
        expected = tensor.t() if name.endswith(CONV1D) else tensor
        assert torch.equal(ours["decoder." + mine.removeprefix("trunk.")], expected), name
    assert torch.equal(ours["embed.token.weight"], theirs["transformer.wte.weight"])
    assert torch.equal(ours["embed.position"], theirs["transformer.wpe.weight"][:CAPTION_LEN])
    start = captioner(folder, "cross")  # the cross-attention layers started at zero output
    assert ours["decoder.blocks.0.cross.proj.weight"].abs().sum() > 0, "the new cross-attention trained"
    assert not torch.equal(ours["encoder.blocks.0.mlp.fc.weight"], start.encoder.blocks[0].mlp.fc.weight)


def test_the_run_records_gpt2s_shape_and_loads_captions_and_inspects_without_the_folder(gpt2, frozen_run, tmp_path):
    folder, _, tokens = gpt2
    config = (frozen_run / "config.yaml").read_text()
    assert f"decoder_pretrained: hf:{folder}" in config and "activation: gelu_tanh" in config
    assert json.loads((frozen_run / "vocab.json").read_text())["kind"] == "bpe"
    moved = folder.rename(folder.with_name("gone"))  # nothing is read from the folder any more
    try:
        run = multitx.load(frozen_run)
        assert run.model.config.vocab_size == VOCAB and isinstance(run.vocab, CaptionBPE)
        picture = tmp_path / "picture.png"
        Image.new("RGB", (16, 16), (200, 30, 30)).save(picture)
        caption = run_here("multitx.caption", f"run_dir={frozen_run}", "device=cpu", "beam=2", f"image={picture}")
        inspected = run_here("multitx.inspect", f"run_dir={frozen_run}", f"out={tmp_path / 'inspect'}",
                             "device=cpu")
    finally:
        moved.rename(folder)
    assert inspected.returncode == 0 and (tmp_path / "inspect" / "index.html").is_file(), inspected.stderr[-2000:]
    assert caption.returncode == 0, caption.stderr[-2000:]
    image = torch.from_numpy(numpy.array(Image.open(picture))).permute(2, 0, 1)[None].float() / 255
    written = caption_images(run.model, image, bos=tokens.bos_id, eos=tokens.eos_id, beam=2)[0]
    assert caption.stdout == tokens.decode(written) + "\n", "GPT-2's tokens, read back as text"


@pytest.mark.parametrize("changed, said", [("freeze=[]", "freeze=[decoder], not []"),
                                            ("lr_scale.cross=0.5", "lr_scale.cross=1.0, not 0.5")])
def test_resuming_with_other_frozen_parts_or_shares_of_the_lr_is_one_line(gpt2, frozen_run, changed, said):
    folder, _, _ = gpt2
    args = gpt2_args(frozen_run.parent, folder, "freeze=[decoder]", "steps=6", "resume=auto", changed)
    result = run_here("multitx.train", *args)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {checkpoint.latest(frozen_run)} was trained with {said}: the optimizer's state is kept per group "
        f"of parameters; resume with {said.split(',')[0]}, or start a new run_dir"]


def test_each_part_trains_at_its_own_share_of_the_learning_rate(gpt2, tmp_path):
    folder, _, _ = gpt2
    for optimizer in ("adamw", "muon"):
        cfg = load_config(gpt2_args(tmp_path, folder, f"optimizer={optimizer}", "lr_scale.encoder=0.1",
                                    "lr_scale.decoder=0.01", "freeze=projector"))
        task = CaptionTask(cfg, setup_runtime("cpu", "fp32"))
        model = task.build_model()
        built = build_optimizer(model, cfg, setup_runtime("cpu", "fp32"), task.lr_scales(model))
        lr_of = {id(p): group["lr"] for group in built.param_groups for p in group["params"]}
        peak = {"adamw": cfg.lr, "muon": cfg.muon.lr}
        for part, scale in (("encoder", 0.1), ("decoder", 0.01), ("cross", 1.0)):
            for name, param in model.parts()[part]:
                base = peak[optimizer] if optimizer == "muon" and param in set(model.matrix_parameters()) \
                    else cfg.lr
                assert lr_of[id(param)] == pytest.approx(base * scale), name
        assert not any(id(p) in lr_of for _, p in model.parts()["projector"]), "a frozen part is not optimised"


# Bad settings: one line each

@pytest.mark.parametrize("extra, message", [
    (["data.tokenizer=words"], "model.decoder_pretrained writes captions in GPT-2's own tokens: add "
                               "data.tokenizer=bpe"),
    (["freeze=[encoder,head]"], "freeze=head is not a part of the captioner; its parts are encoder, projector, cross, "
                                "decoder"),
    (["freeze=cross", "model.fusion=prefix"], "freeze=cross: model.fusion=prefix has no cross-attention layers"),
    (["freeze=[encoder,projector,cross,decoder]"], "no parameter of the model trains: everything is frozen"),
])
def test_bad_gpt2_captioner_settings_are_one_line_and_exit_2(gpt2, tmp_path, extra, message):
    folder, _, _ = gpt2
    result = run_here("multitx.train", *gpt2_args(tmp_path, folder, *extra))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]


def test_a_decoder_folder_without_its_tokenizer_is_one_line(gpt2, tmp_path):
    folder, _, _ = gpt2
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((folder / name).read_bytes())
    result = run_here("multitx.train", *gpt2_args(tmp_path, bare))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: model.decoder_pretrained=hf:{bare}: the folder has no tokenizer.json; give the decoder's tokenizer "
        f"with data.tokenizer_file=PATH"]


@pytest.mark.parametrize("data, fusion", [("coco", "cross"), ("flickr", "prefix")])
def test_a_gpt2_captioner_trains_on_coco_and_flickr_files_in_gpt2s_tokens(gpt2, tmp_path, data, fusion):
    folder, _, tokens = gpt2
    root = tmp_path / data
    make_coco(root) if data == "coco" else make_flickr(root, "csv")
    split = "data.val_fraction=0.25" if data == "coco" else "data.val_size=2"
    args = [*gpt2_args(tmp_path, folder, f"model.fusion={fusion}", f"data={data}", f"data.root={root}", split,
                       "batch_size=2", "captions_per_image=1", "steps=2", "eval_every=2")]
    args = [a for a in args if not a.startswith(("data.num_", "eval_images="))]
    result = run_here("multitx.train", *args)
    assert result.returncode == 0, result.stderr[-2000:]
    run = multitx.load(tmp_path / "run")
    assert isinstance(run.vocab, CaptionBPE) and run.vocab.state() == tokens.state(), "the decoder's own tokenizer"
    batch = next(CaptionTask(load_config(args + ["resume=auto"]), setup_runtime("cpu", "fp32")).train_batches())
    first = batch["ids"][0, 0]
    assert first[0] == tokens.bos_id and tokens.decode(first[1:]).startswith(("A photo", "A dog,"))
