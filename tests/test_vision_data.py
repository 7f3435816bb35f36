"""Image datasets on files written in their real formats, batches, augmentation, and a tiny run."""

import json
import pickle
import urllib.error

import numpy as np
import pytest
import torch

from multitx.cli import load_config
from multitx.data.images.augment import DeviceAugment, image_transform
from multitx.data.images.batches import ShuffledBatches
from multitx.data.images.datasets import ImageSet, load_cifar10, load_fashion_mnist, load_imagefolder
from multitx.engine.trainer import train
from multitx.errors import UserError
from tests.helpers_vision import cifar_arrays, write_cifar10, write_fashion_mnist, write_imagefolder


def no_network(*args, **kwargs):
    raise urllib.error.URLError("no network in this test")


# ------------------------------------------------------------------------------------------------ CIFAR-10

def test_cifar10_from_the_archive_offline(tmp_path, monkeypatch):
    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", no_network)
    write_cifar10(tmp_path, per_batch=16, test=24)
    for _ in range(2):  # first from the .tar.gz, then from the extracted folder
        train_set, test_set = load_cifar10(tmp_path)
        assert train_set.images.shape == (80, 3, 32, 32) and train_set.images.dtype == torch.uint8
        assert test_set.images.shape == (24, 3, 32, 32) and len(test_set.labels) == 24
        assert train_set.classes[:3] == ["airplane", "automobile", "bird"]
        data, labels = cifar_arrays(16, 1)  # data_batch_1: rows are R (1024), G (1024), B (1024) planes
        assert torch.equal(train_set.images[0, 0].flatten(), torch.from_numpy(data[0, :1024]))
        assert torch.equal(train_set.images[0, 2].flatten(), torch.from_numpy(data[0, 2048:]))
        assert train_set.labels[:16].tolist() == labels
    assert (tmp_path / "cifar-10-batches-py" / "test_batch").exists()


def test_cifar10_missing_and_offline_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", no_network)
    with pytest.raises(UserError, match=r"CIFAR-10 is not in .* could not be downloaded .*cifar-10-python\.tar\.gz"):
        load_cifar10(tmp_path / "nowhere")


def test_cifar10_batches_cannot_run_code(tmp_path):
    folder = write_cifar10(tmp_path, archive=False)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(UserError, match="not a CIFAR-10 python batch"):
        load_cifar10(tmp_path)


# ------------------------------------------------------------------------------------------- Fashion-MNIST

def test_fashion_mnist_from_idx_gz_files(tmp_path, monkeypatch):
    monkeypatch.setattr("torchvision.datasets.mnist.download_and_extract_archive", no_network)
    folder = write_fashion_mnist(tmp_path / "fm", train=64, test=32)
    train_set, test_set = load_fashion_mnist(folder, tmp_path / "datasets")
    assert train_set.images.shape == (64, 1, 28, 28) and test_set.images.shape == (32, 1, 28, 28)
    rng = np.random.default_rng(0)  # the generator's first draws are the training images
    assert torch.equal(train_set.images[:, 0], torch.from_numpy(rng.integers(0, 256, (64, 28, 28)).astype(np.uint8)))
    assert train_set.classes[0] == "T-shirt/top" and train_set.labels.dtype == torch.int64
    # the same files where torchvision keeps them, found without data.root
    write_fashion_mnist(tmp_path / "datasets" / "FashionMNIST" / "raw")
    assert len(load_fashion_mnist(None, tmp_path / "datasets")[0]) == 64


def test_fashion_mnist_missing_and_offline_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr("torchvision.datasets.mnist.download_and_extract_archive", no_network)
    monkeypatch.setattr("multitx.data.images.datasets.DEBIAN_FASHION", tmp_path / "no-debian")
    with pytest.raises(UserError, match="Fashion-MNIST is not in .*data.root"):
        load_fashion_mnist(None, tmp_path / "datasets")
    with pytest.raises(UserError, match="does not hold Fashion-MNIST's four files"):
        load_fashion_mnist(tmp_path, tmp_path / "datasets")


