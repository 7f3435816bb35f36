"""What the explorer's tests share: tiny trained runs of each kind, and the explorer served on 127.0.0.1."""

from pathlib import Path

from multitx.cli import load_config
from multitx.engine.trainer import train
from multitx.explore.analysis import Explorer
from multitx.explore.app import build_app
from multitx.explore.server import background
from tests.conftest import tiny_caption_args, tiny_charlm_args, torch_threads, write_line_corpus
from tests.helpers_vision import write_imagefolder
from tests.test_bad_inputs import image_args

DEVANAGARI = "नमस्ते दुनिया, यह एक छोटा पाठ है।\n"


def tiny_runs(tmp: Path) -> dict[str, Path]:
    """A char LM (two checkpoints kept), a ViT and a captioner, each trained a few steps; "picture": one of
    the ViT's images; "devanagari": a char LM whose corpus holds Devanagari."""
    with torch_threads(1):
        corpus = write_line_corpus(tmp / "corpus.txt")
        train(load_config(tiny_charlm_args(corpus, tmp / "charlm", "steps=6", "eval_every=3", "keep_checkpoints=3")))
        hindi = tmp / "hindi.txt"
        hindi.write_text((DEVANAGARI + "To be, or not to be.\n") * 30, encoding="utf-8")
        train(load_config(tiny_charlm_args(hindi, tmp / "devanagari", "steps=2", "eval_every=2")))
        images = write_imagefolder(tmp / "images", per_class=4)
        train(load_config(image_args(images, tmp / "vit", "model.trunk.layers=2", "steps=2")))
        train(load_config(tiny_caption_args(tmp / "caption", "steps=4", "eval_every=4", "eval_images=2")))
    return {"charlm": tmp / "charlm", "devanagari": tmp / "devanagari", "vit": tmp / "vit",
            "caption": tmp / "caption" / "run", "picture": next((images / "val").rglob("*.png"))}


def serving(explorer: Explorer, max_bytes: int = 8_000_000):
    """The explorer's app served by uvicorn in a thread on 127.0.0.1 (a free port); yields its address."""
    return background(build_app(explorer, max_bytes=max_bytes))
