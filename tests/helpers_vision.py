"""Test helpers for the vision half: a user's own tokenizer (importable by path,
`tests.helpers_vision.OverlapPatches`, and registered as `test_overlap`), and
small datasets written in the exact on-disk formats of CIFAR-10, Fashion-MNIST
and an image folder."""

import gzip
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
from einops import rearrange
from PIL import Image
from torch import nn

from multitx.nn.patches import PatchTokenizer, register_tokenizer


@register_tokenizer("test_overlap")
class OverlapPatches(PatchTokenizer):
    """Overlapping patches: a kernel `overlap` pixels wider than the stride on each side."""

    def __init__(self, overlap: int = 1, **kwargs):
        super().__init__(**kwargs)
        ph, pw = self.patch_size
        self.proj = nn.Conv2d(self.in_channels, self.dim, kernel_size=(ph + 2 * overlap, pw + 2 * overlap),
                              stride=self.patch_size, padding=overlap)

    def embed_patches(self, images):
        return rearrange(self.proj(images), "b d h w -> b (h w) d")


def cifar_arrays(n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), [int(x) for x in rng.integers(0, 10, n)]


def write_cifar10(root: Path, per_batch: int = 16, test: int = 24, *, archive: bool = True) -> Path:
    """root/cifar-10-python.tar.gz (or, archive=False, root/cifar-10-batches-py/) in CIFAR-10's
    python format: pickled dicts with b'data' (N, 3072) uint8 and b'labels'; batches.meta."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        data, labels = cifar_arrays(per_batch, i)
        entry = {b"batch_label": f"training batch {i} of 5".encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"img_{i}_{j}.png".encode() for j in range(per_batch)]}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(entry, protocol=2))
    data, labels = cifar_arrays(test, 99)
    (folder / "test_batch").write_bytes(pickle.dumps({b"batch_label": b"testing batch 1 of 1", b"labels": labels,
                                                      b"data": data}, protocol=2))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names, b"num_cases_per_batch": per_batch,
                                                        b"num_vis": 3072}, protocol=2))
    if not archive:
        return folder
    path = Path(root) / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()
    return path


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file of unsigned bytes, gzipped: magic 0x00000803 / 0x00000801, big-endian sizes."""
    header = struct.pack(">I", 0x0800 | array.ndim) + b"".join(struct.pack(">I", s) for s in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_fashion_mnist(folder: Path, train: int = 64, test: int = 32) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", train), ("t10k", test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    return folder


def write_imagefolder(root: Path, classes=("circle", "square"), per_class: int = 8, size=(20, 24)) -> Path:
    """root/{train,val}/CLASS/*.png: a bright disc or square on a dark background."""
    root = Path(root)
    h, w = size
    rows, cols = np.mgrid[0:h, 0:w]
    for split, n in (("train", per_class), ("val", per_class // 2)):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                cy, cx = h // 2 + i % 3 - 1, w // 2 + i % 4 - 2
                shape = ((rows - cy) ** 2 + (cols - cx) ** 2 < 36) if c == 0 else \
                    ((abs(rows - cy) < 5) & (abs(cols - cx) < 5))
                pixels = np.stack([shape * (200 + 10 * c), shape * 100, shape * 50], axis=-1).astype(np.uint8)
                ext = "png" if i % 2 else "jpg"
                Image.fromarray(pixels).save(root / split / name / f"{i}.{ext}")
    return root
