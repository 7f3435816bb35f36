"""The one transformer trunk shared by every task.

A stack of pre-norm blocks. Each block lets tokens communicate (attention),
optionally reads from a second sequence (cross-attention over `memory`), then
lets each token compute on what it gathered (MLP). Residual connections carry
the token stream (B, T, D) through unchanged in shape.

The trunk does not know whether its tokens came from characters or pixels.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from multitx.config.rules import POSITIVE, RATE, Choice, Flag, Whole
from multitx.config.settings import setting
from multitx.errors import UserError
from multitx.nn.attention import Attention
from multitx.nn.kv_cache import KVCache
from multitx.nn.positions import Rotary


class ReLUSquared(nn.Module):
    """relu(x)^2, the MLP activation found by the Primer search (So et al. 2021)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return relu_squared_with_grad(x)
        return torch.relu(x).square()


class ReLUSquaredGrad(torch.autograd.Function):
    """relu(x)^2 whose backward is one product, 2 relu(x) * grad, from the saved relu(x). Autograd's own
    backward of relu().square() takes three passes (pow's, then relu's): 1.47 against 0.42 ms forward and
    backward for a (24, 64, 512) tensor on the CPU (Zen 4, 2026-12-06)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        positive = torch.relu(x)
        ctx.save_for_backward(positive)
        return positive * positive

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (positive,) = ctx.saved_tensors
        return grad * (positive + positive)


relu_squared_with_grad = ReLUSquaredGrad.apply


def GELUTanh() -> nn.GELU:  # noqa: N802 - named as the classes beside it
    """GELU by its tanh approximation, GPT-2's ("gelu_new"): within 1e-3 of the exact one."""
    return nn.GELU(approximate="tanh")


ACTIVATIONS = {"gelu": nn.GELU, "gelu_tanh": GELUTanh, "relu2": ReLUSquared}


@dataclass
class TrunkConfig:
    """The settings of one trunk: `model.trunk` (or `model.encoder`, `model.decoder`) in a run's config."""
    dim: int = setting(384, Whole(min=1), "width D of every token vector")
    layers: int = setting(6, Whole(min=1), "blocks, each attention then MLP")
    heads: int = setting(6, Whole(min=1), "attention heads; each gets Dh = dim / heads channels")
    mlp_ratio: float = setting(4.0, POSITIVE, "the MLP's hidden width is dim x mlp_ratio")
    activation: str = setting("gelu", Choice(options=tuple(ACTIVATIONS)),
                              "in the MLP: gelu | gelu_tanh (GPT-2's) | relu2")
    bias: bool = setting(False, Flag(), "biases in Linear and LayerNorm (GPT-2 and timm's ViT have them)")
    dropout: float = setting(0.0, RATE, "on attention weights and block outputs")
    drop_path: float = setting(0.0, RATE, "stochastic depth of the last block (0 in the first, linear between)")
    norm_eps: float = setting(1e-5, POSITIVE, "LayerNorm epsilon (timm's ViT: 1e-6)")
    qk_norm: bool = setting(False, Flag(), "queries and keys layer-normed per head before they meet",
                            before=False)
    zero_init: bool = setting(False, Flag(), "projections into the residual stream start at zero: "
                              "each block starts as the identity", before=False)
    activation_checkpointing: bool = setting(False, Flag(), "in training, each block keeps only its input and "
                                             "recomputes the rest in backward: less memory, about one more "
                                             "forward of the blocks", before=False)

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def hidden(self) -> int:
        return int(self.dim * self.mlp_ratio)

    def check(self, prefix: str = "trunk") -> None:
        """The settings that must go together: heads divide the width, the MLP has hidden units."""
        if self.dim % self.heads:
            raise UserError(f"{prefix}.dim={self.dim} is not divisible by {prefix}.heads={self.heads}: each head gets "
                            f"dim / heads channels; choose a head count that divides the width")
        if self.hidden < 1:
            raise UserError(f"{prefix}.mlp_ratio={self.mlp_ratio:g} leaves the MLP no hidden units at "
                            f"{prefix}.dim={self.dim} (int(dim x mlp_ratio) must be at least 1)")


