"""A user's own image dataset, as it would live in the user's package: one registered class whose fields
are its data.* keys. tests/test_user_dataset.py trains on it from the command line."""

from dataclasses import dataclass

import torch

from multitx import ImageData, ImageSet, register_dataset, setting
from multitx.config.rules import Whole


@register_dataset("test_stripes")
@dataclass
class Stripes(ImageData):
    """Horizontal against vertical stripes, drawn in memory: 8x8 RGB."""

    count: int = setting(6, Whole(min=1), "images per class in each split")

    @classmethod
    def images(cls, data, data_dir, image_size):
        def split(seed: int) -> ImageSet:
            generator = torch.Generator().manual_seed(seed)
            base = (torch.arange(8) % 2 * 200).view(8, 1).expand(8, 8)  # (H, W): stripes along the rows
            images, labels = [], []
            for label, picture in enumerate((base, base.T)):  # horizontal, vertical
                for _ in range(data.count):
                    noise = torch.randint(0, 40, (3, 8, 8), generator=generator)
                    images.append((picture.expand(3, 8, 8) + noise).to(torch.uint8))
                    labels.append(label)
            return ImageSet(torch.stack(images), torch.tensor(labels), ["horizontal", "vertical"])

        return split(0), split(1)
