"""ImageRows: an (N, C, H, W) uint8 image set that is read when it is used, not held in memory.

A set larger than memory cannot be one tensor in memory; as an ImageRows it keeps the contract
of the ImageSet and CaptionSplit containers (`images`: (N, C, H, W) uint8) while its pixels stay
where they are: in memory-mapped shards (data/images/shards.py) or in their source files, decoded
when drawn (data.cache=lazy). Two kinds of use, told apart by the key:

    rows[i]                    (C, H, W) uint8 tensor: image i, read now
    rows[a:b], rows[indices]   another ImageRows: the same store, other rows, nothing read
                               (a held-out split, a subset: no copy of a set larger than memory)
    rows.take(indices)         (B, C, H, W) uint8 tensor: those images, read now (a batch)

Anything else a tensor does (rows[:n].to(device), .float(), .permute, torch.equal, np.asarray)
reads the rows the view covers and does it to that tensor, so code written for a tensor works on a
view of a few rows as it is; on a view of the whole of a large set it would read the whole set.

A store has `count`, `shape` (C, H, W) and `read(rows: int64 array (n,)) -> (n, C, H, W) uint8`;
it pickles without its open files (a DataLoader worker started by spawn opens them again).
"""

import operator

import numpy as np
import torch

from multitx.data.images.images import SizeLike, hw


class ImageRows:
    """Rows `index` of a store (all of them, in order, for None), as an (n, C, H, W) uint8 tensor is used."""

    def __init__(self, store, index: range | np.ndarray | None = None):
        self.store = store
        self.index = range(store.count) if index is None else index

    # ------------------------------------------------------------------------------------ what a tensor says
    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.index), *self.store.shape))

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    dtype = torch.uint8
    device = torch.device("cpu")
    ndim = 4

    def dim(self) -> int:
        return 4

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        return f"ImageRows({tuple(self.shape)} uint8, {self.store!r})"

    # ----------------------------------------------------------------------------------------- reading
    def __getitem__(self, key):
        if isinstance(key, tuple):  # rows first, then the rest of the key on the tensor they are
            first, rest = (key[0], key[1:]) if key else (slice(None), ())
            picked = self[first]
            if isinstance(picked, ImageRows):
                return picked.tensor()[(slice(None), *rest)]
            return picked[rest]
        if key is None or key is Ellipsis:
            return self.tensor()[key]
        if isinstance(key, slice):
            return ImageRows(self.store, self.index[key])
        if is_int(key):
            row = self.index[operator.index(key)]  # negative counts from the end; past the end: IndexError
            return torch.from_numpy(self.store.read(np.array([row], dtype=np.int64))[0])
        return ImageRows(self.store, self.rows(key))

    def rows(self, key) -> np.ndarray:
        """(n,) int64: the store's rows of the view's positions `key` (indices, or a mask of len(self))."""
        picked = np.asarray(key.cpu() if isinstance(key, torch.Tensor) else key)
        if picked.dtype == bool:
            if picked.shape != (len(self),):
                raise IndexError(f"a mask of shape {picked.shape} for {len(self)} images")
            picked = picked.nonzero()[0]
        if picked.size and not np.issubdtype(picked.dtype, np.integer):
            raise IndexError(f"images are indexed by whole numbers, not {picked.dtype}")
        picked = picked.astype(np.int64).reshape(-1)
        n = len(self)
        if picked.size and (picked.min() < -n or picked.max() >= n):
            raise IndexError(f"an index out of range for {n} images")
        picked = picked % max(n, 1)
        if isinstance(self.index, range):  # no (N,) array for a view of a whole, large set
            return self.index.start + picked * self.index.step
        return self.index[picked]

    def take(self, key) -> torch.Tensor:
        """(B, C, H, W) uint8: the images at positions `key`, read now."""
        return torch.from_numpy(self.store.read(self.rows(key)))

    def tensor(self) -> torch.Tensor:
        """(n, C, H, W) uint8: every image of the view, read now."""
        index = self.index
        rows = np.arange(index.start, index.stop, index.step) if isinstance(index, range) else index
        return torch.from_numpy(self.store.read(rows.astype(np.int64)))

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    # --------------------------------------------------------------------------- anything else: as a tensor
    def __array__(self, dtype=None, copy=None):
        array = self.tensor().numpy()
        return array if dtype is None else array.astype(dtype)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return func(*as_tensors(args), **as_tensors(kwargs or {}))

    def __getattr__(self, name: str):
        if name.startswith("_") or name in ("store", "index"):  # pickling, copying, NumPy's probes
            raise AttributeError(name)
        return getattr(self.tensor(), name)


def is_int(key) -> bool:
    if isinstance(key, (bool, np.bool_)):
        return False
    if isinstance(key, torch.Tensor):
        return key.ndim == 0 and not key.is_floating_point() and key.dtype != torch.bool
    if isinstance(key, np.ndarray):
        return key.ndim == 0 and np.issubdtype(key.dtype, np.integer)
    try:
        operator.index(key)
        return True
    except TypeError:
        return False


def as_tensors(value):
    """`value` with every ImageRows in it (in lists, tuples and dicts too) read as a tensor."""
    if isinstance(value, ImageRows):
        return value.tensor()
    if isinstance(value, (list, tuple)):
        return type(value)(as_tensors(v) for v in value)
    if isinstance(value, dict):
        return {k: as_tensors(v) for k, v in value.items()}
    return value


def gather(images, indices) -> torch.Tensor:
    """(B, C, H, W) uint8: a batch of an image set, an ImageRows or a tensor in memory."""
    return images.take(indices) if isinstance(images, ImageRows) else images[indices]


class DecodedStore:
    """The rows of an ImageRows decoded from their source each time they are read (data.cache=lazy):
    nothing on disk, nothing in memory; in DataLoader workers (data.workers) when the batches are made there."""

    def __init__(self, source, size: SizeLike, channels: int):
        self.source, self.size, self.channels = source, hw(size), channels
        self.count = len(source)
        self.shape = (channels, *self.size)

    def read(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), *self.shape), dtype=np.uint8)
        for n, row in enumerate(rows.tolist()):
            out[n] = self.source.decode(row, self.size, self.channels).numpy()
        return out

    def __repr__(self) -> str:
        return f"decoded when read from {self.source.what}"
