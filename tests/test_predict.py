"""python -m multitx.predict and multitx.predict.predict on a tiny ViT run: the top classes of one
image with their probabilities, a CSV for a folder, the Python path agreeing with the command,
and one clear line (exit 2, no traceback) for each kind of bad input."""

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import multitx
from multitx.cli import load_config, run_cli
from multitx.data.images.images import decode_image
from multitx.engine.trainer import train
from multitx.predict import main as predict_main
from multitx.predict import predict
from tests.conftest import run_here, run_module, tiny_charlm_args, write_line_corpus
from tests.helpers_vision import write_imagefolder
from tests.test_bad_inputs import image_args

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ["circle", "ring", "square"]  # label order: imagefolder sorts the class folders by name


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A tiny ViT run on a 3-class image folder (and a hidden junk file in it), and a tiny charlm run."""
    tmp = tmp_path_factory.mktemp("predict")
    torch.set_num_threads(1)
    images = write_imagefolder(tmp / "images", classes=("circle", "square", "ring"), per_class=4)
    train(load_config(image_args(images, tmp / "vit", "steps=4", "eval_every=4")))
    (images / "val" / "ring" / "._0.jpg").write_bytes(b"\0\5\26\7 AppleDouble junk")  # hidden: not an image
    corpus = write_line_corpus(tmp / "corpus.txt")
    train(load_config(tiny_charlm_args(corpus, tmp / "charlm", "steps=2", "eval_every=2")))
    return {"tmp": tmp, "vit": tmp / "vit", "charlm": tmp / "charlm", "images": images,
            "picture": images / "val" / "square" / "1.png"}


def command(*argv: str, capsys) -> str:
    run_cli(predict_main, list(argv))
    return capsys.readouterr().out


def printed(out: str) -> list[tuple[str, float]]:
    """`square   33.9%` lines -> [("square", 0.339), ...]"""
    rows = []
    for line in out.strip().splitlines():
        name, percent = line.rsplit(maxsplit=1)
        assert percent.endswith("%"), line
        rows.append((name.strip(), float(percent[:-1]) / 100))
    return rows


def direct_probabilities(run: multitx.Loaded, path: Path) -> torch.Tensor:
    """The model's softmax for one image, computed here from the run's saved size, mean and std."""
    info = run.info
    image = decode_image(path, tuple(info["image_size"]), info["channels"])[None].float() / 255  # (1, C, H, W)
    mean = torch.tensor(info["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(info["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        return torch.softmax(run.model((image - mean) / std), dim=-1)[0]  # (classes,)


def image_files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.rglob("*") if p.suffix in (".png", ".jpg") and not p.name.startswith(".")),
                  key=lambda p: p.relative_to(folder).as_posix())


# ------------------------------------------------------------------------------------------ one image

def test_one_image_prints_the_runs_classes_with_probabilities(runs, capsys):
    rows = printed(command(f"run_dir={runs['vit']}", f"image={runs['picture']}", "top_k=2", capsys=capsys))
    assert len(rows) == 2
    assert {name for name, _ in rows} <= set(CLASSES)
    assert all(0 <= p <= 1 for _, p in rows)
    assert rows[0][1] >= rows[1][1]
    assert sum(p for _, p in rows) <= 1 + 0.001


def test_all_classes_sum_to_one_and_top1_is_the_models_argmax(runs, capsys):
    rows = printed(command(f"run_dir={runs['vit']}", f"image={runs['picture']}", f"top_k={len(CLASSES)}",
                           capsys=capsys))
    assert sorted(name for name, _ in rows) == sorted(CLASSES)
    assert sum(p for _, p in rows) == pytest.approx(1, abs=0.002)  # three figures rounded to 0.1%
    probs = direct_probabilities(multitx.load(runs["vit"]), runs["picture"])
    assert rows[0][0] == CLASSES[int(probs.argmax())]
    for name, p in rows:
        assert p == pytest.approx(float(probs[CLASSES.index(name)]), abs=0.0006)


def test_top_k_above_the_number_of_classes_gives_them_all(runs, capsys):
    rows = printed(command(f"run_dir={runs['vit']}", f"image={runs['picture']}", "top_k=50", capsys=capsys))
    assert sorted(name for name, _ in rows) == sorted(CLASSES)


def test_out_with_one_image_writes_its_row_too(runs, capsys):
    out = runs["tmp"] / "one.csv"
    text = command(f"run_dir={runs['vit']}", f"image={runs['picture']}", f"out={out}", capsys=capsys)
    assert f"to {out}" in text.splitlines()[-1]
    rows = list(csv.reader(out.open()))
    assert len(rows) == 2 and rows[1][0] == str(runs["picture"])


# ------------------------------------------------------------------------------------------ the library path

def test_python_predict_sums_to_one_and_matches_the_model(runs):
    run = multitx.load(runs["vit"])
    assert run.classes == CLASSES
    (everything,) = predict(run, [runs["picture"]], top_k=len(CLASSES))
    probs = direct_probabilities(run, runs["picture"])
    assert [name for name, _ in everything] == [CLASSES[i] for i in probs.argsort(descending=True)]
    assert sum(p for _, p in everything) == pytest.approx(1, abs=1e-5)
    assert [p for _, p in everything] == pytest.approx(sorted(probs.tolist(), reverse=True), abs=1e-6)
    (top2,) = predict(run, runs["picture"], top_k=2)  # one path alone is a list of one
    assert [n for n, _ in top2] == [n for n, _ in everything[:2]]
    assert [p for _, p in top2] == pytest.approx([p for _, p in everything[:2]], abs=1e-6)
    assert sum(p for _, p in top2) <= 1


def test_python_predict_takes_pil_images_and_uint8_tensors(runs):
    run = multitx.load(runs["vit"])
    path = runs["picture"]
    from_path = predict(run, [path])[0]
    with Image.open(path) as img:
        from_pil = predict(run, [img.copy()])[0]
    with Image.open(path) as img:
        pixels = torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1).contiguous()  # (3, h, w)
    from_tensor = predict(run, pixels)[0]  # (C, H, W), any size: fitted as a file is
    assert [n for n, _ in from_pil] == [n for n, _ in from_path] == [n for n, _ in from_tensor]
    assert [p for _, p in from_pil] == pytest.approx([p for _, p in from_path], abs=1e-6)
    assert [p for _, p in from_tensor] == pytest.approx([p for _, p in from_path], abs=1e-6)
    with pytest.raises(TypeError, match="uint8"):
        predict(run, [pixels.float()])


# ------------------------------------------------------------------------------------------ a folder

@pytest.fixture(scope="module")
def folder_csv(runs) -> tuple[Path, list[list[str]], str]:
    """python -m multitx.predict on the whole image folder, in batches of 4 (its main(), run in this process)."""
    out = runs["tmp"] / "folder" / "predictions.csv"  # a folder not there yet: made
    result = run_here("multitx.predict", f"run_dir={runs['vit']}", f"image={runs['images']}", "top_k=2",
                      "batch_size=4", f"out={out}", "device=cpu")
    assert result.returncode == 0, result.stderr
    return out, list(csv.reader(out.open())), result.stdout


def test_folder_writes_one_row_per_image_with_the_right_columns(runs, folder_csv):
    out, rows, stdout = folder_csv
    files = image_files(runs["images"])  # below train/ and val/, sorted; the hidden junk file is left out
    assert rows[0] == ["path", "top1_class", "top1_prob", "top2_class", "top2_prob"]
    assert [row[0] for row in rows[1:]] == [str(f) for f in files]
    for row in rows[1:]:
        assert row[1] in CLASSES and row[3] in CLASSES and row[1] != row[3]
        assert 1 >= float(row[2]) >= float(row[4]) >= 0 and float(row[2]) + float(row[4]) <= 1 + 1e-6
    assert stdout.strip() == f"wrote the top 2 classes of {len(files)} images to {out}"


def test_python_predict_agrees_with_the_command(runs, folder_csv):
    _, rows, _ = folder_csv
    predictions = predict(multitx.load(runs["vit"]), [Path(row[0]) for row in rows[1:]], top_k=2)
    for row, prediction in zip(rows[1:], predictions, strict=True):
        assert [row[1], row[3]] == [name for name, _ in prediction]
        assert [float(row[2]), float(row[4])] == pytest.approx([p for _, p in prediction], abs=2e-6)


def test_folder_default_out_is_the_run_folder(runs, capsys):
    shutil.copytree(runs["images"] / "val" / "circle", runs["tmp"] / "circles")
    text = command(f"run_dir={runs['vit']}", f"image={runs['tmp'] / 'circles'}", capsys=capsys)
    out = runs["vit"] / "predictions.csv"
    assert text.strip().endswith(f"to {out}")
    assert len(list(csv.reader(out.open()))) == 1 + len(image_files(runs["tmp"] / "circles"))


# ------------------------------------------------------------------------------------------ bad input

@pytest.fixture(scope="module")
def broken(runs) -> dict[str, str]:
    tmp = runs["tmp"]
    corrupt = shutil.copytree(runs["images"], tmp / "corrupt")
    (corrupt / "train" / "square" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)  # a PNG cut short
    (tmp / "empty").mkdir()
    return {"vit": str(runs["vit"]), "charlm": str(runs["charlm"]), "picture": str(runs["picture"]),
            "images": str(runs["images"]), "corrupt": str(corrupt), "bad_png": str(corrupt / "train/square/1.png"),
            "empty": str(tmp / "empty"), "missing": str(tmp / "missing.png"), "out": str(tmp / "never.csv")}


BAD = [
    (["run_dir={images}", "image={picture}"], "{images} is not a multitx run folder (no config.yaml)"),
    (["run_dir={missing}", "image={picture}"], "run_dir={missing} does not exist"),
    (["run_dir={charlm}", "image={picture}"],
     "{charlm} is a charlm run; multitx.predict reads ViT (task=vit_*) runs only"),
    (["run_dir={vit}", "image={bad_png}"], "cannot read image {bad_png}"),
    (["run_dir={vit}", "image={corrupt}", "out={out}"], "cannot read image {bad_png}"),
    (["run_dir={vit}", "image={missing}"], "image={missing} does not exist"),
    (["run_dir={vit}", "image={empty}"], "image={empty} holds no image files"),
    (["run_dir={vit}"], "say which image to classify: image=PATH"),
    (["run_dir={vit}", "image={picture}", "top_k=0"], "top_k must be at least 1, got 0"),
    (["run_dir={vit}", "image={picture}", "batch_size=0"], "batch_size must be at least 1, got 0"),
    (["run_dir={vit}", "image={images}", "out={empty}"], "out={empty} is a folder"),
    (["run_dir={vit}", "image={picture}", "checkpoint=newest"], "checkpoint must be best, latest or"),
    (["run_dir={vit}", "image={picture}", "colour=red"], "unknown argument 'colour=red'"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_and_exit_2(broken, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(predict_main, [a.format(**broken) for a in argv])
    captured = capsys.readouterr()
    assert exit_info.value.code == 2
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    assert message.format(**broken) in captured.err
    assert captured.out == ""
    assert not Path(broken["out"]).exists()  # a folder with a bad image writes no CSV at all


@pytest.mark.parametrize("case", ["charlm", "corrupt folder"])
def test_bad_input_in_a_fresh_process_has_no_traceback(broken, case):
    argv, message = BAD[2] if case == "charlm" else BAD[4]
    result = run_module("multitx.predict", *[a.format(**broken) for a in argv], "device=cpu")
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message.format(**broken) in result.stderr
    assert "Traceback" not in result.stderr
    assert not Path(broken["out"]).exists()


def test_debug_true_shows_the_traceback_instead(broken):
    with pytest.raises(multitx.UserError, match="is a charlm run"):
        run_cli(predict_main, [f"run_dir={broken['charlm']}", f"image={broken['picture']}", "debug=true"])
