"""The shard cache: an image set decoded and resized once into uint8 shards under DATA_DIR, then
memory-mapped by every later run and by every process that reads the same source.

    images = cached_images(source, (H, W), channels, DATA_DIR / "imagefolder", "train", cache="auto")
    images   ImageRows (data/images/rows.py): (N, C, H, W) uint8, read from the shards when used

Layout, one folder per source and shape, one complete build in it:

    DATA_DIR/<dataset>/<split>/<H>x<W>-<C>ch-<identity>/     identity: a digest of which images (source.identity)
        build.lock                                          one build at a time (the processes of a DDP run)
        <state>/                                            state: a digest of the files' names, sizes, mtimes
            images-00000.npy ...                            (n, C, H, W) uint8, SHARD_BYTES at most each
            files.jsonl                                     [name, bytes, mtime_ns] of each source file
            extra.json                                      what was made with the images, if anything
            meta.json                                       count, shape, shards

A build writes into .partial-<state>-<pid>/ and renames it to <state>/ when every shard is written: a
build that is killed, or stopped by a full disk, leaves nothing a later run takes for complete (the next
build deletes it). A later run finds <state>/ by statting the source files, and decodes nothing. When the
files have changed (an image added, removed or modified), <state> differs: the run says so in one line,
builds the new state and deletes the old. Shards are written image by image, a chunk at a time, so the
memory a build takes does not grow with the set.

data.cache: shards | lazy | auto. lazy decodes each image when a batch draws it (in the DataLoader workers
when data.workers > 0) and writes nothing; auto builds shards when they fit in nine tenths of the disk's
free space under DATA_DIR, and otherwise says so in one line and decodes lazily.
"""

import errno
import fcntl
import hashlib
import json
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm import tqdm

from multitx.config.paths import nearest_existing
from multitx.data.images.images import SizeLike, hw
from multitx.data.images.rows import DecodedStore, ImageRows
from multitx.errors import UserError
from multitx.files import atomic_write_bytes, fsync_path

VERSION = 1  # bump when what a shard holds changes: older caches are then built again
SHARD_BYTES = 1 << 30  # a shard's images: at most 1 GiB (350,000 images of 32x32 RGB, 7,000 of 224x224)
CHUNK_BYTES = 8 << 20  # decoded, then written at once: at most 256 images, at most 8 MiB of them
MODES = ("auto", "shards", "lazy")
DISK_SHARE = 0.9  # auto: shards when they take at most this share of the free space


def cached_images(source, size: SizeLike, channels: int, place: Path, split: str, cache: str = "auto") -> ImageRows:
    """The images of `source` at size (H, W) with `channels`, as an ImageRows: from the shard cache under
    `place` (DATA_DIR/<dataset>), built first if need be; or decoded when read (cache=lazy, or auto without
    room for the shards). A missing source file is a UserError, in either case."""
    if cache not in MODES:
        raise UserError(f"data.cache must be one of {', '.join(MODES)}, got {cache!r}")
    (H, W) = hw(size)
    folder = Path(place) / split / f"{H}x{W}-{channels}ch-{digest(VERSION, source.identity, H, W, channels)}"
    state = fingerprint(source)  # a missing file is one line here, whatever the mode
    built = folder / state
    if cache == "lazy":
        return ImageRows(DecodedStore(source, (H, W), channels))
    if (built / "meta.json").is_file():
        return read_shards(built)
    if not room_for(source, (H, W), channels, folder, cache):
        return ImageRows(DecodedStore(source, (H, W), channels))
    with locked(folder / "build.lock"):
        if not (built / "meta.json").is_file():  # another process may have built it while this one waited
            build(source, (H, W), channels, folder, state)
    return read_shards(built)


def digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def fingerprint(source) -> str:
    """A digest of the source files' names, sizes and modification times (stat only: nothing is read)."""
    state = hashlib.sha256()
    for name, size, mtime in source.files():
        state.update(f"{name}\0{size}\0{mtime}\n".encode("utf-8", "surrogateescape"))
    state.update(f"{len(source)}".encode())
    return state.hexdigest()[:16]


