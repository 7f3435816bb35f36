"""python -m multitx.predict run_dir=DIR image=PATH [top_k=5] [out=FILE] [batch_size=64]
       [checkpoint=best|latest|PATH] [device=auto] [trust_code=false]

Classifies images with a trained ViT run (any task=vit_*), with the class names of that run.

  image=FILE     prints the top_k classes and their probabilities, e.g. `Ankle boot  93.1%`
  image=FOLDER   classifies every image file below it (sorted, recursively; hidden files and
                 folders are skipped), in batches of batch_size, with a progress bar on stderr
                 when stderr is a terminal, and writes a CSV to out= (default RUN_DIR/predictions.csv):
                     path,top1_class,top1_prob,top2_class,top2_prob,...
                 Given with image=FILE, out= writes that one row as well.

Each image is scaled and centre-cropped to the run's input size, in the run's channels
(grey or RGB), and normalised with the mean and std the run trained with. top_k above
the number of classes means all of them. An image that cannot be read stops the command
with one line naming it (exit 2), and no CSV is written: remove or replace the file and
run it again. A run whose config names code to import is refused unless trust_code=true.

From Python, the same with multitx.load:

    import multitx
    from multitx.predict import predict
    run = multitx.load("runs/vit_fashion/2026-12-02_10-00-00")         # its best checkpoint
    predict(run, ["boot.png", "bag.jpg"], top_k=3)
    # [[("Ankle boot", 0.93), ("Sneaker", 0.05), ("Sandal", 0.01)], [("Bag", 0.88), ...]]

predict takes image files (str or Path), PIL images, uint8 tensors (C, H, W) of any size, or
one uint8 tensor (N, C, H, W); one of them alone counts as a list of one.
"""

import csv
import io
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from multitx.cli import OnDevice, RunArgs, parse_args, run_cli
from multitx.config.paths import nearest_existing, writable_folder
from multitx.config.rules import Whole
from multitx.config.settings import setting
from multitx.data.images.datasets import IMAGE_SUFFIXES
from multitx.data.images.images import decode_image, fit
from multitx.engine import checkpoint
from multitx.engine.runtime import setup_runtime
from multitx.engine.task import task_for_tool
from multitx.errors import UserError
from multitx.files import atomic_write_bytes
from multitx.loading import Loaded, load, locate

TOOL = "multitx.predict"


@dataclass
class PredictArgs(OnDevice, RunArgs):
    image: str = setting("", None, "an image file, a folder of them, or a glob")
    top_k: int = setting(5, Whole(min=1), "the likeliest classes shown for each image")
    out: str = setting("", None, "a CSV file for the predictions; empty: RUN_DIR/predictions.csv for a folder")
    batch_size: int = setting(64, Whole(min=1), "images per forward pass")

Prediction = list[tuple[str, float]]  # (class name, probability), most probable first


