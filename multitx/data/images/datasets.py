"""Labelled image datasets for the ViT, as ImageSets: (N, C, H, W) uint8.

Sources (`data.name`):
  cifar10        CIFAR-10 (32x32 RGB, 50k/10k): DATA_DIR/cifar-10-batches-py, extracted from
                 cifar-10-python.tar.gz, downloaded by torchvision when neither is there
  fashion_mnist  Fashion-MNIST (28x28 grey, 60k/10k): the four IDX .gz files, from data.root,
                 DATA_DIR/FashionMNIST/raw, Debian's /usr/share/datasets/fashion-mnist, or downloaded
  imagefolder    your own: data.root=DIR with DIR/train/CLASS/*.png|jpg and DIR/val/CLASS/...
  hf_images      a Hugging Face datasets folder (save_to_disk, or parquet files): data/images/hf_folder.py

CIFAR-10 and Fashion-MNIST are arrays already, read into memory. An image folder and a datasets
folder are decoded once into the shard cache under DATA_DIR and memory-mapped from it, or decoded
when drawn (data.cache, data/images/shards.py): their images need not fit in memory.

Every set is fitted to the model's image size by the one rule of data/images/images.py
(scale to cover, centre-crop).
"""

import gzip
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from multitx.config.rules import POSITIVE, Choice, Flag, Folder, Numbers, Text
from multitx.config.settings import setting
from multitx.data.images.hf_folder import (
    HFFolder,
    HFImages,
    check_settings,
    check_splits,
    labels_of,
    need_column,
    open_split,
    val_split_of,
)
from multitx.data.images.images import Images, hw, read_images, short
from multitx.data.images.shards import cached_images
from multitx.data.images.sources import ImageFiles
from multitx.data.registry import ImageData, ShardCached, dataset, register_dataset
from multitx.errors import UserError

CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR_TEST = ["test_batch"]
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


@dataclass
class ImageSet(Images):
    """Images (N, C, H, W) uint8 with a class label each: a tensor in memory, or an ImageRows (data/images/rows.py)
    read from the shard cache or decoded when used."""

    labels: torch.Tensor  # (N,) int64
    classes: list[str]


# ---------------------------------------------------------------------------------------------- CIFAR-10

class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain data and NumPy arrays only: a CIFAR batch file cannot run code."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_cifar_batch(path: Path) -> dict:
    """One CIFAR-10 python batch: a pickled dict with b'data' (N, 3072) uint8 and b'labels'."""
    try:
        with open(path, "rb") as f:
            entry = _ArrayUnpickler(f, encoding="bytes").load()
        return {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
    except FileNotFoundError:
        raise UserError(f"{path} is missing; the CIFAR-10 folder is incomplete: delete it and its archive will be "
                        f"extracted (or downloaded) again") from None
    except Exception as err:  # noqa: BLE001 - pickle raises many types on damaged files
        raise UserError(f"{path} is not a CIFAR-10 python batch ({type(err).__name__}: {err}); delete the "
                        f"{CIFAR_FOLDER} folder and put a good {CIFAR_ARCHIVE} beside it") from None


def read_cifar10(folder: Path) -> tuple[ImageSet, ImageSet]:
    """The extracted python-format folder -> (train, test)."""
    meta = read_cifar_batch(folder / "batches.meta")
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta["label_names"]]

    def split(names: list[str]) -> ImageSet:
        batches = [read_cifar_batch(folder / n) for n in names]
        data = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches])  # (N, 3072): R, G, B planes
        labels = np.concatenate([np.asarray(b["labels"], dtype=np.int64) for b in batches])
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
            raise UserError(f"{folder} does not hold CIFAR-10 batches (data {data.shape}, {len(labels)} labels)")
        return ImageSet(torch.from_numpy(data).view(-1, 3, 32, 32), torch.from_numpy(labels), classes)

    return split(CIFAR_TRAIN), split(CIFAR_TEST)


