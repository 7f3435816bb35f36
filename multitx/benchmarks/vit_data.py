"""Images per second of the vision data path alone, no model: shuffled uint8 batches,
per-image augmentation in 0..N worker processes, pinned memory, a non-blocking copy to
the device, then normalisation and Mixup/CutMix there.

    python -m multitx.benchmarks.vit_data                          # task=vit_cifar's pipeline, random pixels
    python -m multitx.benchmarks.vit_data source=real data_dir=datasets
    python -m multitx.benchmarks.vit_data task=vit_fashion workers=[0,2,4,8]

source=random (the default) feeds CIFAR-sized random uint8 images (50,000), so no
dataset is needed: the cost of the path does not depend on what the pixels show.
Any key=value other than the benchmark's own is a training setting (task=, augment.*, ...).

The current figures, with their commands, machine and day, are in
docs/benchmarks/vit_data.md. What follows is the history of earlier ones.

Tuning history
--------------
`python -m multitx.benchmarks.vit_data workers=[0,1,2]` (task=vit_cifar's pipeline: random
crop, AutoAugment, random erasing per image, flip, Mixup/CutMix per batch, batch 128) gave
1,424 / 1,281 / 2,409 images/s with 0 / 1 / 2 worker processes on the Zen 1 of 2026-11-23
(a 2-core first-generation AMD EPYC), flipping image by image then.

Flipping the batch at once (one torch.where) rather than image by image made the flip-only
path (`python -m multitx.benchmarks.vit_data task=vit_fashion augment.flip=true
data.root=/usr/share/datasets/fashion-mnist workers=[0]`) 4-5 times as fast on 2026-12-01
(the 2-core Zen 5): 438,000-522,000 against 101,000 images/s, alternating runs; with
AutoAugment it makes no measurable difference.
"""

import time
from dataclasses import dataclass

import torch

from multitx.benchmarks import own_and_training
from multitx.cli import load_config, parse_args, run_cli
from multitx.config.rules import Choice, Flag, Numbers, Whole
from multitx.config.settings import setting
from multitx.data.images.augment import DeviceAugment, image_transform
from multitx.data.images.batches import ShuffledBatches
from multitx.data.images.datasets import ImageSet, load_images
from multitx.data.workers import data_workers
from multitx.engine.runtime import setup_runtime
from multitx.nn.patches import pair


@dataclass
class ViTDataArgs:
    source: str = setting("random", Choice(options=("random", "real")), "random: CIFAR-sized random uint8 images; "
                          "real: the task's dataset")
    batches: int = setting(100, Whole(min=1), "timed batches per setting")
    workers: list | None = setting(None, Numbers(each=Whole(min=0), null=True), "worker counts to try, a list "
                                   "(workers=[0,2,4]); null: 0 and the task's auto setting")
    debug: bool = setting(False, Flag(), "show full tracebacks instead of one-line errors")


def main(argv: list[str]) -> None:
    ours, given = own_and_training(argv, ViTDataArgs)
    args = parse_args(ours, ViTDataArgs, __doc__.split("\nTuning history")[0])  # the history is for readers
    overrides = given if any(o.startswith("task=") for o in given) else ["task=vit_cifar", *given]
    cfg = load_config(overrides)
    runtime = setup_runtime(cfg.device, cfg.precision)
    cuda = runtime.device.type == "cuda"
    size = pair(cfg.model.image_size)
    if args["source"] == "random":
        channels = 1 if cfg.data.name == "fashion_mnist" else 3
        g = torch.Generator().manual_seed(0)
        data = ImageSet(torch.randint(0, 256, (50_000, channels, *size), dtype=torch.uint8, generator=g),
                        torch.randint(0, 10, (50_000,), generator=g), [str(i) for i in range(10)])
    else:
        from pathlib import Path

        data = load_images(cfg.data, Path(cfg.data_dir), size)[0]
    aug = cfg.augment
    device_aug = DeviceAugment(cfg.data.mean or [0.5] * data.channels, cfg.data.std or [0.25] * data.channels,
                               classes=len(data.classes), mixup=aug.mixup, cutmix=aug.cutmix,
                               mix_prob=aug.mix_prob, switch_prob=aug.switch_prob,
                               label_smoothing=aug.label_smoothing)
    transform = image_transform(aug, size)
    settings = [int(w) for w in args["workers"]] if args["workers"] is not None else \
        sorted({0, data_workers("auto", cuda)})
    timed = int(args["batches"])
    print(f"{cfg.task.name} data path: batch {cfg.batch_size}, {tuple(data.images.shape[1:])} uint8, on the CPU "
          f"{transform or 'no augmentation'}; "
          f"on {runtime.device} Mixup {aug.mixup}/CutMix {aug.cutmix}; {timed} batches")
    print(f"{'workers':>8s} {'images/s':>12s}")
    for workers in settings:
        batches = ShuffledBatches(data, cfg.batch_size, transform=transform, seed=0, workers=workers,
                                  pin_memory=cuda)
        for _ in range(max(3, workers)):  # start the workers, fill the queue
            next(batches)
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(timed):
            images, labels = runtime.to_device(next(batches))
            x, targets = device_aug(images, labels)
        if cuda:
            torch.cuda.synchronize()
        rate = timed * cfg.batch_size / (time.perf_counter() - start)
        batches.close()
        print(f"{workers:8d} {rate:12,.0f}", flush=True)


if __name__ == "__main__":
    run_cli(main)
