"""task=caption end to end: a tiny training run, then `python -m multitx.caption` on a PNG."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from multitx import caption
from multitx.cli import load_config, run_cli
from multitx.data.captions.vocab import WordVocab
from multitx.data.images.images import decode_image
from multitx.engine.runtime import setup_runtime
from multitx.engine.trainer import train
from multitx.loading import load
from multitx.models import from_timm
from multitx.tasks.caption import CaptionTask
from tests.conftest import run_here, tiny_caption_args

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("caption")
    torch.set_num_threads(1)
    train(load_config(tiny_caption_args(tmp)))
    return tmp / "run"


def test_training_writes_caption_metrics_and_the_vocabulary(trained_run):
    rows = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r.get("split") != "test"]  # the evaluations; the final test row is apart
    assert {"test_bleu4", "test_cider", "test_exact_match"} <= rows[-1].keys()
    assert [e["step"] for e in evals] == [12, 24]
    assert {"val_loss", "bleu4", "cider", "exact_match", "captions_per_s"} <= evals[-1].keys()
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    assert 0.0 <= evals[-1]["bleu4"] <= 1.0 and 0.0 <= evals[-1]["exact_match"] <= 1.0
    vocab = WordVocab.load(trained_run / "vocab.json").vocab
    assert {"small", "large", "red", "circle", "left", "above"} <= set(vocab)


@pytest.fixture(scope="module")
def picture(trained_run) -> Path:
    """A shapes image, enlarged to 40x40: the CLI resizes it back to the model's 16x16."""
    images = np.load(next((trained_run.parent / "datasets" / "shapes" / "val").rglob("images-*.npy")))
    path = trained_run.parent / "picture.png"
    Image.fromarray(images[0].transpose(1, 2, 0)).resize((40, 40)).save(path)  # (3, H, W) -> (H, W, 3)
    return path


def test_caption_cli_captions_a_png(trained_run, picture):
    result = run_here("multitx.caption", f"run_dir={trained_run}", f"image={picture}", "beam=3")
    assert result.returncode == 0, result.stderr
    words = result.stdout.strip().split()
    vocab = set(WordVocab.load(trained_run / "vocab.json").vocab[4:])
    assert words and set(words) <= vocab


def test_caption_cli_greedy_is_the_evaluation_caption(trained_run, picture, capsys):
    run_cli(caption.main, [f"run_dir={trained_run}", f"image={picture}", "beam=1", "checkpoint=latest"])
    printed = capsys.readouterr().out.strip()
    model = load(trained_run, "latest").model
    task = CaptionTask(load_config(tiny_caption_args(trained_run.parent)), setup_runtime("cpu", "fp32"))
    assert printed == task.caption(model, decode_image(picture, 16)[None], beam=1)[0]


@pytest.mark.parametrize("args, message", [
    (["image=missing.png"], "missing.png does not exist"),
    ([], "image=PATH"),
    (["beam=0"], "beam must be at least 1"),
    (["image={picture}", "beam=1000000000000"], "beam=1000000000000 needs about"),
])
def test_caption_cli_errors_are_one_line(trained_run, picture, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(caption.main, [f"run_dir={trained_run}", *[a.format(picture=picture) for a in args]])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and err.count("\n") == 1


def test_caption_cli_names_a_corrupt_image(trained_run, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n but no picture")
    with pytest.raises(SystemExit):
        run_cli(caption.main, [f"run_dir={trained_run}", f"image={bad}"])
    assert f"cannot read image {bad}" in capsys.readouterr().err


def test_encoder_starts_from_a_timm_vit(tmp_path, monkeypatch):
    """model.encoder_pretrained=timm:NAME, offline: timm's randomly initialised ViT stands in
    for the download, and the caption encoder must compute exactly its features."""
    timm = pytest.importorskip("timm")
    from multitx.models.from_timm import vit_from_timm

    reference = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=4,
                                  num_classes=1).eval()
    stats = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
    monkeypatch.setattr(from_timm, "timm_pretrained", lambda name, **_: (vit_from_timm(reference), stats))
    cfg = load_config(tiny_caption_args(tmp_path, "model.encoder_pretrained=timm:vit_tiny_patch16_224"))
    model = CaptionTask(cfg, setup_runtime("cpu", "fp32")).build_model().eval()
    assert (cfg.model.encoder.dim, cfg.model.encoder.layers, cfg.model.encoder.heads) == (192, 12, 3)
    assert cfg.model.tokenizer.cls_token and list(cfg.model.image_mean) == pytest.approx(stats["mean"])
    images = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        ours = model.encoder(model.tokenizer(images))
        theirs = reference.forward_features(images)
        assert model.encode(images).shape == (2, 17, 32)  # 16 patches + CLS, bridged to the decoder's width
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
