"""A local Hugging Face `datasets` folder as a source of images, with class labels or captions.

    data.root=DIR   a folder written by Dataset.save_to_disk / DatasetDict.save_to_disk (dataset_dict.json and
                    SPLIT/data-00000-of-0000N.arrow: opened by datasets.load_from_disk, memory-mapped), or a
                    folder of parquet files, SPLIT.parquet, SPLIT-00000-of-0000N.parquet or SPLIT/*.parquet
                    anywhere under DIR (the Hub's data/ layout), read by pyarrow one row group at a time

The columns are named by data.image_column, data.label_column, data.caption_column; the splits by
data.train_split and data.val_split. Nothing is decoded here but what is asked for: a label or caption
column is read whole (small), the image column in order, a slice at a time (a build of the shard cache,
data/images/shards.py), or one cell at a time (data.cache=lazy). An image cell is what the datasets
Image feature stores, {"bytes": ..., "path": ...}, or plain bytes, or a path; its bytes are decoded by
data/images/images.py's decode_image, with every check a file has (grey, RGBA and palette images become
RGB or grey; mixed sizes are fitted to the model's).

The cache is keyed by the folder, the split and the column, and by the names, sizes and modification
times of the split's .arrow or .parquet files.
"""

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from multitx.config.rules import Folder, Text
from multitx.config.settings import setting
from multitx.data.images.images import EncodedImage, SizeLike, decode_image
from multitx.data.images.sources import ImageSource
from multitx.errors import UserError

LAYOUT = "a folder written by datasets' save_to_disk (dataset_dict.json), or of parquet files"


@dataclass
class HFFolder:
    """The keys of a Hugging Face datasets folder: where, which splits, which image column."""

    root: str | None = setting(None, Folder(null=True, hint=f"give {LAYOUT}"), f"{LAYOUT}")
    image_column: str = setting("image", Text(), "the column of images (datasets' Image feature, bytes or paths)")
    train_split: str = setting("train", Text(), "the split trained on (a share of it held out for validation)")
    val_split: str | None = setting(None, Text(null=True), "the split scored at the end (test); null: validation, "
                                    "or test where there is no validation split")


def hf_datasets(data_name: str):
    """The datasets package, or one line saying how to install it."""
    try:
        import datasets
    except ImportError:
        datasets = None
    if not hasattr(datasets, "load_from_disk"):  # a folder named datasets/ (DATA_DIR) is no package
        raise UserError(f"data={data_name} reads Hugging Face datasets folders with the datasets package, which is "
                        f"not installed: pip install 'multitx[hf]'")
    return datasets


def check_settings(data: dict) -> None:
    """What hf_images and hf_captions check before anything is read: a folder, and the package."""
    if not data.get("root"):
        raise UserError(f"data={data['name']} needs a folder: add data.root=DIR, {LAYOUT}")
    hf_datasets(str(data["name"]))


# ------------------------------------------------------------------------------------------------- tables

class ArrowTable:
    """One split of a save_to_disk folder: a datasets.Dataset, memory-mapped, read in Arrow format."""

    def __init__(self, dataset, what: str):
        self.arrow = dataset.with_format("arrow")
        self.features, self.what = dataset.features, what
        self.columns = list(dataset.column_names)
        self.files = [Path(f["filename"]) for f in dataset.cache_files]
        self.rows = len(dataset)

    def __len__(self) -> int:
        return self.rows

    def slices(self, column: str, rows: int = 256) -> Iterator[list]:
        for start in range(0, self.rows, rows):
            yield self.arrow[start : start + rows].column(column).to_pylist()

    def cell(self, column: str, row: int):
        return self.arrow[row : row + 1].column(column)[0].as_py()