def shard_bytes(count: int, shape: tuple[int, ...]) -> int:
    return count * int(np.prod(shape))


def room_for(source, size: tuple[int, int], channels: int, folder: Path, cache: str) -> bool:
    """Whether the shards fit; if not, cache=auto says in one line that the images are decoded when drawn,
    and cache=shards is a UserError."""
    need = shard_bytes(len(source), (channels, *size))
    free = shutil.disk_usage(nearest_existing(folder / "x")).free
    if need <= DISK_SHARE * free:
        return True
    if cache == "shards":
        raise UserError(f"the {len(source):,} images of {source.what} would take {gigabytes(need)} as shards, more "
                        f"than {DISK_SHARE:.0%} of the {gigabytes(free)} free under {folder.parent}; free space, give "
                        f"data_dir=ELSEWHERE, or set data.cache=lazy to decode each image when it is drawn")
    print(f"the {len(source):,} images of {source.what} would take {gigabytes(need)} as shards, more than "
          f"{DISK_SHARE:.0%} of the {gigabytes(free)} free under {folder.parent}; decoding each image when it is "
          f"drawn instead (data.cache=lazy; free space or give data_dir=ELSEWHERE to cache them)", flush=True)
    return False


def gigabytes(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


@contextmanager
def locked(path: Path):
    """One build of a cache folder at a time: the others wait here, then find it built."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build(source, size: tuple[int, int], channels: int, folder: Path, state: str) -> None:
    """Decode every image into .partial-<state>-<pid>/, then rename it <state>/ (under the lock)."""
    for old in folder.glob(".partial-*"):  # a build killed before it finished: never read, now deleted
        shutil.rmtree(old, ignore_errors=True)
    earlier = [p for p in folder.iterdir() if (p / "meta.json").is_file() and p.name != state]
    shape = (channels, *size)
    count = len(source)
    need = shard_bytes(count, shape)
    if earlier:
        print(f"{source.what} changed since its shard cache was built ({changes(earlier[0], source)}); "
              f"{source.making} its {count:,} images again into {folder}", flush=True)
    else:
        print(f"{source.making} the {count:,} images of {source.what} once into {gigabytes(need)} of shards in "
              f"{folder} (later runs read them memory-mapped)", flush=True)
    partial = folder / f".partial-{state}-{os.getpid()}"
    partial.mkdir()
    try:
        meta = write_shards(source, size, channels, partial)
        write_lines(partial / "files.jsonl", ([name, n, mtime] for name, n, mtime in source.files()))
        extra = source.extra()
        if extra is not None:
            atomic_write_bytes(partial / "extra.json", json.dumps(extra).encode("utf-8"))
        atomic_write_bytes(partial / "meta.json", json.dumps(meta).encode("utf-8"))
        fsync_path(partial)
        os.replace(partial, folder / state)  # the build is complete when its folder has this name
        fsync_path(folder)
    except OSError as err:
        shutil.rmtree(partial, ignore_errors=True)
        if err.errno == errno.ENOSPC:
            raise UserError(f"the disk filled up while caching the images of {source.what} in {folder} (they "
                            f"take {gigabytes(need)}); free some space, give data_dir=ELSEWHERE, or set "
                            f"data.cache=lazy to decode them when drawn; nothing half-written was kept") from None
        raise
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    for old in earlier:
        shutil.rmtree(old, ignore_errors=True)


def write_shards(source, size: tuple[int, int], channels: int, folder: Path) -> dict:
    """The images of `source`, in order, as images-00000.npy, ... of (n, C, H, W) uint8; the metadata."""
    shape = (channels, *size)
    count, per_image = len(source), int(np.prod(shape))
    shard_rows = max(1, SHARD_BYTES // per_image)
    names = [f"images-{k:05d}.npy" for k in range((count + shard_rows - 1) // shard_rows)]
    images = iter(source.decoded(size, channels))
    step = min(256, max(1, CHUNK_BYTES // per_image))
    chunk = np.empty((step, *shape), dtype=np.uint8)
    with tqdm(total=count, unit="img", desc=f"{source.making} {source.what}", file=sys.stderr, disable=None,
              leave=False, dynamic_ncols=True) as bar:
        for k, name in enumerate(names):
            rows = min(shard_rows, count - k * shard_rows)
            with open(folder / name, "wb") as f:
                np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False,
                                                         "shape": (rows, *shape)})
                for start in range(0, rows, step):
                    n = min(step, rows - start)
                    for j in range(n):
                        image = next(images)
                        if tuple(image.shape) != shape:
                            raise UserError(f"image {k * shard_rows + start + j} of {source.what} came out "
                                            f"{tuple(image.shape)}, not {shape}")
                        chunk[j] = image.numpy()
                    f.write(chunk[:n].tobytes())
                    bar.update(n)
                f.flush()
                os.fsync(f.fileno())
    return {"version": VERSION, "count": count, "shape": list(shape), "shard_rows": shard_rows, "shards": names,
            "source": source.what}


def write_lines(path: Path, rows) -> None:
    """One JSON value a line, written as they come (a list of millions is never one string in memory)."""
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def changes(earlier: Path, source) -> str:
    """What is different between an earlier build's files.jsonl and the source's files now."""
    before = {}
    with open(earlier / "files.jsonl", encoding="utf-8") as f:
        for line in f:
            name, size, mtime = json.loads(line)
            before[name] = (size, mtime)
    added = modified = 0
    for name, size, mtime in source.files():
        was = before.pop(name, None)
        if was is None:
            added += 1
        elif tuple(was) != (size, mtime):
            modified += 1
    removed = len(before)
    said = [f"{n} {what}" for n, what in ((added, "added"), (removed, "removed"), (modified, "modified")) if n]
    return ", ".join(said) if said else "the same files in another order"


class ShardStore:
    """The rows of a complete build, read from its shards through memory maps (opened when first read)."""

    def __init__(self, folder: Path, meta: dict):
        self.folder, self.meta = Path(folder), meta
        self.count, self.shape = int(meta["count"]), tuple(meta["shape"])
        self.shard_rows = int(meta["shard_rows"])
        self.maps: list[np.ndarray] | None = None

    def open(self) -> list[np.ndarray]:
        if self.maps is None:
            maps = []
            for name in self.meta["shards"]:
                try:
                    maps.append(np.load(self.folder / name, mmap_mode="r"))  # (n, C, H, W) uint8, read-only
                except (OSError, ValueError) as err:
                    raise UserError(f"the shard {self.folder / name} cannot be read ({err}); delete "
                                    f"{self.folder} and it is built again") from None
            self.maps = maps
        return self.maps

    def read(self, rows: np.ndarray) -> np.ndarray:
        """(n, C, H, W) uint8: rows `rows` (int64), copied out of the shards."""
        maps = self.open()
        if len(maps) == 1:
            return maps[0][rows]
        out = np.empty((len(rows), *self.shape), dtype=np.uint8)
        shard = rows // self.shard_rows
        for k in np.unique(shard).tolist():
            here = shard == k
            out[here] = maps[k][rows[here] - k * self.shard_rows]
        return out

    def extra(self) -> dict | None:
        path = self.folder / "extra.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "maps": None}  # a worker started by spawn maps the files again

    def __repr__(self) -> str:
        return f"{len(self.meta['shards'])} memory-mapped shard(s) in {self.folder}"


def read_shards(folder: Path) -> ImageRows:
    """A complete build's images; its shards checked to hold what meta.json says."""
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    store = ShardStore(folder, meta)
    maps = store.open()
    found = sum(len(m) for m in maps)
    if found != store.count or any(tuple(m.shape[1:]) != store.shape for m in maps):
        raise UserError(f"the shards in {folder} hold {found} images, not the {store.count} of its meta.json; "
                        f"delete {folder} and they are built again")
    return ImageRows(store)
