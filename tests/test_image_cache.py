"""The shard cache (multitx/data/images/shards.py): an image set is decoded once into uint8 shards under
DATA_DIR and memory-mapped by every later run; a changed source is built again and said in one line; a
build that was killed is never taken for complete; data.cache=lazy decodes each image when drawn. And
what reads the cache: ImageRows (a view that acts as the tensor it covers), resumed and two-process runs,
and the one-line errors of caption files that name images that are not there."""

import json
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from multitx import train
from multitx.cli import run_cli
from multitx.data.captions.datasets import load_split
from multitx.data.images import shards, sources
from multitx.data.images.batches import ShuffledBatches
from multitx.data.images.datasets import load_imagefolder
from multitx.data.images.rows import ImageRows
from multitx.data.images.splits import hold_out
from multitx.errors import UserError
from tests.conftest import REPO
from tests.helpers_vision import write_imagefolder
from tests.test_bad_inputs import image_args
from tests.test_caption_data import coco_cfg, make_coco, make_flickr
from tests.test_engine import (
    assert_same_training,
    killed_then_resumed,
    train_in_process,
    train_in_two_processes,
    trained_beside,
    weights,
)

SIZE = (16, 16)


@pytest.fixture
def decodes(monkeypatch) -> list:
    """Every image the shard cache's sources decode, by path, as it is decoded."""
    seen = []
    real = sources.decode_image

    def counted(path, size, channels=3):
        seen.append(str(path))
        return real(path, size, channels)

    monkeypatch.setattr(sources, "decode_image", counted)
    return seen


def in_memory(root: Path, channels: int = 3):
    """The folder decoded into memory, as without a cache: what the cached sets must equal."""
    return load_imagefolder(root, channels, SIZE)


def states(data_dir: Path) -> list[Path]:
    """The complete builds under DATA_DIR (each a folder with meta.json)."""
    return sorted(p.parent for p in data_dir.rglob("meta.json"))


# ------------------------------------------------------------------------------------------ built once, reused

def test_the_second_run_decodes_nothing_and_reads_the_same_pixels(tmp_path, decodes, capsys):
    root = write_imagefolder(tmp_path / "images", per_class=6)  # 12 train, 6 val images
    expected_train, expected_val = in_memory(root)
    train_set, val_set = load_imagefolder(root, 3, SIZE, tmp_path / "data")
    assert len(decodes) == 18
    said = capsys.readouterr().out.splitlines()
    assert len(said) == 2 and all(line.startswith("decoding the ") for line in said), said
    assert isinstance(train_set.images, ImageRows) and train_set.images.shape == (12, 3, 16, 16)
    assert len(states(tmp_path / "data")) == 2  # train and val, each one build

    decodes.clear()
    again_train, again_val = load_imagefolder(root, 3, SIZE, tmp_path / "data")
    assert decodes == [] and capsys.readouterr().out == ""
    assert torch.equal(again_train.images.tensor(), expected_train.images)
    assert torch.equal(again_val.images.tensor(), expected_val.images)
    assert torch.equal(again_train.labels, expected_train.labels) and again_train.classes == expected_train.classes


def test_a_cache_hit_does_not_open_a_single_image(tmp_path):
    """Every source image overwritten with zeros of its own size and given back its modification time: the
    cache, keyed by names, sizes and times, is still taken, and still holds the pictures."""
    root = write_imagefolder(tmp_path / "images", per_class=4)
    expected, _ = in_memory(root)
    load_imagefolder(root, 3, SIZE, tmp_path / "data")
    for path in root.rglob("*.*"):
        stat = path.stat()
        path.write_bytes(b"\0" * stat.st_size)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    cached, _ = load_imagefolder(root, 3, SIZE, tmp_path / "data")
    assert torch.equal(cached.images.tensor(), expected.images)
    with pytest.raises(UserError, match="cannot read image"):
        in_memory(root)  # the files themselves are unreadable now


def test_another_size_or_channel_count_is_a_cache_of_its_own(tmp_path, decodes):
    root = write_imagefolder(tmp_path / "images", per_class=4)
    load_imagefolder(root, 3, SIZE, tmp_path / "data")
    grey, _ = load_imagefolder(root, 1, (8, 12), tmp_path / "data")
    assert grey.images.shape == (8, 1, 8, 12)
    assert torch.equal(grey.images.tensor(), load_imagefolder(root, 1, (8, 12))[0].images)
    assert len(states(tmp_path / "data")) == 4


# ------------------------------------------------------------------------------------------- a changed source

