"""Char-LM benchmark on tinyshakespeare: wall time, tokens/s and val loss.

    python -m multitx.benchmarks.charlm                    # both configurations below
    python -m multitx.benchmarks.charlm --only nanogpt-cpu
    python -m multitx.benchmarks.charlm --only recipe --budget 124   # steps fitted to 124 s

nanogpt-cpu: nanoGPT's README configuration for a laptop CPU (4 layers, 4 heads,
  128 dims, context 64, batch 12, 2000 steps, lr 1e-3 cosine to 1e-4 after 100
  warm-up steps, dropout 0, eval every 250 steps on 20 batches). nanoGPT itself,
  measured on the 2-core development machine: val loss 1.886 in 124 s, about
  12,400 tokens/s.
recipe: multitx's default charlm recipe (multitx/config/task/charlm.yaml), to
  compare against the same 124 s. With --budget, a config's steps (and warm-up)
  are scaled down if its timed steps say it would not finish in that many seconds
  of training (multitx/benchmarks/budget.py): the val loss reached in that time on
  this machine, however fast it runs today.

Needs tinyshakespeare: downloaded into --data-dir, or copied from
../shared/data/tinyshakespeare.txt when that file is there.
"""

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from multitx.benchmarks.budget import fit_to_budget
from multitx.cli import load_config
from multitx.data.text.corpus import SHAKESPEARE_SHA256
from multitx.engine.trainer import train
from multitx.files import sha256_file

NANOGPT_TOKENS_PER_S = 12_400  # nanoGPT on the same 2-core machine (issue 2)
NANOGPT_SECONDS, NANOGPT_VAL = 124, 1.886

CONFIGS = {
    "nanogpt-cpu": ["steps=2000", "batch_size=12", "model.layers=4", "model.heads=4", "model.dim=128",
                    "model.context=64", "model.dropout=0.0", "model.positions=learned", "model.activation=gelu",
                    "lr=1e-3", "min_lr=1e-4", "warmup_steps=100", "eval_every=250", "eval_batches=20",
                    "betas=[0.9,0.99]", "weight_decay=0.1", "grad_clip=1.0", "optimizer=adamw"],
    "recipe": [],
}


def stage_shakespeare(data_dir: Path) -> None:
    target = data_dir / "shakespeare" / "input.txt"
    shared = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "tinyshakespeare.txt"
    if not target.exists() and shared.exists() and sha256_file(shared) == SHAKESPEARE_SHA256:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shared, target)


def run(name: str, data_dir: Path, device: str, extra: list[str], budget: float | None) -> dict:
    run_dir = Path("runs") / "bench" / f"charlm-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    argv = ["task=charlm", "data=shakespeare", f"data_dir={data_dir}", f"run_dir={run_dir}", f"device={device}",
            "progress=false", "show_tokens=0", *CONFIGS[name], *extra]
    cfg = load_config(argv) if budget is None else fit_to_budget(argv, budget)
    start = time.perf_counter()
    train(cfg)
    wall = time.perf_counter() - start
    evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    tokens = cfg.steps * cfg.batch_size * cfg.grad_accum * cfg.model.context
    return {"config": name, "wall_s": wall, "tokens_per_s": tokens / wall, "final_val": evals[-1]["val_loss"],
            "best_val": min(e["val_loss"] for e in evals), "steps": cfg.steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=list(CONFIGS))
    parser.add_argument("--data-dir", default="datasets")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--budget", type=float, help="seconds of training to fit each run into")
    parser.add_argument("overrides", nargs="*", help="extra key=value for multitx.train")
    args = parser.parse_args()
    data_dir = Path(args.data_dir)
    stage_shakespeare(data_dir)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {time.strftime('%Y-%m-%d %H:%M')}")
    names = [name for name in CONFIGS if args.only in (None, name)]
    rows = [run(name, data_dir, args.device, args.overrides, args.budget) for name in names]
    print(f"\n{'config':<12} {'steps':>6} {'wall s':>8} {'tokens/s':>10} {'vs nanoGPT':>10} {'final val':>10} "
          f"{'best val':>9}")
    print(f"{'nanoGPT':<12} {2000:>6} {NANOGPT_SECONDS:>8} {NANOGPT_TOKENS_PER_S:>10,} {'1.00x':>10} "
          f"{NANOGPT_VAL:>10.3f} {'':>9}  (measured on the 2-core dev machine, issue 2)")
    for r in rows:
        print(f"{r['config']:<12} {r['steps']:>6} {r['wall_s']:>8.1f} {r['tokens_per_s']:>10,.0f} "
              f"{r['tokens_per_s'] / NANOGPT_TOKENS_PER_S:>9.2f}x {r['final_val']:>10.3f} {r['best_val']:>9.3f}")


if __name__ == "__main__":
    main()