class MLP(nn.Module):
    """Per-token computation: D -> hidden (dim x mlp_ratio) -> D, with GELU (GPT-2, ViT) or relu^2 between."""

    def __init__(self, config: TrunkConfig):
        super().__init__()
        c = config
        if c.activation not in ACTIVATIONS:  # from Python; the command line's rule has said so already
            raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {c.activation!r}")
        self.fc = nn.Linear(c.dim, c.hidden, bias=c.bias)
        self.act = ACTIVATIONS[c.activation]()
        self.proj = nn.Linear(c.hidden, c.dim, bias=c.bias)
        self.dropout = nn.Dropout(c.dropout) if c.dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(self.act(self.fc(x))))


class DropPath(nn.Module):
    """Stochastic depth: in training, skip a residual branch for a random subset of samples."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0:
            return x
        keep = x.new_empty(x.shape[0], *([1] * (x.dim() - 1))).bernoulli_(1 - self.rate)  # (B, 1, 1)
        return x * keep / (1 - self.rate)


class Block(nn.Module):
    """x + attention(norm(x)) [+ cross_attention(norm(x), memory)] + mlp(norm(x))."""

    def __init__(self, config: TrunkConfig, *, cross_attention: bool = False, drop_path: float = 0.0):
        """drop_path: this block's own stochastic-depth rate (the trunk grows it with depth)."""
        super().__init__()
        c = config
        self.norm_attn = nn.LayerNorm(c.dim, eps=c.norm_eps, bias=c.bias)
        self.attn = Attention(c)
        self.norm_cross = nn.LayerNorm(c.dim, eps=c.norm_eps, bias=c.bias) if cross_attention else None
        self.cross = Attention(c, reads_memory=True) if cross_attention else None
        self.norm_mlp = nn.LayerNorm(c.dim, eps=c.norm_eps, bias=c.bias)
        self.mlp = MLP(c)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x, *, memory=None, causal=False, mask=None, memory_mask=None, rotary=None, cache=None,
                queries=None, value_embed=None, bidirectional_prefix=0):
        """x: (B, T, D) -> (B, T, D); with `queries`, the first `queries` tokens alone come out,
        (B, queries, D), having attended to all T (a classifier that reads only CLS needs no more).
        value_embed: (B, T, D) added to this block's attention values (a language model's value embeddings).
        bidirectional_prefix: causal, except that the first this many positions see each other both ways."""
        if queries is not None and self.cross is not None:
            raise ValueError("queries= is for encoder blocks, which have no cross-attention")
        attended = self.attn(self.norm_attn(x), causal=causal, key_mask=mask, rotary=rotary, cache=cache,
                             queries=queries, value_embed=value_embed, bidirectional_prefix=bidirectional_prefix)
        x = x[:, :queries] + self.drop_path(attended)
        if self.cross is not None:
            x = x + self.drop_path(self.cross(self.norm_cross(x), memory, key_mask=memory_mask, cache=cache))
        return x + self.drop_path(self.mlp(self.norm_mlp(x)))


