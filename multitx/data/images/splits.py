"""A validation split held out from the training images, so that the best checkpoint is chosen on
images that are neither trained on nor the test split that results are reported on.

    train, val = hold_out(train, fraction=0.1, seed=0)

Stratified: each class gives max(1, round(fraction x its count)) of its images (one stays in
training at least), chosen by a generator seeded with `seed`, so the same data and seed hold
out the same images on every machine and every resume. A set read from the shard cache (an
ImageRows) is split into two views of it: no image is read or copied.
"""

import torch

from multitx.data.images.datasets import ImageSet
from multitx.errors import UserError


def hold_out(train: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """(the training images left, the held-out validation images), each in their original order."""
    generator = torch.Generator().manual_seed(seed)
    held = []
    for label in range(len(train.classes)):
        members = (train.labels == label).nonzero().flatten()  # (n_c,) indices of this class
        if len(members) < 2:
            continue  # a class of one image keeps it for training
        take = min(max(1, round(fraction * len(members))), len(members) - 1)
        held.append(members[torch.randperm(len(members), generator=generator)[:take]])
    if not held:
        raise UserError(f"data.val_fraction={fraction:g} holds out no image of {len(train)}: every class needs "
                        f"two images at least (one to train on, one to validate on)")
    val = torch.cat(held).sort().values
    keep = torch.ones(len(train), dtype=torch.bool)
    keep[val] = False
    part = lambda idx: ImageSet(train.images[idx], train.labels[idx], train.classes)  # noqa: E731
    return part(keep.nonzero().flatten()), part(val)


def hold_out_images(count: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held out) indices of `count` unlabelled items (a caption dataset's images): round(fraction x
    count) of them, at least one, chosen by a generator seeded with `seed`; each in ascending order."""
    take = min(max(1, round(fraction * count)), count - 1)
    if count < 2:
        raise UserError(f"data.val_fraction={fraction:g} needs two images at least (one to train on, one to "
                        f"validate on); the training split has {count}")
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return order[take:].sort().values, order[:take].sort().values
