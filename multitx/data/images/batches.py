"""Endless, shuffled, augmented, resumable batches of an image set: a tensor in memory, or an ImageRows
read from memory-mapped shards or decoded when drawn (data/images/rows.py, shards.py).

Which images go in which batch is the BatchSampler's (data/sampler.py): epoch
permutations, every process drawing the same global batch and keeping its
slice, the incomplete last batch dropped, and a state of plain ints. Each
process augments its share with the torch RNG seeded from (the batch's seed,
rank), so the augmented pixels too are the same on every resume, however many
workers make them. Batches are made by a torch DataLoader (workers > 0: in
parallel, ahead of time), pinned when they go to a GPU, and copied with
non_blocking=True by the engine. The images of a batch are read (from the
shards, or decoded: data.cache=lazy) where the batch is made: in the workers.
"""

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import Dataset

from multitx.data.images.datasets import ImageSet
from multitx.data.images.rows import gather
from multitx.data.sampler import Batch, BatchSampler, batch_loader, derive_seed
from multitx.errors import UserError


class BatchMaker(Dataset):
    """Makes one batch from a sampler's Batch (indices (B,), seed): gathers the uint8 images, then runs
    the batch transform with the torch RNG seeded by (seed, rank) (the caller's RNG is left as it was).
    The rank is mixed in so that the processes do not augment their shares of a global batch alike."""

    def __init__(self, data: ImageSet, transform: Callable | None, rank: int):
        self.images, self.labels, self.transform, self.rank = data.images, data.labels, transform, rank

    def __getitem__(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        images = gather(self.images, batch.indices)  # (B, C, H, W) uint8
        if self.transform is not None:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # per-image ops are tiny: threads would only wait on each other
            try:
                with torch.random.fork_rng(devices=[]):
                    torch.default_generator.manual_seed(derive_seed(batch.seed, self.rank))  # CPU only, not CUDA
                    images = self.transform(images)  # (B, C, H, W) uint8
            finally:
                torch.set_num_threads(threads)
        return images, self.labels[batch.indices]

    def __len__(self) -> int:
        return len(self.labels)


class ShuffledBatches:
    """Iterator of (images (B, C, H, W) uint8, labels (B,) int64), without end.
    Incomplete last batches of an epoch are dropped (Mixup wants equal batches)."""

    def __init__(self, data: ImageSet, batch_size: int, *, transform: Callable | None = None, seed: int = 0,
                 workers: int = 0, pin_memory: bool = False, prefetch: int = 4, rank: int = 0, world_size: int = 1):
        if len(data) < batch_size * world_size:
            raise UserError(f"{len(data)} training images cannot fill one batch of {batch_size}"
                            + (f" per process ({world_size} processes)" if world_size > 1 else "")
                            + "; lower batch_size")
        # The position of the next batch handed out; the loader's own copy runs ahead by what it prefetches.
        self.sampler = BatchSampler(len(data), batch_size, seed=seed, rank=rank, world_size=world_size)
        self.maker = BatchMaker(data, transform, rank)
        self.workers, self.pin_memory, self.prefetch = workers, pin_memory, prefetch
        self.loader: Iterator | None = None

    def start(self) -> Iterator:
        return batch_loader(self.maker, self.sampler, self.workers, self.pin_memory, self.prefetch)

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.loader is None:
            self.loader = self.start()
        batch = next(self.loader)
        self.sampler.advance()
        return batch

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.close()
        self.sampler.load_state_dict(state)

    def close(self) -> None:
        """Stop the worker processes (they restart at the next batch)."""
        self.loader = None
