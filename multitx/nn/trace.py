"""Record what happens inside a model, from outside it: multitx.trace.

    with multitx.trace(model) as trace:
        logits = model(x)
    trace.attention[0].weights      # (B, H, T, S): who attended to whom in the first attention layer

Forward hooks on every Attention (its input tokens and output), on its
ScaledDotProduct (Q, K, V, the mask), on every Trunk (tokens in and out) and on
the model's `head` (logits). The model's own forward path is untouched: the
fused attention still runs, and the hooks only copy what passes. The weights,
which the fused kernel never materialises, are computed beside it from the
recorded Q, K and mask: softmax(QKᵀ/√Dh), 0 where a mask forbids a key. Leaving
the `with` block removes every hook.

Letters: B batch, T query tokens, S key tokens, D width, H heads, Dh = D / H.
"""

from dataclasses import dataclass, field

import torch
from torch import nn

from multitx.nn.attention import Attention, ScaledDotProduct, attention_weights
from multitx.nn.trunk import Trunk


@dataclass
class AttentionRecord:
    """One call of one attention layer."""

    name: str  # where it sits, e.g. "trunk.blocks.0.attn"
    kind: str  # "self" or "cross"
    layer: int  # its block's index within its trunk
    x: torch.Tensor  # (B, T, D) the tokens that ask (normalised block input)
    memory: torch.Tensor | None  # (B, S, D) the tokens read in cross-attention
    q: torch.Tensor  # (B, H, T, Dh) queries
    k: torch.Tensor  # (B, H, S, Dh) keys
    v: torch.Tensor  # (B, H, S, Dh) values
    weights: torch.Tensor  # (B, H, T, S) softmax(QKᵀ/√Dh), masked keys 0; each row sums to 1
    mixed: torch.Tensor  # (B, H, T, Dh) the weighted values, as the fused kernel returned them
    out: torch.Tensor | None = None  # (B, T, D) after the heads are joined and projected
    allowed: torch.Tensor | None = None  # (T, S) bool: the keys each query may see (causal, padding); None: all


@dataclass
class TrunkRecord:
    name: str  # "trunk", "encoder", "decoder"
    tokens_in: torch.Tensor  # (B, T, D)
    tokens_out: torch.Tensor  # (B, T|queries, D), after the final LayerNorm


@dataclass
class Trace:
    attention: list[AttentionRecord] = field(default_factory=list)
    trunks: list[TrunkRecord] = field(default_factory=list)
    logits: torch.Tensor | None = None  # the head's last output
    handles: list = field(default_factory=list, repr=False)

    def layers(self, kind: str = "self", trunk: str | None = None) -> list[AttentionRecord]:
        """The records of one kind of attention (of one trunk, by name prefix), in call order."""
        return [r for r in self.attention if r.kind == kind and (trunk is None or r.name.startswith(trunk))]

    def __enter__(self) -> "Trace":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def block_index(name: str) -> int:
    """3 for "trunk.blocks.3.attn"."""
    parts = name.split(".")
    return int(parts[parts.index("blocks") + 1]) if "blocks" in parts else 0


def trace(model: nn.Module) -> Trace:
    """Hook `model` to record every attention layer, trunk and the head; use it as a context manager."""
    record = Trace()
    pending: dict[Attention, AttentionRecord] = {}  # filled by the inner hook, finished by the outer one

    def on_attend(attention: Attention, name: str):
        def hook(module, args, kwargs, output):
            q, k, v, allowed, causal = args[:5]  # as Attention.forward calls it
            with torch.no_grad():
                weights = attention_weights(q.float(), k.float(), allowed, causal)
            seen = None  # (T, S): which keys each query may see, from the batch's first row; None: every key
            if allowed is not None:
                seen = allowed[0, 0].expand(weights.shape[-2:])
            elif causal:
                seen = torch.ones(weights.shape[-2:], dtype=torch.bool, device=q.device).tril()
            pending[attention] = AttentionRecord(
                name=name, kind="cross" if attention.reads_memory else "self", layer=block_index(name), x=None,
                memory=None,
                q=q.detach(), k=k.detach(), v=v.detach(), weights=weights, mixed=output.detach(), allowed=seen)
        return hook

    def on_attention(module, args, kwargs, output):
        done = pending.pop(module)
        done.x = args[0].detach()
        memory = args[1] if len(args) > 1 else kwargs.get("memory")
        done.memory = memory.detach() if memory is not None else None
        done.out = output.detach()
        record.attention.append(done)

    def on_trunk(name: str):
        def hook(module, args, kwargs, output):
            record.trunks.append(TrunkRecord(name, args[0].detach(), output.detach()))
        return hook

    def on_head(module, args, output):
        record.logits = output.detach()

    for name, module in model.named_modules():
        if isinstance(module, Attention):
            attend = next(m for m in module.children() if isinstance(m, ScaledDotProduct))
            record.handles.append(attend.register_forward_hook(on_attend(module, name), with_kwargs=True))
            record.handles.append(module.register_forward_hook(on_attention, with_kwargs=True))
        elif isinstance(module, Trunk):
            record.handles.append(module.register_forward_hook(on_trunk(name or "trunk"), with_kwargs=True))
    head = getattr(model, "head", None)
    if isinstance(head, nn.Module):
        record.handles.append(head.register_forward_hook(on_head))
    return record