class ParquetTable:
    """Parquet files as one split, in the order of their names; read one row group at a time."""

    def __init__(self, files: list[Path], what: str, data_name: str):
        import pyarrow.parquet as pq

        datasets = hf_datasets(data_name)
        self.files, self.what = files, what
        first = pq.ParquetFile(files[0])
        self.columns = list(first.schema_arrow.names)
        self.features = datasets.Features.from_arrow_schema(first.schema_arrow)  # ClassLabel names from its metadata
        groups = []  # (file, row group, rows)
        for n, path in enumerate(files):
            meta = pq.ParquetFile(path).metadata
            groups += [(n, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]
        self.groups = groups
        self.starts = np.cumsum([0] + [rows for _, _, rows in groups])  # (G + 1,) the first row of each group
        self.rows = int(self.starts[-1])
        self.opened: tuple[int, list] | None = None  # (pid, ParquetFile of each file): reopened in a new process
        self.last: tuple | None = None  # (column, group index, its cells): what a lazy read read last

    def __len__(self) -> int:
        return self.rows

    def file(self, n: int):
        import pyarrow.parquet as pq

        if self.opened is None or self.opened[0] != os.getpid():
            self.opened = (os.getpid(), [pq.ParquetFile(p) for p in self.files])
        return self.opened[1][n]

    def group(self, column: str, index: int) -> list:
        if self.last is None or self.last[:2] != (column, index):
            n, g, _ = self.groups[index]
            cells = self.file(n).read_row_group(g, columns=[column]).column(0).to_pylist()
            self.last = (column, index, cells)
        return self.last[2]

    def slices(self, column: str, rows: int = 256) -> Iterator[list]:
        for n in range(len(self.files)):
            for batch in self.file(n).iter_batches(batch_size=rows, columns=[column]):
                yield batch.column(0).to_pylist()

    def cell(self, column: str, row: int):
        index = int(np.searchsorted(self.starts, row, side="right")) - 1
        return self.group(column, index)[row - int(self.starts[index])]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "opened": None, "last": None}


def open_split(root: Path, split: str, data_name: str):
    """The table of `split` in root: an ArrowTable or a ParquetTable."""
    datasets = hf_datasets(data_name)
    what = f"data.root={root} ({split})"
    if (root / "dataset_dict.json").is_file():
        try:
            found = datasets.load_from_disk(str(root))
        except Exception as err:  # noqa: BLE001 - datasets raises many types on a damaged folder
            raise UserError(f"{root} cannot be read by datasets.load_from_disk ({type(err).__name__}: "
                            f"{str(err).splitlines()[0][:160] if str(err) else ''}); save it again") from None
        if split not in found:
            raise UserError(f"{root} has no split {split!r}; its splits: {', '.join(found)} (set data.train_split / "
                            f"data.val_split)")
        return ArrowTable(found[split], what)
    if (root / "state.json").is_file():
        raise UserError(f"{root} holds one dataset, not a DatasetDict of splits; save "
                        f"DatasetDict({{'train': ..., 'validation': ...}}).save_to_disk(DIR) and point data.root at it")
    files = sorted(root.rglob("*.parquet"))
    if not files:
        raise UserError(f"data.root={root} is not {LAYOUT}: it holds neither dataset_dict.json nor .parquet files")
    mine = [f for f in files if split_of(f.relative_to(root), split)]
    if not mine:
        names = sorted({split_name(f.relative_to(root)) for f in files})
        raise UserError(f"{root} has no split {split!r}; its splits: {', '.join(names)} (set data.train_split / "
                        f"data.val_split)")
    return ParquetTable(mine, what, data_name)


def split_of(relative: Path, split: str) -> bool:
    """Whether a parquet file belongs to `split`: in a folder of that name, or named SPLIT.parquet / SPLIT-*."""
    return split in relative.parts[:-1] or relative.name == f"{split}.parquet" or relative.name.startswith(f"{split}-")


def split_name(relative: Path) -> str:
    """The split a parquet file's path suggests, for a message: its folder, or its name up to the first '-'."""
    folders = [p for p in relative.parts[:-1] if p != "data"]
    return folders[0] if folders else relative.name.split("-")[0].removesuffix(".parquet")


def split_names(root: Path) -> list[str]:
    """The splits of a folder, as open_split finds them: a DatasetDict's, or those its parquet files' paths name."""
    if (root / "dataset_dict.json").is_file():
        return list(json.loads((root / "dataset_dict.json").read_text(encoding="utf-8")).get("splits", []))
    return sorted({split_name(f.relative_to(root)) for f in root.rglob("*.parquet")})


def val_split_of(root: Path, data) -> str:
    """data.val_split, or validation, or test where there is no validation split."""
    if data.get("val_split"):
        return str(data["val_split"])
    names = split_names(root)
    return "test" if "validation" not in names and "test" in names else "validation"


def check_splits(root: Path, data) -> None:
    """Both splits there, before a run trains on one and finds the other missing at its end."""
    names = split_names(root)
    for key, split in (("data.train_split", str(data["train_split"])), ("data.val_split", val_split_of(root, data))):
        if names and split not in names:
            raise UserError(f"{root} has no split {split!r} ({key}); its splits: {', '.join(names)}")


def need_column(table, column: str, key: str) -> None:
    if column not in table.columns:
        raise UserError(f"{table.what} has no column {column!r} ({key}); its columns: {', '.join(table.columns)}")


# ----------------------------------------------------------------------------------------- what the cells hold

