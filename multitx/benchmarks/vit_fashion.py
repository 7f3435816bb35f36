"""Train task=vit_fashion within a time budget and print the test accuracy.

    python -m multitx.benchmarks.vit_fashion                          # CPU recipe, at most 600 s
    python -m multitx.benchmarks.vit_fashion --recipe gpu             # the GPU recipe (device auto)
    python -m multitx.benchmarks.vit_fashion --budget 300 model.dim=64  # any key=value override

The step count is fitted to the budget (multitx/benchmarks/budget.py): it times a few training
steps and one evaluation of the recipe's model on this machine, and if the
recipe's steps would not fit in --budget seconds (evaluations and data loading
included), it scales steps and warm-up down to fit. Then it runs the ordinary
engine (python -m multitx.train would give the same run) and reports the test
accuracy of the final model over all 10,000 test images, and the best one.

Fashion-MNIST comes from --data-root (Debian's dataset-fashion-mnist:
/usr/share/datasets/fashion-mnist), DATA_DIR/FashionMNIST/raw, or a download.
"""

import argparse
import json
import time
from datetime import date
from pathlib import Path

from multitx.benchmarks.budget import fit_to_budget
from multitx.engine.trainer import train

RECIPES = {
    # task=vit_fashion as shipped: the 2-core-CPU recipe (see multitx/config/task/vit_fashion.yaml)
    "cpu": [],
    # a GPU: a wider, deeper model with a convolutional stem, 100 epochs, TrivialAugment, random erasing,
    # Mixup/CutMix on half the batches (not yet run to the end: see the README)
    "gpu": ["steps=46800", "batch_size=128", "warmup_steps=2340", "optimizer=adamw", "lr=1e-3", "min_lr=1e-5",
            "weight_decay=0.05", "eval_every=4680", "model.dim=192", "model.layers=9", "model.heads=6",
            "model.mlp_ratio=2.0", "model.patch_size=4", "model.tokenizer.name=convstem",
            "model.drop_path=0.1", "augment.crop_padding=2", "augment.flip=true", "augment.policy=trivialaugment",
            "augment.erase=0.25", "augment.mixup=0.8", "augment.cutmix=1.0", "augment.mix_prob=0.5",
            "augment.label_smoothing=0.1"],
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="cpu", choices=sorted(RECIPES))
    parser.add_argument("--budget", type=float, default=600.0, help="seconds for the whole run, evaluations included")
    parser.add_argument("--data-root", default=None, help="folder holding Fashion-MNIST's four .gz files")
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("overrides", nargs="*", help="key=value settings, as for python -m multitx.train")
    args = parser.parse_args(argv)

    run_dir = Path(args.run_dir or f"runs/bench/vit_fashion-{args.recipe}-{time.strftime('%Y%m%d-%H%M%S')}")
    base = ["task=vit_fashion", *RECIPES[args.recipe], f"run_dir={run_dir}", "progress=false"]
    if args.data_root:
        base.append(f"data.root={args.data_root}")
    started = time.perf_counter()
    cfg = fit_to_budget(base + args.overrides, args.budget, started=started)
    train(cfg)
    wall = time.perf_counter() - started
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    final, best = rows[-1], max(rows, key=lambda r: r["val_acc"])
    images = cfg.steps * cfg.batch_size * cfg.grad_accum
    tested = "all test images" if cfg.eval_images <= 0 else f"the first {cfg.eval_images} test images"
    over = f" (OVER budget by {wall - args.budget:.0f} s: the machine ran slower than calibrated)" \
        if wall > args.budget else ""
    print(f"\nvit_fashion --recipe {args.recipe}: test accuracy {final['val_acc']:.2%} (final model, {tested}), "
          f"best {best['val_acc']:.2%} at step {best['step']}; "
          f"{cfg.steps} steps, {images / 60000:.1f} epochs, {wall:.0f} s wall of a {args.budget:.0f} s budget{over}, "
          f"{final['images_per_s']:,.0f} images/s; {date.today()}; run folder {run_dir}")


if __name__ == "__main__":
    main()