def predict(loaded: Loaded, images_or_paths, top_k: int = 5, *, batch_size: int = 64,
            progress: bool = False) -> list[Prediction]:
    """The top_k (class, probability) pairs of each image, most probable first, in the order given.
    `loaded` is a ViT run from multitx.load; images are read batch_size at a time."""
    task_for_tool(loaded.config, TOOL, loaded.checkpoint.parent.parent)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise UserError(f"top_k must be a whole number at least 1, got {top_k!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size must be a whole number at least 1, got {batch_size!r}")
    items = as_items(images_or_paths)
    classes, info = list(loaded.classes), loaded.info
    size, channels = tuple(info["image_size"]), int(info["channels"])
    device = next(loaded.model.parameters()).device
    mean = torch.tensor(info["mean"], dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std = torch.tensor(info["std"], dtype=torch.float32, device=device).view(1, -1, 1, 1)
    k = min(top_k, len(classes))
    out: list[Prediction] = []
    with tqdm(total=len(items), unit="image", file=sys.stderr, disable=None if progress else True,
              leave=False, dynamic_ncols=True) as bar, torch.inference_mode():
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            batch = torch.stack([as_uint8(item, size, channels) for item in chunk]).to(device)  # (B, C, H, W)
            x = (batch.float() / 255 - mean) / std
            probs = torch.softmax(loaded.model(x).float(), dim=-1)  # (B, classes)
            values, indices = probs.topk(k, dim=-1)  # (B, k)
            out += [[(classes[i], float(p)) for p, i in zip(row_p, row_i, strict=True)]
                    for row_p, row_i in zip(values.tolist(), indices.tolist(), strict=True)]
            bar.update(len(chunk))
    return out


def as_items(images_or_paths) -> list:
    if isinstance(images_or_paths, torch.Tensor):
        return list(images_or_paths) if images_or_paths.dim() == 4 else [images_or_paths]
    if isinstance(images_or_paths, (str, os.PathLike, Image.Image)):
        return [images_or_paths]
    if not isinstance(images_or_paths, Iterable):
        raise TypeError(f"predict takes image paths, PIL images or uint8 tensors, got {type(images_or_paths)}")
    return list(images_or_paths)


def as_uint8(item, size: tuple[int, int], channels: int) -> torch.Tensor:
    """One image file, PIL image or uint8 (C, h, w) tensor -> (channels, H, W) uint8, fitted to size."""
    if isinstance(item, (str, os.PathLike)):
        return decode_image(Path(item), size, channels)
    if isinstance(item, Image.Image):
        pixels = np.asarray(item.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
        item = torch.from_numpy(pixels.reshape(*pixels.shape[:2], -1).copy()).permute(2, 0, 1)  # (C, h, w)
    if not isinstance(item, torch.Tensor) or item.dtype != torch.uint8 or item.dim() != 3:
        raise TypeError(f"predict takes image paths, PIL images or uint8 (C, H, W) tensors, got "
                        f"{getattr(item, 'dtype', type(item))} {tuple(getattr(item, 'shape', ()))}")
    if item.shape[0] != channels:
        raise UserError(f"an image has {item.shape[0]} channels; this run's model takes {channels}")
    return item if tuple(item.shape[-2:]) == size else fit(item[None], size)[0]


def image_files(folder: Path) -> list[Path]:
    """Every image file below folder, sorted by path, leaving out hidden files and folders."""
    found = [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
             and not any(part.startswith(".") for part in p.relative_to(folder).parts) and p.is_file()]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def images_given(value: str) -> tuple[list[Path], bool]:
    """image=: (the files, whether it named a folder); one line when it names nothing usable."""
    if not value:
        raise UserError("say which image to classify: image=PATH (an image file, or a folder of them)")
    path = Path(value).expanduser()
    if path.is_dir():
        files = image_files(path)
        if not files:
            raise UserError(f"image={value} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return files, True
    if not path.exists():
        raise UserError(f"image={value} does not exist; give an image file or a folder of them")
    return [path], False


def output_file(value: str, run_dir: Path) -> Path:
    out = Path(value).expanduser() if value else run_dir / "predictions.csv"
    if out.is_dir():
        raise UserError(f"out={out} is a folder; give the CSV file to write, e.g. out={out / 'predictions.csv'}")
    parent = nearest_existing(out)
    if not writable_folder(parent):
        raise UserError(f"cannot write {out}: {parent} is not a writable folder; give out=FILE elsewhere")
    return out


def csv_bytes(paths: list[Path], predictions: list[Prediction]) -> bytes:
    k = max((len(p) for p in predictions), default=0)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", *[f"top{i}_{what}" for i in range(1, k + 1) for what in ("class", "prob")]])
    for path, prediction in zip(paths, predictions, strict=True):
        writer.writerow([str(path), *[x for name, p in prediction for x in (name, f"{p:.6f}")]])
    return text.getvalue().encode("utf-8")


def main(argv: list[str]) -> None:
    args = parse_args(argv, PredictArgs, __doc__)
    files, folder = images_given(str(args["image"]))
    run_dir, _, source = locate(Path(str(args["run_dir"])), str(args["checkpoint"]))
    cfg = checkpoint.run_config(source, None, TOOL, trust_code=args["trust_code"])
    task_for_tool(cfg, TOOL, args["run_dir"])  # before the images are read
    out = output_file(str(args["out"]), run_dir) if folder or args["out"] else None
    runtime = setup_runtime(str(args["device"]), "fp32")
    run = load(Path(str(args["run_dir"])), str(args["checkpoint"]), device=runtime.device,
               trust_code=args["trust_code"], tool=TOOL)
    predictions = predict(run, files, int(args["top_k"]), batch_size=int(args["batch_size"]), progress=folder)
    if not folder:
        width = max(len(name) for name, _ in predictions[0])
        for name, p in predictions[0]:
            print(f"{name:<{width}}  {100 * p:5.1f}%")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, csv_bytes(files, predictions))
        print(f"wrote the top {len(predictions[0])} classes of {len(files)} image{'s' * (len(files) != 1)} "
              f"to {out}")


if __name__ == "__main__":
    run_cli(main)
