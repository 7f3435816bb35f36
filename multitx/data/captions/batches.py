"""Endless shuffled, resumable batches of a caption split: images, each with some of its captions.

Made as the ViTs' image batches are (data/images/batches.py): the BatchSampler picks each batch, a
CaptionMaker makes it, in a torch DataLoader (data.workers > 0: in worker processes, ahead of time).
"""

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset

from multitx.data.captions.datasets import CaptionSplit
from multitx.data.captions.subwords import CaptionBPE
from multitx.data.captions.vocab import WordVocab
from multitx.data.images.rows import gather
from multitx.data.sampler import Batch, BatchSampler, batch_loader, seeded
from multitx.errors import UserError


def encode_captions(split: CaptionSplit, tokenizer: WordVocab | CaptionBPE,
                    max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every caption as ids (P, max_len), padded with <pad>, image after image; image i's captions
    are rows offsets[i] .. offsets[i+1] - 1; lengths (P,), <bos> and <eos> included (read from here, not
    from the padding's id: GPT-2's tokens pad with the same end-of-text that begins and ends them)."""
    encoded = [tokenizer.encode(c, max_len) for caps in split.captions for c in caps]
    ids = np.full((len(encoded), max_len), tokenizer.pad_id, dtype=np.int64)
    for row, seq in enumerate(encoded):
        ids[row, : len(seq)] = seq
    offsets = np.cumsum([0, *(len(caps) for caps in split.captions)])
    return ids, offsets, np.array([len(seq) for seq in encoded], dtype=np.int64)


class CaptionMaker(Dataset):
    """Makes one batch from a sampler's Batch (indices (B,), seed): the images, read now, and R caption
    rows of each, chosen by keys drawn from the batch's seed, so that the batch depends on nothing
    else (not on which process makes it, nor on the batches made before it)."""

    def __init__(self, split: CaptionSplit, tokenizer: WordVocab | CaptionBPE, max_len: int, captions_per_image: int,
                 sampler: BatchSampler):
        self.images, self.captions_per_image = split.images, captions_per_image
        self.ids, self.offsets, self.lengths = encode_captions(split, tokenizer, max_len)  # (P, L), (N + 1,), (P,)
        self.counts = np.diff(self.offsets)  # (N,) captions of each image, at least one
        # Only its global_batch and share() are used: which rows of a global draw are this process's.
        self.sampler = sampler

    def __getitem__(self, batch: Batch) -> dict:
        images = batch.indices.numpy()  # (B,)
        keys = torch.rand(self.sampler.global_batch, int(self.counts.max()), generator=seeded(batch.seed))  # (G, K)
        rows = self.pick(images, self.sampler.share(keys).numpy())  # (B, R) caption rows
        ids = self.ids[rows]  # (B, R, max_len)
        longest = int(self.lengths[rows].max())
        return {"images": gather(self.images, batch.indices), "ids": torch.from_numpy(ids[..., :longest].copy())}

    def pick(self, images: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """R caption rows for each image (B,): its captions in the order of their keys (B, K), cycling
        when it has fewer than R."""
        counts = self.counts[images][:, None]  # (B, 1)
        keys = np.where(np.arange(keys.shape[1]) < counts, keys, np.inf)  # (B, K): keys past its captions last
        ranked = np.argsort(keys, axis=1, kind="stable")  # (B, K) its captions, in this batch's order
        cycled = np.arange(self.captions_per_image) % counts  # (B, R)
        return self.offsets[images][:, None] + np.take_along_axis(ranked, cycled, axis=1)

    def __len__(self) -> int:
        return len(self.images)


class CaptionBatches:
    """Endless shuffled batches: `batch_size` images, each with `captions_per_image` of its captions.

        {"images": (B, 3, H, W) uint8, "ids": (B, R, T) int64}, T the longest caption in the batch

    Encoding an image costs more than decoding a caption, so the model encodes
    each image once and decodes its R captions against that one encoding
    (R=1: plain (image, caption) pairs). An image with fewer than R captions
    repeats some.

    Which images: a BatchSampler (data/sampler.py) of epoch permutations, the
    incomplete last batch dropped; under DDP every process draws the same global
    batch of batch_size x world_size images and keeps its slice, so together the
    processes see each image once an epoch. Which captions: random keys drawn
    from the batch's seed for the whole global batch, each process keeping its
    rows, so the choice too does not depend on the number of processes. The
    state is the sampler's: plain ints.

    Where the images are read (from memory, from the shards, or decoded from
    their files: data.cache=lazy): where the batch is made, by a torch DataLoader;
    with workers > 0 in its worker processes, ahead of the training step, so
    that decoding does not hold up training. The batches are the same with any
    number of workers; pinned when they go to a GPU (pin_memory).
    """

    def __init__(self, split: CaptionSplit, tokenizer: WordVocab | CaptionBPE, batch_size: int, max_len: int, seed: int,
                 captions_per_image: int = 1, rank: int = 0, world_size: int = 1, *, workers: int = 0,
                 pin_memory: bool = False, prefetch: int = 4):
        if len(split) < batch_size * world_size:
            raise UserError(f"the split has {len(split)} images, fewer than batch_size={batch_size}"
                            + (f" x {world_size} processes" if world_size > 1 else "")
                            + "; lower batch_size or use more data")
        if captions_per_image < 1:
            raise UserError(f"captions_per_image must be at least 1, got {captions_per_image}")
        # The position of the next batch handed out; the loader's own copy runs ahead by what it prefetches.
        self.sampler = BatchSampler(len(split), batch_size, seed=seed, rank=rank, world_size=world_size)
        self.maker = CaptionMaker(split, tokenizer, max_len, captions_per_image, self.sampler)
        self.workers, self.pin_memory, self.prefetch = workers, pin_memory, prefetch
        self.loader: Iterator | None = None

    def start(self) -> Iterator:
        return batch_loader(self.maker, self.sampler, self.workers, self.pin_memory, self.prefetch)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
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
