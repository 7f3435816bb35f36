"""Caption data: the word tokenizer, the shapes generator, the COCO and Flickr loaders, the batches."""

import json
import os

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from multitx.data.captions import shapes
from multitx.data.captions.batches import CaptionBatches
from multitx.data.captions.datasets import CaptionSplit, load_split
from multitx.data.captions.vocab import WordVocab, normalize
from multitx.data.images import sources
from multitx.data.images.images import decode_image
from multitx.errors import UserError


def test_word_tokenizer_round_trip(tmp_path):
    tok = WordVocab.from_captions(["A red circle.", "a blue Circle, left of a red square"])
    assert tok.vocab[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert tok.vocab[4:6] == ["a", "circle"]  # most frequent first
    ids = tok.encode("A red circle!")
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert tok.decode(ids) == "a red circle"
    assert tok.decode(tok.encode("a green circle")) == "a <unk> circle"
    assert tok.encode("a red circle left of a red square", max_len=5) == [tok.bos_id, *tok.encode("a red circle")[1:]]
    tok.save(tmp_path / "vocab.json")
    assert WordVocab.load(tmp_path / "vocab.json").vocab == tok.vocab
    assert normalize("The Dog's toys, on the grass.") == "the dog's toys on the grass"


def test_min_word_count_sends_rare_words_to_unk():
    tok = WordVocab.from_captions(["a dog", "a dog", "a zebra"], min_count=2)
    assert "zebra" not in tok.vocab and tok.decode(tok.encode("a zebra")) == "a <unk>"


def test_shapes_are_deterministic_and_the_test_split_is_unseen():
    images, captions, scenes = shapes.generate("train", 300, 32, seed=3)
    again, captions_again, _ = shapes.generate("train", 300, 32, seed=3)
    assert images.shape == (300, 32, 32, 3) and images.dtype == np.uint8
    assert np.array_equal(images, again) and captions == captions_again
    assert not np.array_equal(images, shapes.generate("train", 300, 32, seed=4)[0])
    test_images, test_captions, test_scenes = shapes.generate("test", 200, 32, seed=3)

    def combinations(scene):
        return shapes.Scene([shapes.Shape(**s) for s in scene["shapes"]], scene["layout"],
                            scene["place"]).combinations()

    held_out = shapes.HELD_OUT_OBJECTS | shapes.HELD_OUT_ARRANGEMENTS
    train_seen = set().union(*map(combinations, scenes))
    assert not train_seen & held_out, "training never shows a held-out combination"
    test_seen = [combinations(s) for s in test_scenes]
    assert all(found & held_out for found in test_seen), "every test image has one"
    everywhere = set().union(*test_seen)
    assert everywhere & shapes.HELD_OUT_OBJECTS and everywhere & shapes.HELD_OUT_ARRANGEMENTS
    assert {len(s["shapes"]) for s in scenes} == {1, 2, 3}
    for caps, scene in zip(test_captions, test_scenes, strict=True):
        assert len(set(caps)) == 3  # three different phrasings ...
        for s in scene["shapes"]:  # ... each naming every shape
            assert all(f"{s['size']} {s['colour']} {s['kind']}" in c for c in caps)


def test_shapes_split_is_generated_once_into_data_dir(tmp_path):
    data = OmegaConf.create({"name": "shapes", "num_train": 20, "num_val": 6, "num_test": 6, "seed": 0})
    first = load_split(data, "val", 24, tmp_path)
    assert len(list((tmp_path / "shapes" / "val").rglob("images-*.npy"))) == 1  # one shard (data/images/shards.py)
    second = load_split(data, "val", 24, tmp_path)
    assert np.array_equal(first.images, second.images) and first.captions == second.captions
    assert first.images.shape == (6, 3, 24, 24)


# ---------------------------------------------------------------------------------------------- user datasets


def write_image(path, colour, size=(40, 30), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format=fmt)


def make_coco(root, corrupt: str | None = None):
    """A miniature COCO: annotations/captions_{train,val}2017.json and the two image folders."""
    for split, count in (("train2017", 4), ("val2017", 2)):
        images, annotations = [], []
        for i in range(count):
            name = f"{i:012d}.jpg"
            write_image(root / split / name, (40 * i, 100, 200), fmt="JPEG")
            images.append({"id": 100 + i, "file_name": name, "height": 30, "width": 40})
            annotations += [{"id": 10 * i + k, "image_id": 100 + i, "caption": f"A photo number {i}, take {k}."}
                            for k in range(5)]
        images.append({"id": 999, "file_name": "uncaptioned.jpg"})  # no captions: skipped
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"captions_{split}.json").write_text(
            json.dumps({"images": images, "annotations": annotations}))
    if corrupt:
        (root / "train2017" / corrupt).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")


