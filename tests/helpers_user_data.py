"""A user's own parts, as they would live in the user's package, each one registered class: an image
dataset whose fields are its data.* keys, a text tokenizer (UTF-8 bytes) and a metric logger (a CSV file).
tests/test_user_dataset.py and tests/test_user_parts.py train with them from the command line."""

import csv
from dataclasses import dataclass

import torch

from multitx import (
    ImageData,
    ImageSet,
    MetricLogger,
    TextTokenizer,
    UserError,
    register_dataset,
    register_logger,
    register_text_tokenizer,
    setting,
)
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


@register_text_tokenizer("test_bytes")
class Bytes(TextTokenizer):
    """Every UTF-8 byte is a token (as ByT5): 256 ids, any text."""

    kind = "test_bytes"

    @classmethod
    def train(cls, text, data):
        return cls()

    @property
    def vocab_size(self) -> int:
        return 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def state(self) -> dict:
        return {"kind": self.kind}

    @classmethod
    def from_state(cls, data, where="vocab.json"):
        if data.get("kind") != cls.kind:
            raise UserError(f"{where} is not a byte tokenizer")
        return cls()


@register_logger("test_csv")
class CSVLogger(MetricLogger):
    """RUN_DIR/scalars.csv: step, name, value; and RUN_DIR/images.csv: step, tag, height, width."""

    def __init__(self, run_dir, config):
        super().__init__(run_dir, config)
        self.scalar_file = open(self.run_dir / "scalars.csv", "a", newline="", encoding="utf-8")
        self.image_file = open(self.run_dir / "images.csv", "a", newline="", encoding="utf-8")

    def scalars(self, values, step):
        csv.writer(self.scalar_file).writerows([step, name, value] for name, value in values.items())

    def image(self, tag, rgb, step):
        csv.writer(self.image_file).writerow([step, tag, *rgb.shape[:2]])

    def flush(self):
        self.scalar_file.flush()
        self.image_file.flush()

    def close(self):
        self.scalar_file.close()
        self.image_file.close()
