"""python -m multitx.benchmarks.activation_memory [layers=12] [dim=768] [heads=12] [vocab=50257]
       [context=1024] [batch=1] [repeats=2] [--smoke]

Activation checkpointing (model.trunk.activation_checkpointing=true, nn/trunk.py): how much less memory
one training step's forward and backward takes with it, and how much longer. A language model of the
given shape (GPT-2 small's by default: 12 blocks of 768 wide, 12 heads, its 50,257-token vocabulary,
learned positions, no dropout) reads `batch` random sequences of `context` tokens; each setting, off then
on, in a fresh process of its own (the same seed, the same weights), which reports:

    saved for backward   the bytes of the tensors autograd keeps from the forward for the backward, each
                         storage once, the parameters left out (torch.autograd.graph.saved_tensors_hooks
                         sees each as it is saved): the activation memory itself, whatever the allocator
                         does with it. Split into the trunk's (the blocks and the final LayerNorm) and the
                         rest's (embeddings, the head's logits, the loss)
    peak RSS growth      the process's high-water mark of resident memory (VmHWM in /proc/self/status)
                         after the first forward and backward, less its resident memory just before (the
                         model built, its gradients already allocated, and one pass over 8 tokens done, which
                         pages in torch's code and starts its threads): everything the step touched at its
                         peak, transient buffers and the allocator's slack included ("at most" where the step
                         stayed under the mark that building the model left). A process's high-water
                         mark cannot be reset, hence a fresh process for each setting. Glibc's malloc is
                         set up as a CPU training run sets it (engine/cpu_memory.py)
    seconds              of one forward and backward: the first (which the figures above come from) and
                         the fastest of `repeats` more

Goal (the issue that brought it in): with checkpointing, the saved activations at most half.

--smoke (smoke=true): 4 blocks of 64 wide at context 256, a vocabulary of 256: every path in seconds, both
processes at once on one thread each (no figure to keep).

The figures, with their command, machine and day, are in docs/benchmarks/activation_memory.md.
"""

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from multitx.cli import parse_args, run_cli
from multitx.config.rules import Flag, Whole
from multitx.config.settings import setting
from multitx.errors import UserError

SMOKE = {"layers": 4, "dim": 64, "heads": 4, "vocab": 256, "context": 256, "batch": 8, "repeats": 1}
SHAPE_KEYS = ("layers", "dim", "heads", "vocab", "context", "batch")
MB = 2**20


@dataclass
class ActivationMemoryArgs:
    layers: int = setting(12, Whole(min=1), "blocks")
    dim: int = setting(768, Whole(min=1), "width of each token vector")
    heads: int = setting(12, Whole(min=1), "attention heads (must divide dim)")
    vocab: int = setting(50257, Whole(min=2), "vocabulary size (GPT-2's: 50,257)")
    context: int = setting(1024, Whole(min=2), "tokens a sequence")
    batch: int = setting(1, Whole(min=1), "sequences a step")
    repeats: int = setting(2, Whole(min=0), "timed forward and backward passes after the first")
    smoke: bool = setting(False, Flag(), f"{SMOKE}: every path, quickly (--smoke is the same)")
    debug: bool = setting(False, Flag(), "show full tracebacks instead of one-line errors")


def build(shape: dict, checkpointing: bool, device: torch.device | str = "cpu"):
    """A language model of `shape` in training mode, and a batch of random (B, T + 1) ids for it."""
    from multitx.models.language_model import LanguageModel, LanguageModelConfig
    from multitx.nn.trunk import TrunkConfig

    torch.manual_seed(0)
    model = LanguageModel(LanguageModelConfig(
        vocab_size=shape["vocab"], context=shape["context"], positions="learned",
        trunk=TrunkConfig(dim=shape["dim"], layers=shape["layers"], heads=shape["heads"], activation="gelu",
                          activation_checkpointing=checkpointing))).to(device).train()
    ids = torch.randint(shape["vocab"], (shape["batch"], shape["context"] + 1), device=device)
    return model, ids


