"""multitx's ViT against timm's VisionTransformer, same shape, same process, turn about.

    python -m multitx.benchmarks.vit_vs_timm                      # device auto: CUDA (bf16 autocast) or CPU
    python -m multitx.benchmarks.vit_vs_timm device=cpu rounds=5

Both models: 32x32 RGB input, patch 4 (64 patches + CLS), 192 dims, 6 layers,
3 heads, MLP ratio 4, 10 classes, batch 128. A training step is forward,
cross-entropy, backward and an AdamW step (fused for multitx, as its trainer runs it; timm's
as its train.py runs it, fused only on a GPU); inference is one forward under
torch.inference_mode. Each round times every model for `steps` steps, after
`warmup` untimed steps each; the table shows the median round.

Rows: timm, multitx (as it runs by default), and multitx with its CLS shortcut
switched off (every token through the last block, as timm computes it), so
that the source of a difference is visible.

The current figures, with their command, machine and day, are in
docs/benchmarks/vit_vs_timm.md. What follows is the history of earlier ones.

Tuning history
--------------
On the Zen 5 (AMD EPYC family 26) of 2026-12-01, 19:00, 5 rounds: training 178.4 (multitx),
156.2 (no shortcut) and 154.8 (timm) images/s, 1.15x and 1.01x; inference 549.5, 475.9 and
485.2, 1.13x and 0.98x. A second run at 19:36 gave the same ratios; with multitx.trace in the
tree, rounds=3 gave 1.21x and 1.22x in training, 1.16x and 1.12x in inference.

`python -m multitx.benchmarks.vit_vs_timm device=cpu` (fp32, 2 CPU threads, medians of 5
alternating rounds) on the Zen 1 of 2026-11-23, the project's 2-core first-generation AMD EPYC
(family 23) of that day:

  model                              train images/s  vs timm   inference images/s  vs timm
  timm VisionTransformer                       42.9    1.00x                145.6    1.00x
  multitx ViT                                  55.2    1.29x                168.4    1.16x
  multitx ViT, CLS shortcut off                46.3    1.08x                141.2    0.97x

Training ranged over the rounds 40-46 (timm), 52-56 (multitx) and 43-48 (multitx without the
shortcut) images/s; an earlier run that day gave 1.20x / 1.16x. (timm's 116 images/s in the
issue is from an earlier day.)
"""

import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from multitx.cli import parse_args, run_cli
from multitx.config.rules import Choice, Flag, Whole
from multitx.config.settings import setting
from multitx.models.vit import ViT, build_vit

SHAPE = {"image_size": 32, "patch_size": 4, "dim": 192, "layers": 6, "heads": 3, "mlp_ratio": 4.0, "classes": 10}


class FullTrunkViT(ViT):
    """multitx's ViT computing every token in every block (no CLS shortcut)."""

    def forward(self, images):
        return self.head(self.trunk(self.tokenizer(images)), self.tokenizer.num_prefix_tokens)


def build_models(device: torch.device) -> dict[str, nn.Module]:
    import timm

    torch.manual_seed(0)
    reference = timm.models.VisionTransformer(img_size=32, patch_size=4, num_classes=10, embed_dim=192, depth=6,
                                              num_heads=3, mlp_ratio=4.0)
    ours = build_vit(**SHAPE, tokenizer="conv", pool="cls")
    full = FullTrunkViT.from_config(ours.config)
    return {"timm VisionTransformer": reference.to(device), "multitx ViT": ours.to(device),
            "multitx ViT, no CLS shortcut": full.to(device)}