def cifar10_folder(root: Path, download: bool = True) -> Path:
    """root/cifar-10-batches-py, extracted from root/cifar-10-python.tar.gz if need be, which
    torchvision downloads (md5-checked) if it is not there either."""
    folder = root / CIFAR_FOLDER
    if all((folder / n).exists() for n in [*CIFAR_TRAIN, *CIFAR_TEST, "batches.meta"]):
        return folder
    archive = root / CIFAR_ARCHIVE
    if not archive.exists():
        if not download:
            raise UserError(f"CIFAR-10 is not in {root}; put {CIFAR_ARCHIVE} there, or set data.download=true")
        from torchvision.datasets import CIFAR10

        try:  # the usual torchvision download: fetch, check the md5, extract
            root.mkdir(parents=True, exist_ok=True)
            CIFAR10(str(root), train=False, download=True)
        except (OSError, RuntimeError) as err:  # URLError is an OSError; an md5 mismatch a RuntimeError
            raise UserError(f"CIFAR-10 is not in {root} and could not be downloaded ({short(err)}); put "
                            f"{CIFAR_ARCHIVE} (from {CIFAR10.url}) in {root}, or point data.root at its "
                            f"folder") from None
        if folder.exists():
            return folder
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(root, filter="data")
    except (OSError, tarfile.TarError, EOFError) as err:
        raise UserError(f"{archive} is not a readable .tar.gz ({short(err)}); delete it and download it "
                        f"again") from None
    if not folder.is_dir():
        raise UserError(f"{archive} holds no {CIFAR_FOLDER}/ folder; is it the CIFAR-10 python version?")
    return folder


def load_cifar10(root: Path, download: bool = True) -> tuple[ImageSet, ImageSet]:
    return read_cifar10(cifar10_folder(Path(root).expanduser(), download))


# ------------------------------------------------------------------------------------------ Fashion-MNIST

def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format: magic, dims, big-endian sizes, then uint8 data), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise UserError(f"{path} cannot be read ({short(err)}); replace it with a good copy") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path} is not an IDX file of bytes (bad magic number)")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise UserError(f"{path} is truncated: expected {int(np.prod(shape))} values for shape {shape}, "
                        f"found {body.size}")
    return body.reshape(shape)


def fashion_folder(root: Path | None, data_dir: Path, download: bool = True) -> Path:
    """The first folder that holds the four files: data.root if given, else DATA_DIR/FashionMNIST/raw,
    Debian's dataset-fashion-mnist folder, or a torchvision download into DATA_DIR."""

    def complete(folder: Path) -> bool:
        return all(any((folder / f"{n}{s}").exists() for s in (".gz", "")) for pair in FASHION_FILES.values()
                   for n in pair)

    if root is not None:
        if not complete(root):
            names = ", ".join(f"{n}.gz" for pair in FASHION_FILES.values() for n in pair)
            raise UserError(f"data.root={root} does not hold Fashion-MNIST's four files ({names})")
        return root
    for folder in (data_dir / "FashionMNIST" / "raw", DEBIAN_FASHION):
        if complete(folder):
            return folder
    target = data_dir / "FashionMNIST" / "raw"
    if download:
        from torchvision.datasets import FashionMNIST

        try:
            FashionMNIST(str(data_dir), download=True)
        except (OSError, RuntimeError) as err:
            raise UserError(f"Fashion-MNIST is not in {target} and could not be downloaded ({short(err)}); put "
                            f"its four .gz files there or point data.root at their folder (Debian: apt install "
                            f"dataset-fashion-mnist, then data.root={DEBIAN_FASHION})") from None
        if complete(target):
            return target
    raise UserError(f"Fashion-MNIST is not in {target}; put its four .gz files there, or point data.root at them")


def load_fashion_mnist(root: Path | None, data_dir: Path, download: bool = True) -> tuple[ImageSet, ImageSet]:
    folder = fashion_folder(None if root is None else Path(root).expanduser(), Path(data_dir), download)

    def split(name: str) -> ImageSet:
        images_name, labels_name = FASHION_FILES[name]
        path = lambda n: folder / f"{n}.gz" if (folder / f"{n}.gz").exists() else folder / n  # noqa: E731
        images, labels = read_idx(path(images_name)), read_idx(path(labels_name))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise UserError(f"{folder}: {name} images {images.shape} and labels {labels.shape} do not match")
        return ImageSet(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)),
                        list(FASHION_CLASSES))

    return split("train"), split("test")


