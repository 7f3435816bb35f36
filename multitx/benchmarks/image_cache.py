"""python -m multitx.benchmarks.image_cache [sizes=[10000,100000]] [side=32] [dir=runs/bench/image_cache] [--smoke]

The shard cache of an image folder (multitx/data/images/shards.py), at two sizes: how much memory
preparing it takes, and how long the first run and a later run take before training could start.

For each size N, an image folder of N small PNGs (side x side RGB, ten classes, plus a val/ split of a
tenth as many) is generated once under `dir`, quickly (a pool of 64 noise pictures, each file made
different by its own pixels, PNG without compression). Then, each in a fresh process, as `multitx train
data=imagefolder data.root=...` would prepare it (data/images/datasets.py: load_imagefolder):

    first run     the cache folder deleted first: every image listed, statted, decoded, fitted to side x
                  side and written into uint8 shards
    second run    the same command again: the files statted and the shards found; nothing decoded

and, apart, a process that only imports what the preparation imports (torch, torchvision, Pillow): the
floor under both. Reported for each: seconds and the process's peak resident memory (ru_maxrss, the
high-water mark of the one process that prepared). Goal: the first run's peak the same at both sizes,
within 10%: a build writes image by image and keeps nothing per image but its file name and label.

--smoke (smoke=true) runs 500 and 2,000 images: every code path in seconds, no figures to keep.

The figures, with their command, machine and day, are in docs/benchmarks/image_cache.md.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from multitx.cli import parse_args, run_cli
from multitx.config.rules import Flag, Folder, Numbers, Whole
from multitx.config.settings import setting

SMOKE_SIZES = [500, 2000]
CLASSES = 10

IMPORTS = """
import json, resource, time
started = time.perf_counter()
import torch, torchvision, PIL.Image  # what the preparation imports, and nothing else
print(json.dumps({"seconds": time.perf_counter() - started,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

PREPARE = """
import json, resource, sys, time
from pathlib import Path
started = time.perf_counter()
from multitx.data.images.datasets import load_imagefolder
imported = time.perf_counter()
train, val = load_imagefolder(Path(sys.argv[1]), 3, (%(side)d, %(side)d), Path(sys.argv[2]), "shards")
done = time.perf_counter()
assert type(train.images).__name__ == "ImageRows" and len(train) + len(val) == %(count)d
print(json.dumps({"seconds": done - imported, "import_s": imported - started, "images": len(train) + len(val),
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


@dataclass
class ImageCacheArgs:
    sizes: list = setting([10_000, 100_000], Numbers(each=Whole(min=20)), "training images of each folder, a list "
                          "(sizes=[10000,100000]); each folder's val/ holds a tenth as many more")
    side: int = setting(32, Whole(min=4), "the images' side in pixels, and the size they are prepared at")
    dir: str = setting("runs/bench/image_cache", Folder(must_exist=False), "where the folders and caches are written")
    smoke: bool = setting(False, Flag(), f"sizes={SMOKE_SIZES}: every path, quickly (--smoke is the same)")
    debug: bool = setting(False, Flag(), "show full tracebacks instead of one-line errors")


def generate(root: Path, count: int, side: int) -> float:
    """root/{train,val}/classNN/NNNNNNN.png: `count` training images and a tenth as many for val, made once
    (a file `complete` says so); their size in MB."""
    done = root / "complete"
    if done.is_file():
        return float(done.read_text())
    from PIL import Image

    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(0)
    pool = rng.integers(0, 256, (64, side, side, 3), dtype=np.uint8)  # (64, side, side, 3) noise pictures
    written = 0
    for split, n in (("train", count), ("val", max(CLASSES, count // 10))):
        for c in range(CLASSES):
            (root / split / f"class{c:02d}").mkdir(parents=True)
        for i in range(n):
            pixels = pool[i % 64].copy()
            pixels[0, :4] = np.frombuffer(i.to_bytes(12, "little"), dtype=np.uint8).reshape(4, 3)  # its own
            path = root / split / f"class{i % CLASSES:02d}" / f"{i:07d}.png"
            Image.fromarray(pixels).save(path, format="PNG", compress_level=0)
            written += path.stat().st_size
    mb = written / 2**20
    done.write_text(f"{mb}")
    return mb


def run(script: str, *args: str) -> dict:
    """`script` in a fresh Python process (one thread, as a data preparation on a busy machine): its JSON line."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    args = parse_args(argv, ImageCacheArgs, __doc__)
    sizes = SMOKE_SIZES if args["smoke"] else [int(n) for n in args["sizes"]]
    side, root = int(args["side"]), Path(args["dir"])
    print(f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M')}" + (", --smoke: not a measurement"
                                                                        if args["smoke"] else ""), flush=True)
    floor = run(IMPORTS)
    print(f"importing torch, torchvision and Pillow alone: peak {floor['peak_mb']:.0f} MB", flush=True)
    rows = []
    for count in sizes:
        folder = root / f"images-{count}-{side}px"
        started = time.perf_counter()
        mb = generate(folder, count, side)
        made_s = time.perf_counter() - started
        cache = root / f"cache-{count}-{side}px"
        shutil.rmtree(cache, ignore_errors=True)
        script = PREPARE % {"side": side, "count": count + max(CLASSES, count // 10)}
        first = run(script, str(folder), str(cache))
        second = run(script, str(folder), str(cache))
        rows.append({"images": first["images"], "files_mb": mb, "generated_s": made_s, "first_s": first["seconds"],
                     "first_peak_mb": first["peak_mb"], "second_s": second["seconds"],
                     "second_peak_mb": second["peak_mb"], "import_s": first["import_s"],
                     "floor_mb": floor["peak_mb"]})
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n| images ({side}x{side} PNG) | files | first run: decode + shards | images/s | peak RSS | over the "
          f"imports | second run: cache hit | peak RSS |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['images']:,} | {r['files_mb']:.0f} MB | {r['first_s']:.1f} s | {r['images'] / r['first_s']:,.0f} "
              f"| {r['first_peak_mb']:.0f} MB | {r['first_peak_mb'] - r['floor_mb']:.1f} MB | {r['second_s']:.2f} s "
              f"| {r['second_peak_mb']:.0f} MB |")
    peaks = [r["first_peak_mb"] for r in rows]
    spread = max(peaks) / min(peaks) - 1
    print(f"\npeak of the first run: {min(peaks):.0f} to {max(peaks):.0f} MB, {spread:.1%} apart (goal: within 10%: "
          f"{'met' if spread <= 0.10 else 'MISSED'}); importing alone {floor['peak_mb']:.0f} MB")
    (root / "image_cache.json").write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), "side": side,
                                                       "smoke": bool(args["smoke"]), "rows": rows}, indent=1) + "\n")
    print(f"wrote {root / 'image_cache.json'}")


if __name__ == "__main__":
    run_cli(main)