def saved_for_backward(model: nn.Module, forward, parts: dict[str, nn.Module] | None = None):
    """forward()'s result, and the bytes of what autograd saved for the backward while it ran, by part:
    {name: bytes} for each module of `parts` (the tensors saved while it ran) and "rest" for the others.
    Each storage is counted once (a tensor saved by two operations, or views of one storage, hold its
    memory once) and the model's parameters not at all (they are there with or without a backward).

    With activation checkpointing the tensors a checkpointed block saves go to the checkpoint's own
    hooks, not these, and are dropped; what the checkpoint keeps to recompute the block (its input x)
    it saves as autograd does, and these hooks count it."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    where, seen = ["rest"], {}  # where[-1]: the part running now

    def leave(*_) -> None:  # a forward hook that returned something would replace the module's output
        where.pop()

    handles = []
    for name, module in (parts or {}).items():
        handles.append(module.register_forward_pre_hook(lambda *_, name=name: where.append(name)))
        handles.append(module.register_forward_hook(leave))

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            seen.setdefault(storage.data_ptr(), (where[-1], storage.nbytes()))
        return tensor  # kept as it is: counting changes nothing that is saved

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            result = forward()
    finally:
        for handle in handles:
            handle.remove()
    counts = {name: 0 for name in [*(parts or {}), "rest"]}
    for name, nbytes in seen.values():
        counts[name] += nbytes
    return result, counts


def memory_status() -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (the most ever resident) of this process, in bytes (Linux)."""
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) * 1024  # "123456 kB"
    return found


def one_setting(shape: dict, checkpointing: bool, repeats: int) -> dict:
    """In a fresh process: the figures of one setting (see the module's docstring)."""
    from multitx.engine.cpu_memory import reuse_freed_memory

    reuse_freed_memory()  # as a CPU training run does
    model, ids = build(shape, checkpointing)
    for p in model.parameters():  # the gradients' memory is there before the step, with or without checkpointing
        p.grad = torch.zeros_like(p)
    model(ids[:1, :9], ids[:1, 1:10])[1].backward()  # 8 tokens: torch's code paged in, its thread pools started
    before = memory_status()

    def loss():
        return model(ids[:, :-1], ids[:, 1:])[1]

    started = time.perf_counter()
    first, saved = saved_for_backward(model, loss, {"trunk": model.trunk})
    first.backward()
    first_s = time.perf_counter() - started
    after = memory_status()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        loss().backward()
        times.append(time.perf_counter() - started)
    return {"checkpointing": checkpointing, "saved_trunk": saved["trunk"], "saved_rest": saved["rest"],
            "saved": saved["trunk"] + saved["rest"], "rss_before": before["VmRSS"],
            "hwm_before": before["VmHWM"], "hwm_after": after["VmHWM"], "peak_growth": after["VmHWM"] - before["VmRSS"],
            "first_s": first_s, "best_s": min(times, default=first_s), "loss": first.item()}


CHILD = "import json, sys; from multitx.benchmarks.activation_memory import one_setting; " \
        "print(json.dumps(one_setting(json.loads(sys.argv[1]), sys.argv[2] == 'on', int(sys.argv[3]))))"


