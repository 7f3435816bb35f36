"""The optimizer a run trains with: `optimizer=adamw` or `optimizer=muon`.

adamw: AdamW on everything, weight decay on matrices (dim >= 2) only, as nanoGPT and
    timm do; a model can exempt more parameters by name through `no_weight_decay()`.
muon:  Muon (engine/muon.py) on the matrices a model names in `matrix_parameters()` (the
    transformer blocks' projections), and AdamW as above on the rest: embeddings, patch
    tokenizer, heads, norms, biases. The engine knows no model class: the model says which.

Each param group starts at its own peak learning rate (lr, or muon.lr, times the share a task gives
its parameters: Task.lr_scales); the trainer scales every group by the same warm-up and cosine schedule.
"""

import torch
from omegaconf import DictConfig

from multitx.engine.muon import Muon
from multitx.engine.runtime import Runtime
from multitx.errors import UserError

OPTIMIZERS = ("adamw", "muon")


class Chained:
    """Several optimizers stepped, zeroed, saved and loaded as one."""

    def __init__(self, *optimizers: torch.optim.Optimizer):
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict]:
        return [group for optimizer in self.optimizers for group in optimizer.param_groups]

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"chained": [optimizer.state_dict() for optimizer in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        for optimizer, saved in zip(self.optimizers, state["chained"], strict=True):
            optimizer.load_state_dict(saved)


def adamw(named_params: list[tuple[str, torch.nn.Parameter]], exempt: set[str], cfg: DictConfig,
          runtime: Runtime, scales: dict[int, float]) -> torch.optim.AdamW:
    """Two groups, weight decay on matrices or not, for each learning-rate scale: lr x scales[id(p)]
    (1 for a parameter not named there)."""
    groups = []
    for scale in sorted({scales.get(id(p), 1.0) for _, p in named_params}, reverse=True):  # 1 first: lr's own
        mine = [(n, p) for n, p in named_params if scales.get(id(p), 1.0) == scale]
        lr = cfg.lr * scale
        decay = [p for n, p in mine if p.dim() >= 2 and n not in exempt]
        groups += [{"params": decay, "weight_decay": cfg.weight_decay, "lr": lr},
                   {"params": [p for n, p in mine if p.dim() < 2 or n in exempt], "weight_decay": 0.0, "lr": lr}]
    # fused: one kernel for the whole update, on the GPU and the CPU alike (on the CPU, 0.36 against
    # 1.68 ms a step for the char LM's 0.8M parameters, Zen 4, 2026-12-06); exact resume holds
    # (tests/test_engine.py). Not on MPS, where the kernel is newer.
    fused = runtime.device.type in ("cuda", "cpu")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=fused or None)


def pretrained_scales(model: torch.nn.Module, cfg: DictConfig) -> dict[int, float]:
    """lr x pretrained_lr_scale for the parameters that came from pretrained weights (a fine-tuned ViT's
    `pretrained_parameters()`), when the model names any."""
    if not hasattr(model, "pretrained_parameters"):
        return {}
    scale = float(cfg.get("pretrained_lr_scale", 1.0))
    return {id(p): scale for p in model.pretrained_parameters()}


def build_optimizer(model: torch.nn.Module, cfg: DictConfig, runtime: Runtime,
                    scales: dict[int, float] | None = None) -> torch.optim.Optimizer | Chained:
    """The optimizer of the parameters that train (requires_grad: a frozen part has none in it). scales:
    id(parameter) -> its share of the learning rate (Task.lr_scales); None: pretrained_scales."""
    exempt = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    scales = pretrained_scales(model, cfg) if scales is None else scales
    if not named:
        raise UserError("no parameter of the model trains: everything is frozen; leave a part out of freeze=")
    if cfg.optimizer == "adamw":
        return adamw(named, exempt, cfg, runtime, scales)
    if cfg.optimizer != "muon":
        raise UserError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {cfg.optimizer!r}")
    matrices = [p for p in model.matrix_parameters() if p.requires_grad] if hasattr(model, "matrix_parameters") \
        else []
    if not matrices:
        raise UserError(f"optimizer=muon needs the model to name its weight matrices (matrix_parameters()); "
                        f"{type(model).__name__} names none: use optimizer=adamw")
    taken = {id(p) for p in matrices}
    groups = [{"params": [p for p in matrices if scales.get(id(p), 1.0) == scale], "lr": cfg.muon.lr * scale}
              for scale in sorted({scales.get(id(p), 1.0) for p in matrices}, reverse=True)]
    muon = Muon(groups, lr=cfg.muon.lr, momentum=cfg.muon.momentum, weight_decay=cfg.muon.weight_decay,
                ns_steps=cfg.muon.ns_steps)
    rest = [(n, p) for n, p in named if id(p) not in taken]
    return Chained(muon, *([adamw(rest, exempt, cfg, runtime, scales)] if rest else []))