def test_truncated_idx_file_is_named(tmp_path):
    folder = write_fashion_mnist(tmp_path / "fm")
    path = folder / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UserError, match="t10k-images-idx3-ubyte.gz"):
        load_fashion_mnist(folder, tmp_path)


# --------------------------------------------------------------------------------------------- imagefolder

def test_imagefolder_decodes_once_at_the_model_size(tmp_path):
    root = write_imagefolder(tmp_path, per_class=6, size=(20, 24))
    train_set, val_set = load_imagefolder(root, channels=3, size=(16, 16))
    assert train_set.images.shape == (12, 3, 16, 16) and val_set.images.shape == (6, 3, 16, 16)
    assert train_set.classes == ["circle", "square"] and train_set.labels.tolist() == [0] * 6 + [1] * 6
    grey, _ = load_imagefolder(root, channels=1, size=None)
    assert grey.images.shape == (12, 1, 20, 24)


def test_corrupt_image_names_the_file(tmp_path):
    root = write_imagefolder(tmp_path)
    bad = root / "train" / "square" / "3.png"
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(UserError, match=r"cannot read image .*train/square/3\.png"):
        load_imagefolder(root, size=(16, 16))
    (root / "train" / "square" / "3.png").write_bytes(b"not an image at all")
    with pytest.raises(UserError, match=r"square/3\.png"):
        load_imagefolder(root, size=(16, 16))


def test_imagefolder_layout_errors(tmp_path):
    with pytest.raises(UserError, match="data.root=DIR"):
        load_imagefolder(None)
    with pytest.raises(UserError, match="train is not a folder"):
        load_imagefolder(tmp_path)


# ------------------------------------------------------------------------------------ batches, augmentation

def image_set(n=40, channels=3, size=16) -> ImageSet:
    g = torch.Generator().manual_seed(0)
    return ImageSet(torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g),
                    torch.arange(n) % 10, [str(i) for i in range(10)])


AUG = {"crop_padding": 2, "flip": True, "policy": "trivialaugment", "erase": 0.25}


def test_flip_mirrors_a_random_half_of_the_batch_and_changes_nothing_else():
    images = image_set(n=64).images
    torch.manual_seed(0)
    out = image_transform({"flip": True}, (16, 16))(images)
    mirrored = [torch.equal(after, before.flip(-1)) for after, before in zip(out, images, strict=True)]
    kept = [torch.equal(after, before) for after, before in zip(out, images, strict=True)]
    assert all(m != k for m, k in zip(mirrored, kept, strict=True))  # each image one or the other
    assert 16 <= sum(mirrored) <= 48
    assert image_transform({"flip": False}, (16, 16)) is None


def test_batches_resume_exactly_mid_epoch_with_augmentation():
    data = image_set()
    transform = image_transform(AUG, (16, 16))
    first = ShuffledBatches(data, 8, transform=transform, seed=3)  # 5 batches an epoch
    for _ in range(7):
        next(first)
    state = first.state_dict()
    assert state["epoch"] == 1 and state["position"] == 2
    expected = [next(first) for _ in range(6)]  # crosses into epoch 2
    torch.manual_seed(123)  # the global RNG does not matter to what the batches hold
    resumed = ShuffledBatches(data, 8, transform=transform, seed=999)
    resumed.load_state_dict(state)
    for (a, la), (b, lb) in zip(expected, (next(resumed) for _ in range(6)), strict=True):
        assert torch.equal(a, b) and torch.equal(la, lb)


def test_batches_are_the_same_from_worker_processes():
    data = image_set()
    transform = image_transform(AUG, (16, 16))
    here = ShuffledBatches(data, 8, transform=transform, seed=1)
    workers = ShuffledBatches(data, 8, transform=transform, seed=1, workers=2)
    for _ in range(6):
        (a, la), (b, lb) = next(here), next(workers)
        assert torch.equal(a, b) and torch.equal(la, lb)
    workers.close()


def test_each_epoch_sees_every_image_once_and_processes_split_it():
    data = image_set(n=40)
    seen = [set(), set()]
    for rank in (0, 1):
        batches = ShuffledBatches(data, 4, seed=5, rank=rank, world_size=2)  # 5 batches per process
        for _ in range(5):
            images, _ = next(batches)
            seen[rank] |= {int(i) for i in images.flatten(1)[:, :8].sum(1)}
    assert not seen[0] & seen[1] and len(seen[0]) + len(seen[1]) == 40