def test_a_changed_folder_is_built_again_and_said_in_one_line(tmp_path, capsys):
    root = write_imagefolder(tmp_path / "images", per_class=4)
    load_imagefolder(root, 3, SIZE, tmp_path / "data")
    first = states(tmp_path / "data")
    capsys.readouterr()
    train_dir = root / "train"
    Image.new("RGB", (20, 24), (0, 255, 0)).save(train_dir / "circle" / "9.png")  # added
    (train_dir / "square" / "0.jpg").unlink()  # removed
    Image.new("RGB", (20, 24), (255, 255, 255)).save(train_dir / "square" / "1.png")  # modified
    changed, _ = load_imagefolder(root, 3, SIZE, tmp_path / "data")
    said = capsys.readouterr().out.splitlines()
    folder = next(p.parent for p in first if p.parent.parent.name == "train")
    assert said == [f"data.root={root} (train) changed since its shard cache was built (1 added, 1 removed, "
                    f"1 modified); decoding its 8 images again into {folder}"]
    assert torch.equal(changed.images.tensor(), in_memory(root)[0].images)
    assert int(changed.images[5].float().mean()) == 255  # the white one: circle 0-3 and 9, then square 1
    now = states(tmp_path / "data")
    assert len(now) == 2 and len(set(now) - set(first)) == 1, "the stale build of train is deleted"


def test_a_killed_build_is_never_taken_for_complete(tmp_path, decodes):
    """A build SIGKILLed after its first shard (of three) is complete: the next run builds again (every image
    decoded), deletes what the killed one left, and reads the right pictures."""
    root = write_imagefolder(tmp_path / "images", per_class=6)
    script = f"""
import os, signal
from multitx.data.images import shards, sources
from multitx.data.images.datasets import load_imagefolder
shards.SHARD_BYTES = 5 * 3 * 16 * 16  # five images a shard: 12 training images make three
real, count = sources.decode_image, [0]
def dying(path, size, channels=3):
    count[0] += 1
    if count[0] == 8:  # inside the second shard
        os.kill(os.getpid(), signal.SIGKILL)
    return real(path, size, channels)
sources.decode_image = dying
load_imagefolder({str(root)!r}, 3, (16, 16), {str(tmp_path / 'data')!r})
"""
    killed = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = list((tmp_path / "data").rglob(".partial-*"))
    assert len(left) == 1 and (left[0] / "images-00000.npy").is_file() and not (left[0] / "meta.json").exists()
    assert states(tmp_path / "data") == []

    train_set, _ = load_imagefolder(root, 3, SIZE, tmp_path / "data")
    assert len(decodes) == 12 + 6  # all of train again, and val
    assert list((tmp_path / "data").rglob(".partial-*")) == []
    assert torch.equal(train_set.images.tensor(), in_memory(root)[0].images)


def test_a_build_stopped_by_an_error_leaves_nothing(tmp_path):
    root = write_imagefolder(tmp_path / "images", per_class=4)
    (root / "train" / "square" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)  # a PNG cut short
    with pytest.raises(UserError, match=r"cannot read image .*train/square/3\.png"):
        load_imagefolder(root, 3, SIZE, tmp_path / "data")
    assert [p.name for p in (tmp_path / "data").rglob("*") if p.is_file()] == ["build.lock"]


# ---------------------------------------------------------------------------------------- lazy, and no room

def test_lazy_decodes_each_image_when_drawn_and_writes_nothing(tmp_path, decodes):
    root = write_imagefolder(tmp_path / "images", per_class=6)
    expected, _ = in_memory(root)
    lazy, _ = load_imagefolder(root, 3, SIZE, tmp_path / "data", "lazy")
    assert decodes == [] and not (tmp_path / "data").exists()
    batch = lazy.images.take(torch.tensor([3, 0, 3]))
    assert torch.equal(batch, expected.images[[3, 0, 3]]) and len(decodes) == 3
    assert torch.equal(lazy.images.tensor(), expected.images)


def test_lazy_batches_resume_exactly_and_equal_the_in_memory_ones(tmp_path):
    root = write_imagefolder(tmp_path / "images", per_class=8)
    memory, _ = in_memory(root)
    lazy, _ = load_imagefolder(root, 3, SIZE, tmp_path / "data", "lazy")
    kept, _ = hold_out(lazy, 0.25, 0)  # a view: nothing decoded
    kept_memory, _ = hold_out(memory, 0.25, 0)
    reference = ShuffledBatches(kept_memory, 4, seed=3)
    expected = [next(reference) for _ in range(7)]  # 12 images: 3 batches an epoch, so across two epochs
    first = ShuffledBatches(kept, 4, seed=3)
    got = [next(first) for _ in range(4)]
    resumed = ShuffledBatches(kept, 4, seed=99)
    resumed.load_state_dict(first.state_dict())
    got += [next(resumed) for _ in range(3)]
    for (a, la), (b, lb) in zip(expected, got, strict=True):
        assert torch.equal(a, b) and torch.equal(la, lb)


