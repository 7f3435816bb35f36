"""Endless, shuffled, augmented, resumable batches of an in-memory image set.

Epoch e's order, and one augmentation seed per batch, are drawn from a
torch.Generator seeded from (seed, e). So (epoch, position in the epoch) is the
whole state: a run resumed there draws exactly the batches, and the augmented
pixels, it would have drawn, however many workers made them and in which
process. Batches are made by a torch DataLoader (workers > 0: in parallel, ahead
of time), pinned when they go to a GPU, and copied with non_blocking=True by the engine.

Under torchrun every process shuffles the same way and takes every world_size-th
batch, so the processes see disjoint images.
"""

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from multitx.data.images.datasets import ImageSet
from multitx.errors import UserError


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator that orders epoch `epoch`: the same in every process and every resume."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))


class BatchMaker(Dataset):
    """Makes one batch from a job (indices (B,), seed): gathers the uint8 images, then runs the
    batch transform with the torch RNG seeded by `seed` (the caller's RNG is left as it was)."""

    def __init__(self, data: ImageSet, transform: Callable | None):
        self.images, self.labels, self.transform = data.images, data.labels, transform

    def __getitem__(self, job: tuple[torch.Tensor, int]) -> tuple[torch.Tensor, torch.Tensor]:
        indices, seed = job
        images = self.images[indices]  # (B, C, H, W) uint8
        if self.transform is not None:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # per-image ops are tiny: threads would only wait on each other
            try:
                with torch.random.fork_rng(devices=[]):
                    torch.default_generator.manual_seed(seed)  # the CPU generator only, not CUDA's
                    images = self.transform(images)  # (B, C, H, W) uint8
            finally:
                torch.set_num_threads(threads)
        return images, self.labels[indices]

    def __len__(self) -> int:
        return len(self.labels)


class ShuffledBatches:
    """Iterator of (images (B, C, H, W) uint8, labels (B,) int64), without end.
    Incomplete last batches of an epoch are dropped (Mixup wants equal batches)."""

    def __init__(self, data: ImageSet, batch_size: int, *, transform: Callable | None = None, seed: int = 0,
                 workers: int = 0, pin_memory: bool = False, prefetch: int = 4, rank: int = 0, world_size: int = 1):
        self.batches_per_epoch = len(data) // (batch_size * world_size)  # per process
        if self.batches_per_epoch == 0:
            raise UserError(f"{len(data)} training images cannot fill one batch of {batch_size}"
                            + (f" per process ({world_size} processes)" if world_size > 1 else "")
                            + "; lower batch_size")
        self.maker = BatchMaker(data, transform)
        self.batch_size, self.seed, self.workers, self.pin_memory = batch_size, seed, workers, pin_memory
        self.prefetch, self.rank, self.world_size = prefetch, rank, world_size
        self.epoch, self.position = 0, 0  # the next batch to hand out
        self.loader: Iterator | None = None

    def plan(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Epoch `epoch`'s image order (N,) and its batches' augmentation seeds, for every process."""
        generator = epoch_generator(self.seed, epoch)
        order = torch.randperm(len(self.maker), generator=generator)
        seeds = torch.randint(2**62, (self.batches_per_epoch * self.world_size,), generator=generator)
        return order, seeds

    def jobs(self, epoch: int, position: int) -> Iterator[tuple[torch.Tensor, int]]:
        """This process's jobs from (epoch, position) on, for ever."""
        while True:
            order, seeds = self.plan(epoch)
            for p in range(position, self.batches_per_epoch):
                b = p * self.world_size + self.rank  # global batch number within the epoch
                yield order[b * self.batch_size:(b + 1) * self.batch_size], int(seeds[b])
            epoch, position = epoch + 1, 0

    def start(self) -> Iterator:
        # Its own generator: a DataLoader otherwise draws its base seed from the global torch RNG when
        # it starts, which would shift dropout and drop-path masks in a resumed run.
        loader = DataLoader(self.maker, batch_size=None, sampler=self.jobs(self.epoch, self.position),
                            num_workers=self.workers, pin_memory=self.pin_memory,
                            prefetch_factor=self.prefetch if self.workers else None,
                            generator=torch.Generator().manual_seed(self.seed))
        return iter(loader)

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.loader is None:
            self.loader = self.start()
        batch = next(self.loader)
        self.position += 1
        if self.position == self.batches_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        return batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.close()
        self.epoch, self.position, self.seed = int(state["epoch"]), int(state["position"]), int(state["seed"])
        if self.position >= self.batches_per_epoch:  # saved with another batch size or data: start the next epoch
            self.epoch, self.position = self.epoch + 1, 0

    def close(self) -> None:
        """Stop the worker processes (they restart at the next batch)."""
        self.loader = None
