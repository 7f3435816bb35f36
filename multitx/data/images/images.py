"""Images as both the ViT and the captioner take them: one uint8 container, one way to read a file.

Every image set is an (N, C, H, W) uint8 tensor, decoded once: a quarter the size
of a float one, cheap to keep, to augment, to pin and to copy to the device, where
it becomes float (data/images/augment.py, tasks/caption.py).

The one resize rule, for a file and for a whole set alike: scale the image, keeping
its aspect ratio, until it covers the target (H, W), then cut the centre out. Nothing
is stretched; what is lost is the ends of the longer side. It is what torchvision's
Resize(shorter side) + CenterCrop, and so timm's evaluation transform, do. Bicubic,
antialiased.
"""

import io
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from multitx.errors import UserError

SizeLike = int | tuple[int, int]  # S means (S, S)
UPLOAD_PIXELS = 40_000_000  # the most an uploaded image may unpack to (8-bit RGB: 120 MB)


@dataclass
class Images:
    """N images of one size. ImageSet (with class labels) and CaptionSplit (with captions) add what each shows."""

    images: torch.Tensor  # (N, C, H, W) uint8; a caption split's is memory-mapped from its .npy cache

    def __len__(self) -> int:
        return len(self.images)

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    def resized(self, size: SizeLike):
        """The same set with every image fitted to size (the rule above); itself if already that size."""
        if tuple(self.images.shape[-2:]) == hw(size):
            return self
        return replace(self, images=fit(self.images, size))


def hw(size: SizeLike) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def fit(images: torch.Tensor, size: SizeLike) -> torch.Tensor:
    """(N, C, h, w) uint8 -> (N, C, H, W) uint8: scaled to cover size (H, W), then centre-cropped."""
    (H, W), (h, w) = hw(size), images.shape[-2:]
    scale = max(H / h, W / w)
    covering = [max(H, round(h * scale)), max(W, round(w * scale))]  # >= (H, W), the aspect ratio kept
    out = []
    for chunk in images.split(4096):  # bounded memory for the float intermediate
        scaled = TF.resize(chunk, covering, interpolation=InterpolationMode.BICUBIC, antialias=True)
        out.append(TF.center_crop(scaled, [H, W]))
    return torch.cat(out)


@dataclass(frozen=True)
class EncodedImage:
    """An image file's bytes that came some other way than a path (an upload to python -m multitx.explore):
    decoded exactly as a file is, with the same checks."""

    name: str  # what the messages call it, e.g. "the uploaded file cat.png"
    data: bytes


def decode_image(path: Path | EncodedImage, size: SizeLike | None, channels: int = 3) -> torch.Tensor:
    """One image file -> (channels, H, W) uint8, grey (1) or RGB (3), fitted to size, or at its own
    size for None. A missing or unreadable file is one UserError line that names it."""
    encoded = isinstance(path, EncodedImage)
    source, name = (io.BytesIO(path.data), path.name) if encoded else (Path(path), Path(path))
    try:
        with Image.open(source) as img:
            if encoded and img.width * img.height > UPLOAD_PIXELS:  # a small file can unpack to gigabytes
                raise UserError(f"{name} is {img.width}x{img.height} pixels, more than {UPLOAD_PIXELS // 10**6} "
                                f"million; scale it down first")
            pixels = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)  # (h, w[, 3])
    except FileNotFoundError:
        raise UserError(f"image {name} does not exist; check the path (or the dataset's image folder)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        detail = re.sub(r" ?<_io\.BytesIO object at 0x[0-9a-f]+>", "", short(err))  # the upload's name says which
        raise UserError(f"cannot read image {name} ({detail}); it is corrupt or not an image: "
                        f"{'give a PNG, JPEG or WebP file' if encoded else 'replace or remove it'}") from None
    image = torch.from_numpy(pixels.reshape(*pixels.shape[:2], -1).copy()).permute(2, 0, 1)  # (C, h, w)
    return image if size is None else fit(image[None], size)[0]


def described(image: "str | Path | EncodedImage") -> str:
    """Where an image came from, as the tools say it: image=PATH, or the upload's name."""
    return image.name if isinstance(image, EncodedImage) else f"image={image}"


def read_images(paths: list[Path], size: SizeLike | None, channels: int = 3) -> torch.Tensor:
    """Image files (at least one) -> (N, channels, H, W) uint8, each decoded and fitted to size; with
    size None they must all have the first one's size."""
    first = decode_image(paths[0], size, channels)
    out = torch.empty((len(paths), *first.shape), dtype=torch.uint8)
    out[0] = first
    for i, path in enumerate(paths[1:], 1):
        image = decode_image(path, size, channels)
        if image.shape != first.shape:
            raise UserError(f"{path} is {image.shape[2]}x{image.shape[1]}, the others {first.shape[2]}x"
                            f"{first.shape[1]}; give every image one size, or set the model's image_size")
        out[i] = image
    return out


def short(err: Exception) -> str:
    """The first line of an error, at most 160 characters: enough for a one-line message."""
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:160]