def start(shape: dict, checkpointing: bool, repeats: int, threads: int | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
           **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(shape), "on" if checkpointing else "off",
                             str(repeats)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def result(process: subprocess.Popen) -> dict:
    out, err = process.communicate()
    if process.returncode != 0:
        raise SystemExit(err[-3000:])
    return json.loads(out.strip().splitlines()[-1])


def measure(shape: dict, repeats: int, at_once: bool = False) -> list[dict]:
    """Both settings, off then on, each in a fresh process; at_once: both processes at the same time, on one
    thread each."""
    if at_once:
        return [result(p) for p in [start(shape, on, repeats, threads=1) for on in (False, True)]]
    return [result(start(shape, on, repeats)) for on in (False, True)]


def training_peaks(device: torch.device, shape: dict, steps: int, warmup: int) -> list[dict]:
    """For the GPU suite (gpu.py, part recompute): train the model of `shape` (bf16 autocast on a GPU, AdamW)
    for `warmup` untimed and `steps` timed steps, without activation checkpointing, then with it: the rows
    of train_steps."""
    return [train_steps(device, shape, checkpointing, steps, warmup) for checkpointing in (False, True)]


def train_steps(device: torch.device, shape: dict, checkpointing: bool, steps: int, warmup: int) -> dict:
    """tokens/s and, on a GPU, the peak memory allocated over the timed steps (torch.cuda.max_memory_allocated)
    less what the weights, gradients and optimizer state hold between steps. On the CPU, which has no such
    counter, the bytes saved for backward in one more step stand in for it (saved_for_backward)."""
    from multitx.benchmarks.peaks import bf16, clock

    cuda = device.type == "cuda"
    model, ids = build(shape, checkpointing, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-4, fused=cuda)

    def step(measured: bool = False) -> dict | None:
        with bf16(device):
            if measured:
                loss, saved = saved_for_backward(model, lambda: model(ids[:, :-1], ids[:, 1:])[1])
            else:
                loss, saved = model(ids[:, :-1], ids[:, 1:])[1], None
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)  # the gradients stay allocated between steps
        return saved

    for _ in range(warmup):
        step()
    resident = torch.cuda.memory_allocated(device) if cuda else 0
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    started = clock(device)
    for _ in range(steps):
        step()
    seconds = clock(device) - started
    peak = torch.cuda.max_memory_allocated(device) - resident if cuda else sum(step(measured=True).values())
    return {"checkpointing": checkpointing, "tokens_per_s": shape["batch"] * shape["context"] * steps / seconds,
            "peak": peak, "resident": resident}


def main(argv: list[str]) -> None:
    args = parse_args(argv, ActivationMemoryArgs, __doc__)
    smoke = bool(args["smoke"])
    shape = {key: SMOKE[key] if smoke else int(args[key]) for key in SHAPE_KEYS}
    repeats = SMOKE["repeats"] if smoke else int(args["repeats"])
    if shape["dim"] % shape["heads"]:
        raise UserError(f"heads={shape['heads']} must divide dim={shape['dim']}")
    print(f"{os.cpu_count()} CPUs, torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}; {shape}"
          + (", --smoke: not a measurement" if smoke else ""), flush=True)
    off, on = measure(shape, repeats, at_once=smoke)
    for row in (off, on):
        print(json.dumps(row), flush=True)
    print("\n| activation checkpointing | saved for backward | of it in the trunk | peak RSS growth | "
          "first forward + backward | fastest of the others |\n|---|---|---|---|---|---|")
    for row in (off, on):
        best = f"{row['best_s']:.2f} s" if repeats else "-"
        bound = "at most " if row["hwm_after"] <= row["hwm_before"] else ""  # under building's own high-water mark
        print(f"| {'on' if row['checkpointing'] else 'off'} | {row['saved'] / MB:,.1f} MB | "
              f"{row['saved_trunk'] / MB:,.1f} MB | {bound}{row['peak_growth'] / MB:,.1f} MB | "
              f"{row['first_s']:.2f} s | {best} |")
    saved, trunk, peak = (on[key] / off[key] for key in ("saved", "saved_trunk", "peak_growth"))
    slower = on["best_s"] / off["best_s"]
    print(f"\nwith checkpointing: saved for backward {saved:.2f}x (the trunk's {trunk:.2f}x), peak RSS growth "
          f"{peak:.2f}x, time {slower:.2f}x; the same loss: {on['loss'] == off['loss']} "
          f"(goal: saved at most 0.5x: {'met' if saved <= 0.5 else 'MISSED'})")


if __name__ == "__main__":
    run_cli(main)