class Trunk(nn.Module):
    """A stack of `config.layers` blocks of width `config.dim`, then a final LayerNorm.

    How the model wires it is its own choice, beside the config:
    causal: each token sees only itself and earlier tokens (decoders).
    cross_attention: blocks also attend to a `memory` sequence (captioning).
    rotary_positions: if > 0, rotary positions up to this length inside attention.
    """

    def __init__(self, config: TrunkConfig, *, causal: bool = False, cross_attention: bool = False,
                 rotary_positions: int = 0):
        super().__init__()
        config.check()
        self.config, self.causal = config, causal
        self.dim, self.heads = config.dim, config.heads  # (B, T, dim) in and out; heads: H of (B, H, T, Dh)
        self.rotary = Rotary(config.head_dim, rotary_positions) if rotary_positions else None
        # Stochastic depth grows linearly with depth, as in DeiT / timm.
        layers = config.layers
        rates = [config.drop_path * i / max(layers - 1, 1) for i in range(layers)]
        self.blocks = nn.ModuleList(Block(config, cross_attention=cross_attention, drop_path=rate) for rate in rates)
        self.norm_out = nn.LayerNorm(config.dim, eps=config.norm_eps, bias=config.bias)
        self.apply(init_gpt2)
        # The projections that write into the residual stream: GPT-2 scales them by 1/sqrt(2 * layers),
        # so the stream's variance does not grow with depth; zero_init starts them at zero (modded-nanogpt),
        # so every block starts as the identity and the gradient still reaches the projection itself.
        for name, param in self.named_parameters():
            if name.endswith("proj.weight"):
                if config.zero_init:
                    nn.init.zeros_(param)
                else:
                    nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * layers))

    def forward(self, x: torch.Tensor, *, memory: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                memory_mask: torch.Tensor | None = None, cache: KVCache | None = None,
                queries: int | None = None, value_embeds: list[torch.Tensor] | None = None,
                bidirectional_prefix: int = 0) -> torch.Tensor:
        """x: (B, T, D) tokens -> (B, T, D) tokens that have attended to each other.

        memory: (B, S, D) tokens to cross-attend to; mask: (B, T) and
        memory_mask: (B, S) are True for real tokens, False for padding.
        queries: only the first `queries` tokens come out, (B, queries, D). The last
        block computes only their outputs (attending to all T); every earlier block
        needs all tokens, since they are the last block's keys and values. A ViT
        that reads only its CLS token asks for queries=1.
        value_embeds: one (B, T, D) tensor per block, added to that block's attention values.
        bidirectional_prefix: in a causal trunk, the first this many positions (counted from the start of
        the sequence, cached ones included) see each other both ways, and every later token sees all of
        them: a prefix-LM mask (a prefix-fusion captioner's image tokens, then its words).
        """
        last = len(self.blocks) - 1
        recompute = self.recomputes(cache)
        for i, block in enumerate(self.blocks):
            kwargs = dict(memory=memory, causal=self.causal, mask=mask, memory_mask=memory_mask, rotary=self.rotary,
                          cache=None if cache is None else cache.layers[i], queries=queries if i == last else None,
                          value_embed=None if value_embeds is None else value_embeds[i],
                          bidirectional_prefix=bidirectional_prefix)
            if recompute:  # keyword arguments pass through to block(...): the non-reentrant checkpoint allows them
                x = checkpoint(block, x, use_reentrant=False, preserve_rng_state=True, **kwargs)
            else:
                x = block(x, **kwargs)
        return self.norm_out(x)

    def recomputes(self, cache: KVCache | None) -> bool:
        """Whether this forward runs each block under activation checkpointing (config.activation_checkpointing).

        Backward needs what each block computed on the way (normed inputs, attention's Q, K, V and output,
        the MLP's hidden layer...): about 16 (B, T, D) tensors' worth a block (the MLP's hidden layer before
        and after its activation is 8 of them), kept from the forward to the backward. Checkpointed, a block
        keeps only its input x; backward runs its forward again to get the rest, one block at a time. The
        trade: memory of one block's activations instead of all of them, for about one extra forward of the
        blocks (a forward and backward of GPT-2 small's shape took 1.23x as long on a CPU:
        docs/benchmarks/activation_memory.md). The recomputation replays the same random numbers
        (preserve_rng_state), so dropout and drop-path draw the same masks and the gradients are the same.
        Only where a backward will come: in training with gradients on, and never with a KV cache (decoding
        keeps nothing for backward, and a recomputation would write the cache twice)."""
        return self.config.activation_checkpointing and self.training and torch.is_grad_enabled() and cache is None

    def new_cache(self, batch: int, max_len: int, *, device=None, dtype=torch.float32) -> KVCache:
        return KVCache.empty(layers=len(self.blocks), batch=batch, heads=self.config.heads, max_len=max_len,
                             head_dim=self.config.head_dim, device=device, dtype=dtype)

    def matrices(self) -> list[nn.Parameter]:
        """The blocks' 2-D weights (attention and MLP projections), in block order: what Muon trains."""
        return [p for block in self.blocks for p in block.parameters() if p.dim() == 2]


def init_gpt2(module: nn.Module) -> None:
    """GPT-2 initialisation: N(0, 0.02) weights, zero biases."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