def test_device_augment_mixup_targets_and_loss():
    aug = DeviceAugment([0.5, 0.5, 0.5], [0.25, 0.25, 0.25], classes=10, mixup=0.8, cutmix=1.0,
                        label_smoothing=0.1)
    images = torch.full((4, 3, 8, 8), 128, dtype=torch.uint8)
    x, targets = aug(images, torch.tensor([0, 1, 2, 3]))
    assert x.dtype == torch.float32 and torch.allclose(x, torch.full_like(x, (128 / 255 - 0.5) / 0.25), atol=1e-6)
    assert targets.shape == (4, 10) and torch.allclose(targets.sum(1), torch.ones(4))
    assert aug.loss(torch.zeros(4, 10), targets).item() == pytest.approx(np.log(10), rel=1e-5)
    plain = DeviceAugment([0.5] * 3, [0.25] * 3, classes=10)
    assert plain(images, torch.tensor([0, 1, 2, 3]))[1].dtype == torch.int64


# ------------------------------------------------------------------------------------------ end to end

def test_tiny_vit_cifar_run_end_to_end(tmp_path, monkeypatch):
    """The default vit_cifar recipe's data path (AutoAugment, erasing, Mixup/CutMix, smoothing) on a
    generated CIFAR-10 archive, a few steps of a tiny model: val_acc/val_loss logged, best kept."""
    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", no_network)
    write_cifar10(tmp_path / "data", per_batch=16)
    run = tmp_path / "run"
    cfg = load_config(["task=vit_cifar", f"data_dir={tmp_path / 'data'}", f"run_dir={run}", "steps=4",
                       "eval_every=2", "batch_size=8", "warmup_steps=1", "model.trunk.dim=24", "model.trunk.layers=2",
                       "model.trunk.heads=2", "progress=false", "device=cpu"])
    metrics = train(cfg)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    tested = rows.pop()  # the final test evaluation, apart from the evaluations on val
    assert tested["split"] == "test" and 0 <= tested["test_acc"] <= 1
    assert [r["step"] for r in rows] == [2, 4]
    assert all(0 <= r["val_acc"] <= 1 and r["val_loss"] > 0 for r in rows)
    assert metrics["val_acc"] == rows[-1]["val_acc"]
    best = (run / "checkpoints" / "best.txt").read_text()
    assert best == f"step_{max(rows, key=lambda r: r['val_acc'])['step']:07d}"


def test_odd_batch_with_mixup_is_a_clear_error(tmp_path):
    write_cifar10(tmp_path / "data", archive=False)
    cfg = load_config(["task=vit_cifar", f"data_dir={tmp_path / 'data'}", f"run_dir={tmp_path / 'run'}",
                       "batch_size=7", "device=cpu"])
    with pytest.raises(UserError, match="batch_size must be even"):
        train(cfg)


def test_resumed_run_equals_uninterrupted_run(tmp_path, monkeypatch):
    """Resumed mid-epoch, with AutoAugment, erasing, Mixup/CutMix and drop-path all drawing random
    numbers, training ends on exactly the weights of the run that never stopped."""
    from safetensors.torch import load_file

    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", no_network)
    write_cifar10(tmp_path / "data", per_batch=16)  # 80 images: 10 batches of 8 an epoch
    base = ["task=vit_cifar", f"data_dir={tmp_path / 'data'}", "batch_size=8", "warmup_steps=1", "steps=6",
            "eval_every=3", "eval_images=8", "model.trunk.dim=24", "model.trunk.layers=2", "model.trunk.heads=2",
            "progress=false", "device=cpu"]
    train(load_config([*base, f"run_dir={tmp_path / 'a'}"]))
    train(load_config([*base, f"run_dir={tmp_path / 'b'}", f"resume={tmp_path / 'a/checkpoints/step_0000003'}"]))
    a = load_file(str(tmp_path / "a/checkpoints/step_0000006/model.safetensors"))
    b = load_file(str(tmp_path / "b/checkpoints/step_0000006/model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
