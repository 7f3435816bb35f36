"""python -m multitx.inspect on tiny runs of each task: the shape trace, the maps as PNGs, one
self-contained page that a real browser loads without errors, and one clear line for bad input."""

import re
import subprocess
from pathlib import Path

import pytest
import torch
from PIL import Image

from multitx.cli import load_config, run_cli
from multitx.engine.trainer import train
from multitx.inspect.__main__ import main as inspect_main
from tests.conftest import chromium, tiny_caption_args, tiny_charlm_args, write_line_corpus
from tests.helpers_vision import write_imagefolder
from tests.test_bad_inputs import image_args

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("inspect")
    torch.set_num_threads(1)
    corpus = tmp / "corpus.txt"
    write_line_corpus(corpus)
    train(load_config(tiny_charlm_args(corpus, tmp / "charlm", "steps=6", "eval_every=6")))
    images = write_imagefolder(tmp / "images", per_class=4)
    train(load_config(image_args(images, tmp / "vit", "model.trunk.layers=2", "steps=2")))
    train(load_config(tiny_caption_args(tmp / "caption", "steps=4", "eval_every=4", "eval_images=2")))
    return {"charlm": tmp / "charlm", "vit": tmp / "vit", "caption": tmp / "caption" / "run", "tmp": tmp,
            "picture": next((images / "val").rglob("*.png"))}


def inspect(*argv: str, capsys) -> tuple[str, str]:
    run_cli(inspect_main, list(argv))
    captured = capsys.readouterr()
    return captured.out, captured.err


def assert_pngs(folder: Path, names: list[str]) -> None:
    for name in names:
        with Image.open(folder / name) as image:
            assert image.format == "PNG" and image.width > 100, name


def test_charlm_writes_the_shape_trace_a_map_per_layer_and_head_and_the_page(runs, capsys):
    out, _ = inspect(f"run_dir={runs['charlm']}", 'prompt=To be', capsys=capsys)
    folder = runs["charlm"] / "inspect"
    shapes = (folder / "shapes.txt").read_text()
    assert shapes in out, "the shape trace is printed too"
    for stage in ("Q = x·Wq", "(B, H, T, Dh)", "scores = Q·Kᵀ / √Dh", "(B, H, T, S)", "heads joined",
                  "causal mask", "logits (1, 32, "):
        assert stage in shapes, stage
    assert len(re.findall(r"trunk\.blocks\.\d\.attn +self", shapes)) == 2, "a line per layer"
    # 2 layers x (2 heads + their mean)
    assert_pngs(folder, [f"attn_L{layer}_H{head}.png" for layer in (0, 1) for head in ("0", "1", "mean")])
    page = (folder / "index.html").read_text()
    assert "prompt: To be" in page and "<script src" not in page and "http" not in page


def test_vit_writes_cls_maps_and_the_rollout_over_the_image(runs, capsys):
    out, _ = inspect(f"run_dir={runs['vit']}", f"image={runs['picture']}", f"out={runs['tmp'] / 'vit_out'}",
                     capsys=capsys)
    folder = runs["tmp"] / "vit_out"
    assert_pngs(folder, ["cls_L0.png", "cls_L1.png", "rollout.png", "input.png"])
    assert re.search(r"output: (circle|square): \d+\.\d%", out)
    assert "only the first 1 of 17 tokens ask" in (folder / "shapes.txt").read_text()


def test_caption_writes_a_cross_attention_map_for_each_word(runs, capsys):
    out, _ = inspect(f"run_dir={runs['caption']}", capsys=capsys)  # no image: one of the run's own
    folder = runs["caption"] / "inspect"
    words = out.split("output: ")[1].splitlines()[0].split()
    maps = sorted(p.name for p in folder.glob("word_*_L0.png"))
    assert len(maps) == len(words) + 1, "each word, and the <eos> that ends the caption"
    assert_pngs(folder, maps + ["self_L0_Hmean.png", "input.png"])
    assert "decoder.blocks.0.cross (cross-attention)" in (folder / "shapes.txt").read_text()


BAD = [
    (["prompt=To be ~ or"], "the prompt has characters this model never saw"),
    (["image={text}"], "cannot read image"),
    (["out={text}"], "is a file, not a folder"),
    (["image={picture}"], "image= is for ViT and caption runs"),
    (["checkpoint=newest"], "checkpoint must be best, latest or an existing checkpoint folder"),
]


@pytest.mark.parametrize("extra, message", BAD, ids=[b[0][0] for b in BAD])
def test_bad_input_is_one_line(runs, capsys, extra, message):
    text = runs["tmp"] / "notes.txt"
    text.write_text("not an image")
    task = "vit" if "image={text}" in extra else "charlm"
    argv = [f"run_dir={runs[task]}", *[a.format(text=text, picture=runs["picture"]) for a in extra]]
    with pytest.raises(SystemExit) as stop:
        run_cli(inspect_main, argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err


def test_a_folder_that_is_not_a_run_is_one_line(runs, capsys):
    with pytest.raises(SystemExit) as stop:
        run_cli(inspect_main, [f"run_dir={runs['tmp'] / 'images'}"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "is not a multitx run folder" in err and err.count("\n") == 1


def browser(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--enable-logging=stderr", "--v=0", *args], capture_output=True, text=True, timeout=120)


def test_the_page_works_in_a_real_browser(runs, capsys, tmp_path):
    """Headless Chromium: no console message (no error, no failed script), and choosing another
    layer or head shows another map, in the DOM and on the screen."""
    inspect(f"run_dir={runs['charlm']}", "prompt=To be", f"out={tmp_path}", capsys=capsys)
    url = (tmp_path / "index.html").as_uri()
    dom = browser("--dump-dom", url + "#selftest")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "CONSOLE" not in dom.stderr, [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    log = re.search(r'<pre id="selftest">(.*?)</pre>', dom.stdout, re.S).group(1)
    assert "gallery 0 layer: 0|mean -&gt; 1|mean changed" in log
    assert "gallery 0 head: 1|mean -&gt; 1|1 changed" in log
    assert 'data-shown="1|1"' in dom.stdout
    shots = []
    for name, fragment in (("first", ""), ("last", "#pick=last")):
        shot = tmp_path / f"{name}.png"
        result = browser("--window-size=1000,1400", f"--screenshot={shot}", url + fragment)
        assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
        shots.append(Image.open(shot).convert("RGB"))
    assert shots[0].size == shots[1].size
    assert shots[0].tobytes() != shots[1].tobytes(), "another layer and head, another picture on the screen"