def timer(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def images_per_s(models: dict[str, nn.Module], device: torch.device, *, batch: int, rounds: int, steps: int,
                 warmup: int, compiled: bool = False) -> dict[str, dict[str, list[float]]]:
    """Training and inference images/s of each model, {name: {"train": [a round each], "infer": [...]}}:
    `warmup` untimed steps each, then `rounds` rounds of `steps` steps, the models turn about within a
    round. bf16 autocast on a GPU, fp32 on the CPU; `compiled` runs each through torch.compile.
    Each trains as its own training code would: multitx's trainer uses fused AdamW on the GPU and the
    CPU (engine/optimizers.py); timm's train.py (create_optimizer_v2) torch's AdamW, fused only on a GPU."""
    cuda = device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
    forward = {name: torch.compile(m) if compiled else m for name, m in models.items()}
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-4, fused=cuda or name.startswith("multitx") or None)
                  for name, m in models.items()}
    g = torch.Generator(device="cpu").manual_seed(0)
    images = torch.randn(batch, 3, 32, 32, generator=g).to(device)
    labels = torch.randint(0, 10, (batch,), generator=g).to(device)

    def train_step(name: str) -> None:
        with autocast:
            loss = F.cross_entropy(forward[name](images).float(), labels)
        loss.backward()
        optimizers[name].step()
        optimizers[name].zero_grad(set_to_none=True)

    @torch.inference_mode()
    def infer_step(name: str) -> None:
        with autocast:
            forward[name](images)

    results = {name: {"train": [], "infer": []} for name in models}
    for kind, step in (("train", train_step), ("infer", infer_step)):
        for name, model in models.items():
            model.train(kind == "train")
            for _ in range(warmup):
                step(name)
        for _ in range(rounds):
            for name in models:  # turn about, so that a busy moment hits every model alike
                start = timer(device)
                for _ in range(steps):
                    step(name)
                results[name][kind].append(batch * steps / (timer(device) - start))
    return results


@dataclass
class ViTVsTimmArgs:
    device: str = setting("auto", Choice(options=("auto", "cpu", "cuda")), "auto: CUDA (bf16 autocast) if visible, "
                          "else the CPU (fp32)")
    batch: int = setting(128, Whole(min=1), "images a step")
    rounds: int = setting(9, Whole(min=1), "timed rounds per model, alternating")
    steps: int = setting(3, Whole(min=1), "steps per round (CUDA: 50)")
    warmup: int = setting(2, Whole(min=0), "untimed steps per model first (CUDA: 20)")
    threads: int = setting(0, Whole(min=0), "torch CPU threads; 0: torch's default")
    debug: bool = setting(False, Flag(), "show full tracebacks instead of one-line errors")


def main(argv: list[str]) -> None:
    args = parse_args(argv, ViTVsTimmArgs, __doc__.split("\nTuning history")[0])  # the history is for readers
    batch, rounds = int(args["batch"]), int(args["rounds"])
    device = torch.device("cuda" if args["device"] == "cuda" or (args["device"] == "auto" and
                                                                 torch.cuda.is_available()) else "cpu")
    if int(args["threads"]):
        torch.set_num_threads(int(args["threads"]))
    cuda = device.type == "cuda"
    steps, warmup = (50, 20) if cuda and args["steps"] == 3 and args["warmup"] == 2 else \
        (int(args["steps"]), int(args["warmup"]))
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
    models = build_models(device)
    results = images_per_s(models, device, batch=batch, rounds=rounds, steps=steps, warmup=warmup)

    where = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"\nViT 32x32/4, 192 dims, 6 layers, 3 heads, batch {batch}; {where}; "
          f"{'bf16 autocast' if cuda else 'fp32'}; torch {torch.__version__}; median of {rounds} rounds "
          f"x {steps} steps\n")
    base = {k: statistics.median(results["timm VisionTransformer"][k]) for k in ("train", "infer")}
    print(f"{'model':32s} {'params':>8s} {'train img/s':>12s} {'vs timm':>8s} {'infer img/s':>12s} {'vs timm':>8s}")
    for name, model in models.items():
        train, infer = (statistics.median(results[name][k]) for k in ("train", "infer"))
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"{name:32s} {params:7.2f}M {train:12,.1f} {train / base['train']:7.2f}x {infer:12,.1f} "
              f"{infer / base['infer']:7.2f}x")
    spread = {name: f"{min(r['train']):,.0f}-{max(r['train']):,.0f}" for name, r in results.items()}
    print("\ntrain img/s range over rounds: " + "; ".join(f"{k}: {v}" for k, v in spread.items()))


if __name__ == "__main__":
    run_cli(main)
