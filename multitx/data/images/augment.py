"""Augmentation in two places, each where it is cheapest.

Per image, on the CPU (in DataLoader workers when data.workers > 0), on uint8 tensors:
    torchvision's RandomCrop(padding), one policy (AutoAugment, RandAugment or
    TrivialAugmentWide) and RandomErasing. These draw their own parameters per image,
    so they run image by image. Horizontal flips need only a coin per image, so the
    whole batch is flipped at once (one `torch.where`, not 128 calls).

Per batch, on the device, after the uint8 batch has crossed the bus:
    uint8 -> float, normalise, then timm's Mixup/CutMix with label smoothing
    (soft targets). Whole-batch arithmetic: nearly free on a GPU.
"""

from dataclasses import dataclass

import torch
from torch.nn import functional as F
from torchvision.transforms import v2

from multitx.config.rules import NON_NEGATIVE, PROBABILITY, RATE, Choice, Flag, Whole
from multitx.config.settings import setting
from multitx.errors import UserError

POLICIES = ("none", "autoaugment", "randaugment", "trivialaugment")


@dataclass
class AugmentConfig:
    """`augment.*`: per image on the CPU (torchvision), then per batch on the device (timm Mixup/CutMix)."""

    crop_padding: int = setting(4, Whole(min=0), "RandomCrop with this much zero padding; 0: none")
    flip: bool = setting(True, Flag(), "a random half of each batch mirrored left-right")
    policy: str = setting("autoaugment", Choice(options=POLICIES),
                          "none | autoaugment (CIFAR-10 policy) | randaugment | trivialaugment")
    ops: int = setting(2, Whole(min=1), "randaugment: operations per image")
    magnitude: int = setting(9, Whole(min=0, max=30), "randaugment: strength 0..30")
    erase: float = setting(0.25, PROBABILITY, "RandomErasing probability")
    mixup: float = setting(1.0, NON_NEGATIVE, "Mixup alpha; 0: off")
    cutmix: float = setting(1.0, NON_NEGATIVE, "CutMix alpha; 0: off")
    mix_prob: float = setting(0.5, PROBABILITY, "chance that a batch is mixed")
    switch_prob: float = setting(0.5, PROBABILITY, "chance that a mixed batch uses CutMix rather than Mixup")
    label_smoothing: float = setting(0.1, RATE, "of the targets")


def image_transform(aug, image_size: tuple[int, int]) -> "BatchTransform | None":
    """The CPU-side augmentation of uint8 batches from an `augment` config, or None for none."""
    ops = []
    if aug.get("crop_padding", 0):
        ops.append(v2.RandomCrop(list(image_size), padding=int(aug["crop_padding"])))
    policy = aug.get("policy", "none") or "none"
    if policy == "autoaugment":
        ops.append(v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10))
    elif policy == "randaugment":
        ops.append(v2.RandAugment(num_ops=int(aug.get("ops", 2)), magnitude=int(aug.get("magnitude", 9))))
    elif policy == "trivialaugment":
        ops.append(v2.TrivialAugmentWide())
    elif policy != "none":
        raise UserError(f"augment.policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    if aug.get("erase", 0):
        ops.append(v2.RandomErasing(p=float(aug["erase"]), value=0))
    flip = bool(aug.get("flip", False))
    return BatchTransform(ops, flip=flip) if ops or flip else None


class BatchTransform:
    """uint8 images (B, C, H, W) -> the same, augmented: the per-image ops image by image, then a
    horizontal flip of a random half of the batch. Flipping last rather than first changes no
    distribution: crops, the policies' shears and translations, and erasing are all mirror-symmetric.
    Draws from the global torch RNG (the caller seeds it)."""

    def __init__(self, per_image: list, *, flip: bool):
        self.per_image = v2.Compose(per_image) if per_image else None
        self.flip = flip

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.per_image is not None:
            images = torch.stack([self.per_image(image) for image in images])
        if self.flip:
            flipped = torch.rand(len(images)) < 0.5  # (B,) one coin per image
            images = torch.where(flipped[:, None, None, None], images.flip(-1), images)
        return images

    def __repr__(self) -> str:
        names = [type(op).__name__ for op in (self.per_image.transforms if self.per_image else [])]
        return ", ".join(names + (["horizontal flip (per batch)"] if self.flip else [])) or "none"


class DeviceAugment:
    """On the device: uint8 images (B, C, H, W) -> normalised float images, and labels (B,) ->
    the targets the loss wants: soft (B, classes) under Mixup/CutMix, else the labels."""

    def __init__(self, mean, std, *, classes: int, mixup: float = 0.0, cutmix: float = 0.0, mix_prob: float = 1.0,
                 switch_prob: float = 0.5, label_smoothing: float = 0.0):
        if len(mean) != len(std) or not all(s > 0 for s in std):
            raise UserError(f"data.mean {list(mean)} and data.std {list(std)} need one value per channel, std > 0")
        std = torch.tensor(std, dtype=torch.float32)
        self.scale = (1 / (255 * std)).view(1, -1, 1, 1)  # (x / 255 - mean) / std == x * scale + shift
        self.shift = (-torch.tensor(mean, dtype=torch.float32) / std).view(1, -1, 1, 1)
        self.label_smoothing = label_smoothing
        self.mixup = None
        if mixup > 0 or cutmix > 0:
            from timm.data import Mixup

            self.mixup = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=mix_prob, switch_prob=switch_prob,
                               mode="batch", label_smoothing=label_smoothing, num_classes=classes)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> float32 (B, C, H, W), per-channel zero mean and unit variance."""
        if self.scale.device != images.device:
            self.scale, self.shift = self.scale.to(images.device), self.shift.to(images.device)
        if images.shape[1] != self.scale.shape[1]:
            raise UserError(f"images have {images.shape[1]} channels but data.mean/std give {self.scale.shape[1]}")
        return torch.addcmul(self.shift, images.float(), self.scale)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.normalize(images)
        if self.mixup is None or not self.mixup.mixup_enabled:
            return x, labels
        return self.mixup(x, labels)  # mixes x in place; soft targets (B, classes), already smoothed

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy against hard labels (with label smoothing) or soft targets."""
        logits = logits.float()
        if targets.dim() == 2:
            return torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()
        return F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)