def coco_cfg(root, **extra):
    return OmegaConf.create({"name": "coco", "root": None if root is None else str(root), "train_split": "train2017",
                             "val_split": "val2017", "max_images": None, "min_word_count": 1, **extra})


def test_coco_loader(tmp_path):
    make_coco(tmp_path / "coco")
    train = load_split(coco_cfg(tmp_path / "coco"), "train", 16, tmp_path / "cache")
    val = load_split(coco_cfg(tmp_path / "coco"), "val", 16, tmp_path / "cache")
    assert train.images.shape == (4, 3, 16, 16) and val.images.shape == (2, 3, 16, 16)
    assert train.captions[1][0] == "A photo number 1, take 0." and len(train.captions[1]) == 5
    assert train.names[0] == "000000000000.jpg"
    assert tuple(train.images[1, :, 8, 8].tolist()) == pytest.approx((40, 100, 200), abs=3)  # resized, colours kept
    assert len(load_split(coco_cfg(tmp_path / "coco", max_images=2), "train", 16, tmp_path / "cache")) == 2


def test_coco_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(UserError, match="data.root=DIR"):
        load_split(coco_cfg(None), "train", 16, tmp_path)
    with pytest.raises(UserError, match="captions_train2017.json is missing"):
        load_split(coco_cfg(tmp_path), "train", 16, tmp_path)
    make_coco(tmp_path / "coco", corrupt="000000000002.jpg")
    with pytest.raises(UserError, match=r"cannot read image .*train2017/000000000002\.jpg.*corrupt") as err:
        load_split(coco_cfg(tmp_path / "coco"), "train", 16, tmp_path / "cache")
    assert "\n" not in str(err.value)
    (tmp_path / "coco" / "train2017" / "000000000002.jpg").unlink()
    with pytest.raises(UserError, match=r"image .*000000000002\.jpg does not exist"):
        load_split(coco_cfg(tmp_path / "coco"), "train", 16, tmp_path / "cache")


def make_flickr(root, style: str):
    names = [f"{1000 + i}_abc.jpg" for i in range(5)]
    for i, name in enumerate(names):
        write_image(root / "Images" / name, (50 * i, 50, 50), fmt="JPEG")
    if style == "csv":  # the Kaggle copies of Flickr8k / Flickr30k
        lines = ["image,caption"] + [f'{n},"A dog, number {i}, runs."' for i, n in enumerate(names) for _ in range(2)]
    else:  # Flickr8k.token.txt
        lines = [f"{n}#{k}\tA dog number {i} runs ." for i, n in enumerate(names) for k in range(2)]
    (root / "captions.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return names


def flickr_cfg(root, **extra):
    return OmegaConf.create({"name": "flickr", "root": None if root is None else str(root), "captions": "captions.txt",
                             "images": None, "val_size": 2, "seed": 0, "max_images": None, "min_word_count": 1,
                             **extra})


@pytest.mark.parametrize("style", ["csv", "token"])
def test_flickr_loader(tmp_path, style):
    names = make_flickr(tmp_path / "flickr", style)
    train = load_split(flickr_cfg(tmp_path / "flickr"), "train", 8, tmp_path / "cache")
    val = load_split(flickr_cfg(tmp_path / "flickr"), "val", 8, tmp_path / "cache")
    assert len(train) == 3 and len(val) == 2 and sorted(train.names + val.names) == names
    assert train.images.shape == (3, 3, 8, 8)
    i = names.index(val.names[0])
    expected = f"A dog, number {i}, runs." if style == "csv" else f"A dog number {i} runs ."
    assert val.captions[0] == [expected, expected]


def test_flickr_errors(tmp_path):
    with pytest.raises(UserError, match="data.root=DIR"):
        load_split(flickr_cfg(None), "train", 8, tmp_path)
    with pytest.raises(UserError, match="captions.txt is missing"):
        load_split(flickr_cfg(tmp_path), "train", 8, tmp_path)
    make_flickr(tmp_path / "flickr", "csv")
    (tmp_path / "flickr" / "Images" / "1003_abc.jpg").write_bytes(b"\x89PNG broken")
    with pytest.raises(UserError, match=r"cannot read image .*Images/1003_abc\.jpg"):
        load_split(flickr_cfg(tmp_path / "flickr", val_size=1), "train", 8, tmp_path / "cache")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "Images").mkdir()
    (tmp_path / "bad" / "captions.txt").write_text("photo;text\nx;y\n")
    with pytest.raises(UserError, match="image,caption"):
        load_split(flickr_cfg(tmp_path / "bad"), "train", 8, tmp_path / "cache")


