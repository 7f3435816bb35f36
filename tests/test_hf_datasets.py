"""Hugging Face datasets folders as sources (data=hf_images, data=hf_captions; multitx/data/images/hf_folder.py):
folders written here by the datasets package itself, with DatasetDict.save_to_disk and Dataset.to_parquet,
holding images of mixed sizes and colour modes (RGB, grey, RGBA, palette) as datasets' Image feature stores
them. They train a ViT and a captioner; they read the same through the shard cache, lazily, from either format;
and a folder without the named column or split, or a machine without the package, is one line."""

import io
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from multitx import train
from multitx.cli import load_config, run_cli
from multitx.data.captions.datasets import load_split
from multitx.data.images.datasets import load_hf_images
from multitx.data.images.images import EncodedImage, decode_image
from multitx.engine.trainer import check
from multitx.errors import UserError
from tests.conftest import tiny_caption_args
from tests.test_bad_inputs import image_args
from tests.test_image_cache import one_line_error

datasets = pytest.importorskip("datasets")  # the hf extra; the test extra installs it

MODES = ("RGB", "L", "RGBA", "P")
CLASSES = ["dark", "red"]


def png(label: int, i: int) -> bytes:
    """A picture of class `label` (red or dark), of one of two sizes, in one of four colour modes."""
    h, w = (20, 24) if i % 3 else (12, 16)
    pixels = np.zeros((h, w, 3), np.uint8)
    pixels[..., 0] = 40 + 180 * label
    pixels[h // 4 : h // 2, w // 4 : w // 2] = 255 - 30 * (i % 5)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(MODES[i % len(MODES)]).save(buffer, format="PNG")
    return buffer.getvalue()


def rows(n: int) -> dict:
    labels = [i % 2 for i in range(n)]
    images = [{"bytes": png(label, i), "path": None} for i, label in enumerate(labels)]
    captions = [[f"a {CLASSES[label]} picture", f"a picture of {i % 3} things"] if i % 2 else
                f"a {CLASSES[label]} square" for i, label in enumerate(labels)]
    return {"image": images, "label": labels, "caption": captions}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict:
    """The same data three ways: a save_to_disk folder with a ClassLabel, parquet files in the Hub's data/
    layout, and a folder of captions (text in one row, lists of text in the next) whose val split is `test`."""
    tmp = tmp_path_factory.mktemp("hf")
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES)})
    made = {"train": rows(24), "validation": rows(8)}
    splits = {name: datasets.Dataset.from_dict({"image": r["image"], "label": r["label"]}, features=features)
              for name, r in made.items()}
    datasets.DatasetDict(splits).save_to_disk(str(tmp / "saved"))
    for name, split in splits.items():
        split.to_parquet(str(tmp / "parquet" / "data" / f"{name}-00000-of-00001.parquet"))
    for name, r in (("train", rows(24)), ("test", rows(8))):
        captions = [c if isinstance(c, list) else [c] for c in r["caption"]]
        captions[5] = []  # no caption: left out
        datasets.Dataset.from_dict({"image": r["image"], "text": captions},
                                   features=datasets.Features({"image": datasets.Image(),
                                                               "text": datasets.Sequence(datasets.Value("string"))})
                                   ).save_to_disk(str(tmp / "captions" / name))
    (tmp / "captions" / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    return {"saved": tmp / "saved", "parquet": tmp / "parquet", "captions": tmp / "captions", "tmp": tmp,
            "made": made}


def image_data(root, **extra):
    cfg = load_config(["task=vit_cifar", "data=hf_images", f"data.root={root}", *(f"data.{k}={v}" for k, v in
                                                                                extra.items())])
    return cfg.data


def test_both_formats_give_every_image_as_decode_image_reads_its_bytes(folders, tmp_path):
    made = folders["made"]
    expected = torch.stack([decode_image(EncodedImage("x", cell["bytes"]), (16, 16), 3)
                            for cell in made["train"]["image"]])
    saved, _ = load_hf_images(image_data(folders["saved"]), tmp_path / "data", (16, 16))
    parquet, test = load_hf_images(image_data(folders["parquet"]), tmp_path / "data", (16, 16))
    lazy, _ = load_hf_images(image_data(folders["parquet"], cache="lazy"), tmp_path / "lazy", (16, 16))
    for got in (saved, parquet, lazy):
        assert torch.equal(got.images.tensor(), expected)
        assert got.labels.tolist() == made["train"]["label"] and got.classes == CLASSES
    assert len(test) == 8 and test.classes == CLASSES
    assert not (tmp_path / "lazy").exists()
    assert torch.equal(lazy.images[[7, 2]].tensor(), expected[[7, 2]])  # cells read one at a time


def test_grey_images_and_labels_without_a_classlabel(tmp_path):
    """Labels as text are sorted into classes; as whole numbers, 0 .. max."""
    for labels, classes in ((["dog", "cat", "dog", "cat"], ["cat", "dog"]), ([2, 0, 1, 2], ["0", "1", "2"])):
        folder = tmp_path / f"{type(labels[0]).__name__}"
        part = {"image": [{"bytes": png(i % 2, i), "path": None} for i in range(4)], "label": labels}
        features = datasets.Features({"image": datasets.Image(), "label": datasets.Value(
            "string" if isinstance(labels[0], str) else "int64")})
        datasets.DatasetDict({"train": datasets.Dataset.from_dict(part, features=features),
                              "test": datasets.Dataset.from_dict(part, features=features)}).save_to_disk(str(folder))
        train_set, test_set = load_hf_images(image_data(folder, channels=1), tmp_path / "data", (8, 8))
        assert train_set.classes == classes and train_set.images.shape == (4, 1, 8, 8)
        assert [classes[i] for i in train_set.labels.tolist()] == [str(v) for v in labels]


def test_an_hf_folder_trains_a_vit(folders, tmp_path):
    run_dir = tmp_path / "run"
    run_cli(train.main, image_args(folders["saved"], run_dir, "data=hf_images", "data.channels=1"))
    info = json.loads((run_dir / "classes.json").read_text())
    assert info["classes"] == CLASSES and info["channels"] == 1
    rows_ = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows_[-1]["split"] == "test" and 0 <= rows_[-1]["test_acc"] <= 1


def test_an_hf_folder_of_captions_trains_a_captioner(folders, tmp_path):
    args = tiny_caption_args(tmp_path, "data=hf_captions", f"data.root={folders['captions']}",
                             "data.caption_column=text", "data.val_fraction=0.2", "data.min_word_count=1",
                             "batch_size=4", "steps=4", "eval_every=4", "eval_images=4")
    run_cli(train.main, [a for a in args if not a.startswith("data.num_")])
    run = tmp_path / "run"
    vocab = json.loads((run / "vocab.json").read_text())
    assert {"red", "dark", "things", "square"} <= set(vocab["vocab"])  # from texts and from lists of texts
    tested = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert tested["split"] == "test" and "test_bleu4" in tested


def test_caption_splits_leave_out_rows_without_captions(folders, tmp_path):
    data = load_config(["task=caption", "data=hf_captions", f"data.root={folders['captions']}",
                        "data.caption_column=text"]).data
    split = load_split(data, "train", 16, tmp_path / "data")
    assert len(split) == 23 and "train-5" not in split.names and split.names[5] == "train-6"
    assert split.captions[0] == ["a dark square"] and split.captions[1] == ["a red picture", "a picture of 1 things"]
    made = rows(24)["image"][6]["bytes"]
    assert torch.equal(split.images[5], decode_image(EncodedImage("x", made), 16, 3))
    assert len(load_split(data, "test", 16, tmp_path / "data")) == 7  # val_split null: no validation, so test


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("extra, message", [
    (["data.image_column=img"], "data.root={root} (train) has no column 'img' (data.image_column); its columns: "
                                "image, label"),
    (["data.label_column=class"], "data.root={root} (train) has no column 'class' (data.label_column); its columns: "
                                  "image, label"),
    (["data.val_split=dev"], "{root} has no split 'dev' (data.val_split); its splits: train, validation"),
])
def test_a_folder_without_the_named_column_or_split_is_one_line_error(folders, tmp_path, capsys, extra, message):
    for root in (folders["saved"], folders["parquet"]):
        err = one_line_error(image_args(root, tmp_path / "run", "data=hf_images", *extra), capsys)
        assert message.format(root=root) in err


def test_a_captions_folder_without_the_caption_column_is_one_line_error(folders, tmp_path, capsys):
    err = one_line_error(["task=caption", "data=hf_captions", f"data.root={folders['captions']}",
                    f"run_dir={tmp_path / 'run'}", f"data_dir={tmp_path / 'data'}", "device=cpu"], capsys)
    assert f"data.root={folders['captions']} (train) has no column 'caption' (data.caption_column); its columns: " \
           f"image, text" in err


def test_a_folder_that_is_no_datasets_folder_is_one_line_error(tmp_path, capsys):
    (tmp_path / "plain").mkdir()
    err = one_line_error(image_args(tmp_path / "plain", tmp_path / "run", "data=hf_images"), capsys)
    assert "holds neither dataset_dict.json nor .parquet files" in err


def test_without_the_datasets_package_it_is_one_line_before_anything_is_read(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    for task, name in (("vit_cifar", "hf_images"), ("caption", "hf_captions")):
        cfg = load_config([f"task={task}", f"data={name}", f"data.root={tmp_path}", f"run_dir={tmp_path / 'run'}"])
        with pytest.raises(UserError, match=rf"data={name} reads .* not installed: pip install 'multitx\[hf\]'"):
            check(cfg)