def test_auto_without_room_for_the_shards_decodes_lazily_and_says_so(tmp_path, monkeypatch, capsys):
    root = write_imagefolder(tmp_path / "images", per_class=4)
    monkeypatch.setattr(shards.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 1000})())
    got, _ = load_imagefolder(root, 3, SIZE, tmp_path / "data", "auto")
    said = capsys.readouterr().out.splitlines()
    assert len(said) == 2 and "would take 6.1 kB as shards, more than 90% of the 1.0 kB free" in said[0]
    assert "decoding each image when it is drawn instead (data.cache=lazy" in said[0]
    assert isinstance(got.images.store, shards.DecodedStore) and states(tmp_path / "data") == []
    with pytest.raises(UserError, match="would take 6.1 kB as shards.* or set data.cache=lazy"):
        load_imagefolder(root, 3, SIZE, tmp_path / "data", "shards")


# ----------------------------------------------------------------------------------------------- ImageRows

def test_image_rows_act_as_the_tensor_they_view_across_shards(tmp_path, monkeypatch):
    monkeypatch.setattr(shards, "SHARD_BYTES", 5 * 3 * 16 * 16)  # five images a shard
    root = write_imagefolder(tmp_path / "images", per_class=7)
    memory = in_memory(root)[0].images  # (14, 3, 16, 16)
    rows = load_imagefolder(root, 3, SIZE, tmp_path / "data")[0].images
    assert len(rows.store.meta["shards"]) == 3
    picked = torch.tensor([13, 0, 5, 4, 9, 5])  # every shard, out of order, one twice
    assert torch.equal(rows.take(picked), memory[picked])
    view = rows[picked]
    assert isinstance(view, ImageRows) and view.shape == (6, 3, 16, 16)
    assert torch.equal(view[1:4].tensor(), memory[picked][1:4])  # a view of a view
    assert torch.equal(rows[-1], memory[-1]) and torch.equal(rows[2, 1], memory[2, 1])
    assert torch.equal(rows[:, 0, 3, 3], memory[:, 0, 3, 3])
    mask = torch.arange(14) % 3 == 0
    assert torch.equal(rows[mask].tensor(), memory[mask])
    assert torch.equal(rows[3:11:2].float(), memory[3:11:2].float())  # a tensor's method: as that tensor
    assert torch.equal(rows[2:5].permute(0, 2, 3, 1), memory[2:5].permute(0, 2, 3, 1))
    assert torch.equal(rows[:4], memory[:4]) and np.array_equal(np.asarray(rows[:2]), memory[:2].numpy())
    assert [tuple(image.shape) for image in rows[:2]] == [(3, 16, 16)] * 2
    with pytest.raises(IndexError):
        rows[14]
    again = pickle.loads(pickle.dumps(rows[picked]))  # as a DataLoader worker started by spawn gets it
    assert again.store.maps is None and torch.equal(again.tensor(), memory[picked])


def test_holding_out_from_the_cache_copies_no_image(tmp_path, monkeypatch):
    root = write_imagefolder(tmp_path / "images", per_class=6)
    rows_set = load_imagefolder(root, 3, SIZE, tmp_path / "data")[0]
    reads = []
    real = shards.ShardStore.read
    monkeypatch.setattr(shards.ShardStore, "read", lambda self, rows: reads.append(len(rows)) or real(self, rows))
    kept, held = hold_out(rows_set, 0.25, 0)
    assert reads == [] and isinstance(kept.images, ImageRows) and isinstance(held.images, ImageRows)
    kept_memory, held_memory = hold_out(in_memory(root)[0], 0.25, 0)
    assert torch.equal(kept.images.tensor(), kept_memory.images) and torch.equal(held.images.tensor(),
                                                                                held_memory.images)


# ------------------------------------------------------------------------------------------- whole runs

def run_dir_args(images: Path, run_dir: Path, data_dir: Path, *extra: str) -> list[str]:
    return [a for a in image_args(images, run_dir, *extra) if not a.startswith("data_dir=")] + \
        [f"data_dir={data_dir}"]