def image_of(cell, name: str, folder: Path) -> Path | EncodedImage:
    """An image cell as decode_image takes it: its bytes, or the file it names (relative: to `folder`)."""
    if isinstance(cell, dict):
        if cell.get("bytes"):
            return EncodedImage(name, cell["bytes"])
        cell = cell.get("path")
    if isinstance(cell, (bytes, bytearray)):
        return EncodedImage(name, bytes(cell))
    if isinstance(cell, str) and cell:
        return folder / cell
    raise UserError(f"{name} holds no image ({type(cell).__name__}); an image cell is datasets' Image, bytes or a "
                    f"path")


class HFImages(ImageSource):
    """The image column of a split, rows `rows` (ascending) or all of them."""

    def __init__(self, table, column: str, identity: object, rows: np.ndarray | None = None):
        self.table, self.column, self.rows = table, column, rows
        self.what, self.identity = table.what, identity
        self.folder = table.files[0].parent if table.files else Path(".")

    def __len__(self) -> int:
        return len(self.table) if self.rows is None else len(self.rows)

    def row(self, i: int) -> int:
        return i if self.rows is None else int(self.rows[i])

    def image(self, cell, row: int, size: SizeLike, channels: int) -> torch.Tensor:
        return decode_image(image_of(cell, f"{self.what}, row {row}", self.folder), size, channels)

    def decode(self, i: int, size: SizeLike, channels: int) -> torch.Tensor:
        row = self.row(i)
        return self.image(self.table.cell(self.column, row), row, size, channels)

    def decoded(self, size: SizeLike, channels: int) -> Iterator[torch.Tensor]:
        wanted = None if self.rows is None else set(self.rows.tolist())
        row = 0
        for cells in self.table.slices(self.column):
            for cell in cells:
                if wanted is None or row in wanted:
                    yield self.image(cell, row, size, channels)
                row += 1

    def files(self) -> Iterator[tuple[str, int, int]]:
        for path in self.table.files:
            stat = os.stat(path)
            yield str(path), stat.st_size, stat.st_mtime_ns


def labels_of(table, column: str, classes: list[str] | None = None) -> tuple[torch.Tensor, list[str]]:
    """(labels (N,) int64, class names): a ClassLabel column's names, whole numbers' (0 .. max), or the sorted
    texts of a text column. `classes`: the training split's, which another split's labels must be among."""
    feature = table.features.get(column)
    values = [v for cells in table.slices(column, 4096) for v in cells]
    names = list(getattr(feature, "names", None) or [])
    if any(v is None for v in values):
        raise UserError(f"{table.what}: row {values.index(None)} has no label in column {column!r}")
    if names and classes is not None and names != classes:
        raise UserError(f"{table.what}: the classes of column {column!r} ({', '.join(names[:5])}, ...) are not the "
                        f"training split's ({', '.join(classes[:5])}, ...); give splits of the same ClassLabel")
    if names or all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        labels = [int(v) for v in values]
        names = names or [str(n) for n in range(max(labels, default=-1) + 1)]
        if classes is not None and len(names) > len(classes):
            raise UserError(f"{table.what} has {len(names)} classes in {column!r}, the training split "
                            f"{len(classes)}; give splits of the same classes")
        bad = [v for v in labels if not 0 <= v < len(names)]
        if bad:
            raise UserError(f"{table.what}: label {bad[0]} in column {column!r} is not one of its {len(names)} classes")
        return torch.tensor(labels, dtype=torch.int64), classes or names
    if all(isinstance(v, str) for v in values):
        names = classes or sorted(set(values))
        number = {name: n for n, name in enumerate(names)}
        unknown = sorted(set(values) - set(number))
        if unknown:
            raise UserError(f"{table.what} has labels the training split lacks in {column!r}: {', '.join(unknown[:5])}")
        return torch.tensor([number[v] for v in values], dtype=torch.int64), names
    kinds = sorted({type(v).__name__ for v in values})
    raise UserError(f"{table.what}: column {column!r} holds {', '.join(kinds)}; class labels are a ClassLabel, whole "
                    f"numbers or text (set data.label_column)")


def captions_of(table, column: str) -> list[list[str]]:
    """Each row's captions: a text cell is one caption, a list of texts several; an empty cell none."""
    out = []
    for cells in table.slices(column, 4096):
        for cell in cells:
            caps = [cell] if isinstance(cell, str) else [] if cell is None else cell
            if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
                raise UserError(f"{table.what}: row {len(out)} of column {column!r} holds {type(cell).__name__}; a "
                                f"caption column holds text or lists of text (set data.caption_column)")
            out.append([c.strip() for c in caps if c.strip()])
    return out
