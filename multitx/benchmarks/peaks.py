"""Speed at its peak: the MFU arithmetic, GPUs' dense bf16 peaks, and the two throughput loops of
`python -m multitx.benchmarks.gpu` (parts mfu and vit).

    flops_per_token(n_params, layers, heads, head_dim, context)   nanoGPT's estimate (model.py estimate_mfu)
    model_flops_per_token(language_model)                         the same for a multitx LanguageModel
    dense_bf16_peak("NVIDIA H100 80GB HBM3")                      989e12; None for a device not in the table
    mfu(flops_per_token, tokens_per_s, peak)                      the share of the peak; None without a peak
    gpt_tokens_per_s(device, shape, compiled)                     training tokens/s of a GPT on random tokens
    vit_images_per_s(device, sizes, compiled)                     multitx's ViT and timm's, turn about

FLOPs per token (nanoGPT, after the PaLM paper's appendix B): 6 N for the matrix multiplies of the
forward and backward pass over N parameters (the position table left out: it is added, not
multiplied), plus 12 L H Dh T for attention's QK^T and its weights times V over a context of T.

The peaks are the vendors' dense (not 2:4 sparse) bf16 tensor-core figures, the device named as
torch.cuda.get_device_name() names it. A name the table does not know gives None, and the suite
says "peak unknown" rather than guess: an MFU against the wrong peak is worse than none.
"""

import contextlib
import re
import statistics
import time

import torch
from torch import nn

from multitx.models.language_model import LanguageModel, LanguageModelConfig
from multitx.nn.trunk import TrunkConfig

# (pattern searched in the device name, case-insensitively; peak FLOP/s): the first match wins
DENSE_BF16_PEAKS = [
    (r"\bH200 NVL\b", 836e12),
    (r"\bH200\b", 989e12),  # H200 SXM (GH200 is another name, and not in the table)
    (r"\bH100 NVL\b", 835e12),
    (r"\bH100 PCIe\b", 756e12),
    (r"\bH100\b.*\b(HBM3|SXM)", 989e12),  # "NVIDIA H100 80GB HBM3": the SXM5 board
    (r"\bA100\b", 312e12),  # SXM4 and PCIe alike
]

# GPT-2 small's shape (no biases, as nanoGPT's bench.py), 16 x 1024 tokens a step; the smoke run's tiny one
GPT2_SMALL = {"layers": 12, "heads": 12, "dim": 768, "context": 1024, "vocab": 50304, "batch": 16, "warmup": 10,
              "timed": 30}
SMOKE_GPT = {"layers": 2, "heads": 2, "dim": 32, "context": 32, "vocab": 64, "batch": 2, "warmup": 1, "timed": 2}
VIT = {"batch": 128, "rounds": 5, "steps": 30, "warmup": 10}  # vit_vs_timm.py's shape and batch
SMOKE_VIT = {"batch": 4, "rounds": 2, "steps": 1, "warmup": 1}
VIT_ROWS = ("timm VisionTransformer", "multitx ViT")  # build_models' names; the third (no CLS shortcut) is left out


def dense_bf16_peak(device_name: str) -> float | None:
    """The dense bf16 peak FLOP/s of a GPU named as torch.cuda.get_device_name() names it; None if unknown."""
    for pattern, peak in DENSE_BF16_PEAKS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return peak
    return None


def flops_per_token(n_params: int, layers: int, heads: int, head_dim: int, context: int) -> float:
    """Training FLOPs per token: 6 N + 12 L H Dh T (N without the position table)."""
    return 6 * n_params + 12 * layers * heads * head_dim * context


def model_flops_per_token(model: LanguageModel) -> float:
    """flops_per_token of a multitx LanguageModel (its learned position table, if any, left out of N)."""
    config = model.config
    table = model.embed.position  # a Parameter when learned; a buffer (sinusoidal) or None (rotary) is no parameter
    n_params = model.num_params() - (table.numel() if isinstance(table, nn.Parameter) else 0)
    heads = config.trunk.heads
    return flops_per_token(n_params, config.trunk.layers, heads, config.trunk.dim // heads, config.context)


def mfu(flops_per_token: float, tokens_per_s: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: the FLOP/s the model did, as a share of the device's peak."""
    return None if not peak else flops_per_token * tokens_per_s / peak


def clock(device: torch.device) -> float:
    """Seconds, once the device has finished what it was given."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def bf16(device: torch.device):
    """bf16 autocast on a GPU; fp32 on the CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def gpt_tokens_per_s(device: torch.device, shape: dict, compiled: bool) -> dict:
    """Train a GPT of `shape` on random tokens (AdamW, fused on a GPU): `warmup` untimed steps, then
    `timed` steps; the shape with tokens_per_s and flops_per_token."""
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    model = LanguageModel(LanguageModelConfig(
        vocab_size=shape["vocab"], context=shape["context"], positions="learned",
        trunk=TrunkConfig(dim=shape["dim"], layers=shape["layers"], heads=shape["heads"], activation="gelu"),
    )).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=cuda)
    forward = torch.compile(model) if compiled else model
    batches = torch.randint(shape["vocab"], (4, shape["batch"], shape["context"] + 1), device=device)

    def step(i: int) -> None:
        ids = batches[i % len(batches)]  # (B, T + 1): inputs and, shifted by one, targets
        with bf16(device):
            _, loss = forward(ids[:, :-1], ids[:, 1:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for i in range(shape["warmup"]):  # compilation, and the allocator's first sizes
        step(i)
    start = clock(device)
    for i in range(shape["timed"]):
        step(i)
    tokens_per_s = shape["batch"] * shape["context"] * shape["timed"] / (clock(device) - start)
    return {**shape, "tokens_per_s": tokens_per_s, "flops_per_token": model_flops_per_token(model)}


def vit_images_per_s(device: torch.device, sizes: dict, compiled: bool) -> dict:
    """Training and inference images/s of timm's ViT and multitx's (vit_vs_timm.py's build_models and
    measuring loop), `rounds` alternating rounds of `steps` steps after `warmup` untimed ones."""
    from multitx.benchmarks.vit_vs_timm import build_models, images_per_s  # imports timm

    models = {name: model for name, model in build_models(device).items() if name in VIT_ROWS}
    return images_per_s(models, device, batch=sizes["batch"], rounds=sizes["rounds"], steps=sizes["steps"],
                        warmup=sizes["warmup"], compiled=compiled)


def medians(speeds: dict) -> dict:
    return {name: {kind: statistics.median(s) for kind, s in kinds.items()} for name, kinds in speeds.items()}
