"""One resumable batch sampler for every task: which items each process trains on, step by step.

A run of world_size processes draws one global batch of batch_size x world_size
indices a step, the same in every process, and each process keeps its slice:

    global batch   [ i0 i1 i2 i3 | i4 i5 i6 i7 ]     batch_size 4, world_size 2
    rank 0 keeps     i0 i1 i2 i3
    rank 1 keeps                   i4 i5 i6 i7

so N processes together see exactly what one process with an N times larger batch sees.

Two ways to draw, each a pure function of plain ints (seed, epoch, position):
    replacement=False  epochs: epoch e is a permutation of the n items seeded by (seed, e), cut into
                       n // global_batch global batches; the incomplete last one is dropped
    replacement=True   every global batch draws its indices afresh, seeded by (seed, position):
                       random token windows, where an epoch means nothing (it stays 0)

Each batch also carries a seed of its own, the same in every process, for what an
iterator draws per batch (caption choice, augmentation).

The state is {seed, epoch, position}, the position counted in global batches, so it does not
depend on world_size: a run may resume on another number of processes, from the same place, as
long as the global batch stays the same (check_same_global_batch in multitx/engine/run_setup.py).
"""

import copy
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader

from multitx.errors import UserError

# What a derived seed is for, part of its key, so that no two uses share one random stream.
ORDER, DRAW, BATCH_SEED = 0, 1, 2


def derive_seed(*key: int) -> int:
    """A 63-bit seed from a tuple of ints: NumPy's SeedSequence hashes them, so (1, 2) and (2, 1) differ."""
    return int(np.random.SeedSequence([int(k) % 2**64 for k in key]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def seeded(*key: int) -> torch.Generator:
    """A CPU torch.Generator seeded from a tuple of ints."""
    return torch.Generator().manual_seed(derive_seed(*key))


class Batch(NamedTuple):
    indices: torch.Tensor  # (B,) int64: this process's slice of the global batch
    seed: int  # the global batch's own seed: the same in every process and on every resume


class BatchSampler:
    """Endless batches of indices into n items for process `rank` of `world_size` (see the module doc)."""

    def __init__(self, n: int, batch_size: int, *, seed: int = 0, replacement: bool = False, rank: int = 0,
                 world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not one of {world_size} processes")
        self.n, self.batch_size, self.replacement = n, batch_size, replacement
        self.rank, self.world_size = rank, world_size
        self.global_batch = batch_size * world_size
        self.batches_per_epoch = None if replacement else n // self.global_batch  # global batches an epoch
        if self.batches_per_epoch == 0 or n == 0:
            raise ValueError(f"{n} items cannot fill one global batch of {self.global_batch}")
        self.seed, self.epoch, self.position = seed, 0, 0  # the next global batch to draw
        self.epoch_order: tuple[int, torch.Tensor] | None = None  # (epoch, its permutation (n,)), drawn once an epoch

    def __iter__(self):
        return self

    def __next__(self) -> Batch:
        batch = Batch(self.share(self.global_indices()), derive_seed(self.seed, BATCH_SEED, self.epoch, self.position))
        self.advance()
        return batch

    def global_indices(self) -> torch.Tensor:
        """(batch_size * world_size,) int64: the global batch at the current position, as every process draws it."""
        if self.replacement:
            return torch.randint(self.n, (self.global_batch,), generator=seeded(self.seed, DRAW, self.position))
        if self.epoch_order is None or self.epoch_order[0] != self.epoch:
            self.epoch_order = (self.epoch, torch.randperm(self.n, generator=seeded(self.seed, ORDER, self.epoch)))
        start = self.position * self.global_batch
        return self.epoch_order[1][start : start + self.global_batch]

    def share(self, rows: torch.Tensor) -> torch.Tensor:
        """This process's rows of something drawn for the whole global batch: (G, ...) -> (B, ...)."""
        return rows[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]

    def advance(self) -> None:
        """Move on one global batch without drawing it (an iterator whose batches are made ahead calls this)."""
        self.position += 1
        if self.position == self.batches_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        if not {"seed", "epoch", "position"} <= state.keys():
            raise UserError(f"the checkpoint's data position ({', '.join(sorted(state))}) is from an older multitx, "
                            f"whose batches were drawn another way; start a new run instead of resuming this one")
        self.seed, self.epoch, self.position = int(state["seed"]), int(state["epoch"]), int(state["position"])
        if state.get("former") and self.batches_per_epoch is not None:  # a count of batches (see trainer.py)
            self.epoch, self.position = divmod(self.position, self.batches_per_epoch)
        elif self.batches_per_epoch is not None and self.position >= self.batches_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0  # saved with more data or a smaller global batch


def batch_loader(maker, sampler: BatchSampler, workers: int, pin_memory: bool, prefetch: int):
    """An iterator of the batches `maker` (a Dataset indexed by Batch) makes from `sampler`'s Batches, in order,
    by a DataLoader (workers > 0: in parallel, ahead of time). The sampler is copied: the loader's copy runs
    ahead by what it prefetches. Its own generator: a DataLoader otherwise draws its base seed from the global
    torch RNG when it starts, which would shift dropout and drop-path masks in a resumed run."""
    loader = DataLoader(maker, batch_size=None, sampler=copy.copy(sampler), num_workers=workers,
                        pin_memory=pin_memory, prefetch_factor=prefetch if workers else None,
                        generator=torch.Generator().manual_seed(sampler.seed))
    return iter(loader)