def test_decode_image_resizes_any_file(tmp_path):
    write_image(tmp_path / "wide.png", (10, 200, 30), size=(90, 20))
    Image.new("L", (20, 20), 128).save(tmp_path / "grey.png")
    assert decode_image(tmp_path / "wide.png", 12).shape == (3, 12, 12)
    assert decode_image(tmp_path / "grey.png", 12)[:, 5, 5].tolist() == [128, 128, 128]
    assert decode_image(tmp_path / "grey.png", (6, 8), channels=1).shape == (1, 6, 8)


def test_decode_image_scales_to_cover_and_crops_the_centre(tmp_path):
    """A 90x30 image of three 30x30 squares (red, green, blue) at 15x15: the green middle, unstretched."""
    pixels = np.zeros((30, 90, 3), dtype=np.uint8)
    for i in range(3):
        pixels[:, 30 * i : 30 * (i + 1), i] = 255
    Image.fromarray(pixels).save(tmp_path / "three.png")
    image = decode_image(tmp_path / "three.png", 15)  # (3, 15, 15)
    assert image.shape == (3, 15, 15)
    assert (image[1, :, 2:-2] == 255).all() and (image[[0, 2], :, 2:-2] == 0).all()
    assert decode_image(tmp_path / "three.png", None).shape == (3, 30, 90)


# ---------------------------------------------------------------------------------------------- batches


def toy_split(n: int = 10) -> CaptionSplit:
    images = torch.arange(n, dtype=torch.uint8)[:, None, None, None].repeat(1, 3, 4, 4)  # (N, 3, 4, 4)
    captions = [[f"image {i} caption {k}" + " long" * (k % 3) for k in range(1 + i % 3)] for i in range(n)]
    return CaptionSplit(images, captions, [str(i) for i in range(n)])


def test_batches_pair_images_with_their_own_captions():
    split = toy_split()
    tok = WordVocab.from_captions(c for caps in split.captions for c in caps)
    batches = CaptionBatches(split, tok, batch_size=4, max_len=12, seed=0, captions_per_image=2)
    batch = next(batches)
    assert batch["images"].shape == (4, 3, 4, 4) and batch["images"].dtype == torch.uint8
    assert batch["ids"].shape[:2] == (4, 2)
    for image, captions in zip(batch["images"], batch["ids"], strict=True):
        i = int(image[0, 0, 0])
        for ids in captions:
            assert tok.decode(ids.tolist()) in [normalize(c) for c in split.captions[i]]
    assert (batch["ids"] != tok.pad_id).sum(-1).max() == batch["ids"].shape[-1], "trimmed to the longest"


def test_batches_resume_exactly_mid_epoch():
    split = toy_split()
    tok = WordVocab.from_captions(c for caps in split.captions for c in caps)
    make = lambda: CaptionBatches(split, tok, batch_size=3, max_len=12, seed=5, captions_per_image=2)  # noqa: E731
    reference = make()
    for _ in range(4):  # past the end of the first epoch (3 batches of 3 from 10 images)
        next(reference)
    state = reference.state_dict()
    assert state["epoch"] == 1
    expected = [next(reference) for _ in range(5)]
    resumed = make()
    resumed.load_state_dict(state)
    for want in expected:
        got = next(resumed)
        assert torch.equal(got["images"], want["images"]) and torch.equal(got["ids"], want["ids"])