def test_a_shard_cached_folder_killed_mid_epoch_resumes_exactly(tmp_path):
    """The reference and the killed run start together on one DATA_DIR (one of them builds the shards, the
    other waits and reads them); a batch drawn by a DataLoader worker reads the memory-mapped shards; 36
    training images make 4 steps an epoch, so the checkpoint at step 4 and the kill in step 6 fall in the
    second epoch, and the run goes on into the third."""
    images = write_imagefolder(tmp_path / "images", per_class=20)

    def argv(run_dir: Path) -> list[str]:
        return run_dir_args(images, run_dir, tmp_path / "data", "batch_size=8", "steps=10", "warmup_steps=2",
                            "eval_every=4", "eval_images=8", "data.workers=1", "data.cache=shards",
                            "deterministic=true", "plots=false", "task._target_=tests.engine_helpers.KilledViT")

    with trained_beside(*argv(tmp_path / "reference"), "+kill_at=0"):
        killed_then_resumed(argv(tmp_path / "killed"), kill_at=6)
    assert_same_training(tmp_path / "reference", tmp_path / "killed")
    assert len(states(tmp_path / "data")) == 2, "train and val, each built once"


def test_two_processes_build_the_cache_once_and_train_as_one_process_does(tmp_path, capsys):
    """torchrun, two gloo processes with batches of 4, against one process with batches of 8 (augmentation and
    drop-path off: they draw per process). Both processes ask for the cache at once; one builds it."""
    images = write_imagefolder(tmp_path / "images", per_class=12)
    common = ["steps=4", "eval_every=4", "optimizer=adamw", "model.trunk.drop_path=0", "augment.crop_padding=0",
              "augment.flip=false", "augment.policy=none", "augment.erase=0", "augment.mixup=0", "augment.cutmix=0",
              "plots=false"]
    said = train_in_two_processes(*run_dir_args(images, tmp_path / "ddp", tmp_path / "data", *common, "batch_size=4"))
    capsys.readouterr()
    train_in_process(*run_dir_args(images, tmp_path / "single", tmp_path / "data", *common, "batch_size=8"))
    assert "decoding the" not in capsys.readouterr().out, "the second run reads the cache"
    a, b = weights(tmp_path / "single"), weights(tmp_path / "ddp")
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    assert said.count("decoding the ") == 2, said
    assert len(states(tmp_path / "data")) == 2


# --------------------------------------------------------------------------- caption files naming missing images

def one_line_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        run_cli(train.main, argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def test_a_coco_file_naming_images_that_are_not_there_is_one_line(tmp_path, capsys):
    make_coco(tmp_path / "coco")
    for name in ("000000000001.jpg", "000000000003.jpg"):
        (tmp_path / "coco" / "train2017" / name).unlink()
    err = one_line_error(["task=caption", "data=coco", f"data.root={tmp_path / 'coco'}", f"run_dir={tmp_path / 'r'}",
                          f"data_dir={tmp_path / 'data'}", "device=cpu"], capsys)
    folder = tmp_path / "coco" / "train2017"
    assert (f"2 images are missing from {folder}: image {folder / '000000000001.jpg'} does not exist (the first "
            f"of them); {tmp_path / 'coco' / 'annotations' / 'captions_train2017.json'} names them") in err
    assert not (tmp_path / "data").exists(), "nothing decoded, nothing cached"


@pytest.mark.parametrize("cache", ["shards", "lazy"])
def test_a_flickr_file_naming_an_image_that_is_not_there_is_one_line(tmp_path, capsys, cache):
    names = sorted(make_flickr(tmp_path / "flickr", "csv"))
    training = [names[i] for i in np.random.default_rng(0).permutation(len(names))][1:]  # data.seed=0, val_size=1
    (tmp_path / "flickr" / "Images" / training[2]).unlink()
    err = one_line_error(["task=caption", "data=flickr", f"data.root={tmp_path / 'flickr'}", "data.val_size=1",
                          f"data.cache={cache}", f"run_dir={tmp_path / 'r'}", f"data_dir={tmp_path / 'data'}",
                          "device=cpu"], capsys)
    assert f"1 image is missing from {tmp_path / 'flickr' / 'Images'}: image " in err
    assert f"{training[2]} does not exist; {tmp_path / 'flickr' / 'captions.txt'} names them" in err


def test_coco_and_flickr_splits_come_from_the_cache(tmp_path, decodes):
    make_coco(tmp_path / "coco")
    first = load_split(coco_cfg(tmp_path / "coco"), "train", 16, tmp_path / "data")
    assert len(decodes) == 4 and isinstance(first.images, ImageRows)
    decodes.clear()
    again = load_split(coco_cfg(tmp_path / "coco"), "train", 16, tmp_path / "data")
    assert decodes == [] and torch.equal(again.images.tensor(), first.images.tensor())
    assert again.captions == first.captions and again.names == first.names
    assert json.loads((states(tmp_path / "data")[0] / "meta.json").read_text())["count"] == 4