# -------------------------------------------------------------------------------------------- imagefolder

def load_imagefolder(root: Path, channels: int = 3, size: tuple[int, int] | None = None, data_dir: Path | None = None,
                     cache: str = "auto") -> tuple[ImageSet, ImageSet]:
    """root/train/CLASS/* and root/val/CLASS/* (or root/test/...). Every image is scaled and centre-cropped
    to `size` (H, W), or must share the first image's size when None. With data_dir (and a size), through
    the shard cache under DATA_DIR/imagefolder (data/images/shards.py; `cache`: auto, shards or lazy);
    without, decoded into memory."""
    if not root:
        raise UserError("data=imagefolder needs a folder: add data.root=DIR (with DIR/train/CLASS/*.png and "
                        "DIR/val/CLASS/*.png)")
    root = Path(root).expanduser()
    if channels not in (1, 3):
        raise UserError(f"data.channels must be 1 (grey) or 3 (RGB), got {channels}")
    train_dir = root / "train"
    val_dir = next((root / n for n in ("val", "test") if (root / n).is_dir()), root / "val")
    for d in (train_dir, val_dir):
        if not d.is_dir():
            raise UserError(f"{d} is not a folder; data=imagefolder wants DIR/train/CLASS/*.png and "
                            f"DIR/val/CLASS/*.png")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not classes:
        raise UserError(f"{train_dir} has no class folders; put each class's images in train/CLASS_NAME/")
    unknown = sorted({p.name for p in val_dir.iterdir() if p.is_dir()} - set(classes))
    if unknown:
        raise UserError(f"{val_dir} has classes that {train_dir} lacks: {', '.join(unknown[:5])}")

    def split(folder: Path) -> ImageSet:
        files, labels = [], []
        for label, name in enumerate(classes):
            found = sorted(str(p) for p in (folder / name).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if folder == train_dir and not found:
                raise UserError(f"{folder / name} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            files += found
            labels += [label] * len(found)
        if not files:
            raise UserError(f"{folder} holds no images")
        if data_dir is None or size is None:
            images = read_images([Path(f) for f in files], size, channels)  # (N, C, H, W) in memory
        else:
            source = ImageFiles(files, f"data.root={root} ({folder.name})", str(folder.resolve()),
                                "the folder changed while it was read; run again")
            images = cached_images(source, hw(size), channels, Path(data_dir) / "imagefolder", folder.name, cache)
        return ImageSet(images, torch.tensor(labels, dtype=torch.int64), classes)

    return split(train_dir), split(val_dir)


# ------------------------------------------------------------------------------------------------- hf_images

def load_hf_images(data, data_dir: Path, size: tuple[int, int]) -> tuple[ImageSet, ImageSet]:
    """(train, test) of a Hugging Face datasets folder: data.train_split, and data.val_split (or validation,
    or test); images from data.image_column, class labels from data.label_column (data/images/hf_folder.py)."""
    root = Path(str(data.root)).expanduser()
    check_splits(root, data)
    channels, cache = int(data.get("channels", 3)), str(data.get("cache", "auto"))
    classes = None
    out = []
    for split in (str(data.train_split), val_split_of(root, data)):
        table = open_split(root, split, "hf_images")
        need_column(table, str(data.image_column), "data.image_column")
        need_column(table, str(data.label_column), "data.label_column")
        labels, classes = labels_of(table, str(data.label_column), classes)
        source = HFImages(table, str(data.image_column), [str(root.resolve()), split, str(data.image_column), None])
        images = cached_images(source, hw(size), channels, Path(data_dir) / "hf", split, cache)  # as hf_captions
        out.append(ImageSet(images, labels, classes))
    return out[0], out[1]


# ---------------------------------------------------------------------------------------------- registered

@register_dataset("cifar10")
@dataclass
class CIFAR10(ImageData):
    """CIFAR-10 (32x32 RGB, 50k train / 10k test). torchvision downloads it into DATA_DIR the first time
    (md5-checked); with cifar-10-python.tar.gz or cifar-10-batches-py/ already in data.root (default
    DATA_DIR) nothing touches the network."""

    root: str | None = setting(None, Folder(null=True, must_exist=False),
                               "folder holding cifar-10-python.tar.gz or cifar-10-batches-py/; null: DATA_DIR")
    download: bool = setting(True, Flag(), "fetch it when missing")
    mean: list | None = setting([0.4914, 0.4822, 0.4465], Numbers(null=True), "per channel; null: measured")
    std: list | None = setting([0.2470, 0.2435, 0.2616], Numbers(each=POSITIVE, null=True), "per channel")

    @classmethod
    def images(cls, data, data_dir, image_size):
        return load_cifar10(Path(data.root) if data.get("root") else Path(data_dir), data.get("download", True))


@register_dataset("fashion_mnist")
@dataclass
class FashionMNIST(ImageData):
    """Fashion-MNIST (28x28 grey, 60k train / 10k test), read from its four IDX .gz files: data.root if given
    (Debian's dataset-fashion-mnist: /usr/share/datasets/fashion-mnist), else DATA_DIR/FashionMNIST/raw,
    that Debian folder, or a torchvision download into DATA_DIR."""

    root: str | None = setting(None, Folder(null=True, hint="give the folder of Fashion-MNIST's four .gz files"),
                               "the folder of the four .gz files; null: look in the places above")
    download: bool = setting(True, Flag(), "fetch it when missing")
    mean: list | None = setting([0.2860], Numbers(null=True), "per channel; null: measured")
    std: list | None = setting([0.3530], Numbers(each=POSITIVE, null=True), "per channel")

    @classmethod
    def images(cls, data, data_dir, image_size):
        return load_fashion_mnist(data.get("root"), Path(data_dir), data.get("download", True))


@dataclass
class DecodedImages(ShardCached, ImageData):
    """Labelled images decoded from files (or bytes), grey or RGB, cached as shards (data/images/shards.py)."""

    channels: int = setting(3, Choice(options=(1, 3)), "3: RGB, 1: grey")


@register_dataset("imagefolder")
@dataclass
class ImageFolder(DecodedImages):
    """Your own images: data.root=DIR with DIR/train/CLASS/*.png|jpg and DIR/val/CLASS/... (or DIR/test/...).
    Decoded once into the shard cache under DATA_DIR (data.cache), scaled and centre-cropped to model.image_size;
    a file that cannot be decoded stops the run and is named."""

    root: str | None = setting(None, Folder(null=True, hint="data=imagefolder wants DIR/train/CLASS/*.png and "
                                                            "DIR/val/..."), "the folder of train/ and val/")

    @classmethod
    def check(cls, data: dict) -> None:
        if not data.get("root"):
            raise UserError("data=imagefolder needs a folder: add data.root=DIR with DIR/train/CLASS/*.png")

    @classmethod
    def images(cls, data, data_dir, image_size):
        return load_imagefolder(data.get("root"), data.get("channels", 3), image_size, Path(data_dir),
                                str(data.get("cache", "auto")))


@register_dataset("hf_images")
@dataclass
class HFImagesData(HFFolder, DecodedImages):
    """Labelled images in a Hugging Face datasets folder: data.root=DIR written by DatasetDict.save_to_disk, or a
    folder of parquet files (the Hub's layout); the images of data.image_column, the classes of data.label_column
    (a ClassLabel's names, or whole numbers, or text). Needs pip install 'multitx[hf]'."""

    label_column: str = setting("label", Text(), "the column of class labels: a ClassLabel (its names are the "
                                "classes), whole numbers or text")

    @classmethod
    def check(cls, data: dict) -> None:
        check_settings(data)

    @classmethod
    def images(cls, data, data_dir, image_size):
        return load_hf_images(data, Path(data_dir), image_size)


def load_images(data, data_dir: Path, image_size: tuple[int, int]) -> tuple[ImageSet, ImageSet]:
    """(train, test) for a data config (data.name: a registered image dataset), at image_size (H, W)."""
    train, test = dataset(str(data.name), "images").images(data, data_dir, image_size)
    return train.resized(image_size), test.resized(image_size)
