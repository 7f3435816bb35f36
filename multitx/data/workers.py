"""data.workers: how many DataLoader processes make the training batches (the ViTs' and the captioners').

They read each batch's images (from the shards, or decoded: data.cache=lazy) and augment them (the
ViTs), ahead of the training step; the BatchSampler (data/sampler.py) decides which batch each makes,
so the batches are the same with any number of them.
"""

import os

from multitx.errors import UserError


def data_workers(setting, cuda: bool) -> int:
    """data.workers: a number, or auto: on a GPU, this process's share of the CPU cores less
    one, at most 16 (AutoAugment on 32x32 images makes about 1,000-2,000 images/s per worker);
    on the CPU none: the cores are busy training, and workers would only compete with them."""
    if setting in (None, "auto"):
        share = (os.cpu_count() or 1) // max(int(os.environ.get("LOCAL_WORLD_SIZE", 1)), 1)
        return min(16, max(share - 1, 0)) if cuda else 0
    try:
        workers = int(setting)
    except (TypeError, ValueError):
        raise UserError(f"data.workers must be a number or auto, got {setting!r}") from None
    if workers < 0:
        raise UserError(f"data.workers must be at least 0, got {workers}")
    return workers
