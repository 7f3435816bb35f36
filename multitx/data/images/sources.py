"""What an image set is decoded from: its images one at a time, and what says they are unchanged.

    source = ImageFiles(paths, "data.root=DIR (train)")
    source.decode(i, (H, W), channels)     (C, H, W) uint8, image i fitted to (H, W) (data/images/images.py)
    source.decoded((H, W), channels)       every image in order (a build of the shard cache reads this)
    source.files()                         [(name, bytes, mtime_ns)]: read from the file system, nothing decoded

The shard cache (data/images/shards.py) is keyed by `identity` (which images: the folder, the split, the
selection) and by a digest of `files()` (their state); a later run compares the two without opening an image.

    ImageFiles      image files on disk (an image folder, COCO's and Flickr's image folders)
    DrawnImages     images made in memory by a function (data=shapes), with what was made beside them
    HFImages        (data/images/hf_folder.py) the image column of a Hugging Face datasets folder
"""

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from multitx.data.images.images import SizeLike, decode_image
from multitx.errors import UserError


class ImageSource:
    """N images and what identifies them. A subclass gives __len__, decode and files."""

    what: str  # what the messages call it: "data.root=DIR (train)"
    identity: object  # plain data (JSON): which images, whatever their state; part of the cache's key
    making = "decoding"  # what a build does to each image, as the messages say it

    def __len__(self) -> int:
        raise NotImplementedError

    def decode(self, i: int, size: SizeLike, channels: int) -> torch.Tensor:
        """(channels, H, W) uint8: image i, fitted to size."""
        raise NotImplementedError

    def decoded(self, size: SizeLike, channels: int) -> Iterator[torch.Tensor]:
        """Every image in order, each (channels, H, W) uint8."""
        for i in range(len(self)):
            yield self.decode(i, size, channels)

    def files(self) -> Iterator[tuple[str, int, int]]:
        """(name, size in bytes, modification time in ns) of each file the images are read from."""
        raise NotImplementedError

    def extra(self) -> dict | None:
        """Plain data made with the images (a generated set's captions), kept in the cache beside them."""
        return None


class ImageFiles(ImageSource):
    """Image files, in the order given. `missing`: the end of the one line that a missing file ends in,
    after "N images are missing from FOLDER (the first: NAME)"; it says where they were named and what to do."""

    def __init__(self, paths: list, what: str, identity: object, missing: str = "put them back"):
        self.paths = [os.fspath(p) for p in paths]  # str: a tenth of a Path's memory, for sets of millions
        self.what, self.identity, self.missing = what, identity, missing

    def __len__(self) -> int:
        return len(self.paths)

    def decode(self, i: int, size: SizeLike, channels: int) -> torch.Tensor:
        return decode_image(Path(self.paths[i]), size, channels)

    def files(self) -> Iterator[tuple[str, int, int]]:
        absent, first = 0, None
        for path in self.paths:
            try:
                stat = os.stat(path)
            except FileNotFoundError:
                absent, first = absent + 1, first or path
                continue
            if absent == 0:
                yield path, stat.st_size, stat.st_mtime_ns
        if absent:
            where = Path(first).parent
            raise UserError(f"{absent} image{'s are' if absent > 1 else ' is'} missing from {where}: image {first} "
                            f"does not exist{' (the first of them)' if absent > 1 else ''}; {self.missing}")


class DrawnImages(ImageSource):
    """Images a function draws, all at once: draw() -> ((N, H, W, C) uint8 at the size asked for, extra).
    Nothing to read from disk: the identity (the function's settings) is the whole key."""

    making = "drawing"

    def __init__(self, count: int, draw: Callable[[], tuple[np.ndarray, dict]], what: str, identity: object):
        self.count, self.draw, self.what, self.identity = count, draw, what, identity
        self.drawn: tuple[np.ndarray, dict] | None = None

    def __len__(self) -> int:
        return self.count

    def made(self) -> tuple[np.ndarray, dict]:
        if self.drawn is None:
            self.drawn = self.draw()
        return self.drawn

    def decode(self, i: int, size: SizeLike, channels: int) -> torch.Tensor:
        return torch.from_numpy(self.made()[0][i]).permute(2, 0, 1)  # (H, W, C) -> (C, H, W)

    def files(self) -> Iterator[tuple[str, int, int]]:
        return iter(())

    def extra(self) -> dict | None:
        return self.made()[1]