def test_processes_split_each_global_batch():
    """Two processes' batches, side by side, are one process's batch of twice the size."""
    split = toy_split()
    tok = WordVocab.from_captions(c for caps in split.captions for c in caps)
    single = CaptionBatches(split, tok, batch_size=4, max_len=12, seed=5, captions_per_image=2)
    ranks = [CaptionBatches(split, tok, batch_size=2, max_len=12, seed=5, captions_per_image=2, rank=r,
                            world_size=2) for r in range(2)]
    for _ in range(5):  # across epochs: 2 global batches of 4 from 10 images each
        whole, parts = next(single), [next(r) for r in ranks]
        assert torch.equal(whole["images"], torch.cat([p["images"] for p in parts]))
        for i, part in enumerate(parts):
            ids = part["ids"]
            assert torch.equal(whole["ids"][2 * i:2 * i + 2, :, :ids.shape[-1]], ids)


def same_batches(got: list[dict], want: list[dict]) -> bool:
    return len(got) == len(want) and all(torch.equal(g["images"], w["images"]) and torch.equal(g["ids"], w["ids"])
                                         for g, w in zip(got, want, strict=True))


def test_workers_make_the_batches_this_process_makes():
    split = toy_split()
    tok = WordVocab.from_captions(c for caps in split.captions for c in caps)
    here = CaptionBatches(split, tok, batch_size=3, max_len=12, seed=5, captions_per_image=2)
    workers = CaptionBatches(split, tok, batch_size=3, max_len=12, seed=5, captions_per_image=2, workers=2)
    got = [next(workers) for _ in range(7)]  # across two epochs: 3 batches of 3 from 10 images each
    workers.close()
    assert same_batches(got, [next(here) for _ in range(7)])


def test_batches_made_by_workers_resume_exactly():
    split = toy_split()
    tok = WordVocab.from_captions(c for caps in split.captions for c in caps)
    make = lambda seed=5, workers=0: CaptionBatches(split, tok, batch_size=3, max_len=12, seed=seed,  # noqa: E731
                                                    captions_per_image=2, workers=workers)
    reference = make()
    expected = [next(reference) for _ in range(8)]
    first = make(workers=2)
    assert same_batches([next(first) for _ in range(4)], expected[:4])  # its workers have made more, ahead
    state = first.state_dict()
    first.close()
    resumed = make(workers=2, seed=99)  # the state holds the seed too
    resumed.load_state_dict(state)
    got = [next(resumed) for _ in range(4)]
    resumed.close()
    assert same_batches(got, expected[4:])


def test_lazy_images_are_decoded_in_the_workers_not_in_this_process(tmp_path, monkeypatch):
    make_flickr(tmp_path / "flickr", "csv")
    split = load_split(flickr_cfg(tmp_path / "flickr", cache="lazy"), "train", 8, tmp_path / "cache")  # 3 images
    tok = WordVocab.from_captions(c for caps in split.captions for c in caps)
    log = tmp_path / "decoded-by.txt"  # a file: the workers' own lists would stay in the workers
    real = sources.decode_image

    def logged(path, size, channels=3):  # the forked workers inherit the patch
        with open(log, "a", encoding="utf-8") as out:
            out.write(f"{os.getpid()}\n")
        return real(path, size, channels)

    monkeypatch.setattr(sources, "decode_image", logged)
    workers = CaptionBatches(split, tok, batch_size=1, max_len=12, seed=0, workers=2)
    got = [next(workers) for _ in range(4)]
    workers.close()
    decoders = set(log.read_text(encoding="utf-8").split())
    assert decoders and str(os.getpid()) not in decoders, "the workers decode, this process does not"
    log.unlink()
    here = CaptionBatches(split, tok, batch_size=1, max_len=12, seed=0)
    assert same_batches(got, [next(here) for _ in range(4)])
    assert set(log.read_text(encoding="utf-8").split()) == {str(os.getpid())}, "without workers: this process"
