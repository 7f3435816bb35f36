"""The one transformer trunk shared by every task.

A stack of pre-norm blocks. Each block lets tokens communicate (attention),
optionally reads from a second sequence (cross-attention over `memory`), then
lets each token compute on what it gathered (MLP). Residual connections carry
the token stream (B, T, D) through unchanged in shape.

The trunk does not know whether its tokens came from characters or pixels.
"""

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

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


ACTIVATIONS = {"gelu": nn.GELU, "relu2": ReLUSquared}


class MLP(nn.Module):
    """Per-token computation: D -> hidden -> D, with GELU (GPT-2, ViT) or relu^2 between."""

    def __init__(self, dim: int, hidden: int, *, dropout: float = 0.0, bias: bool = False, activation: str = "gelu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
        self.fc = nn.Linear(dim, hidden, bias=bias)
        self.act = ACTIVATIONS[activation]()
        self.proj = nn.Linear(hidden, dim, bias=bias)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

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

    def __init__(self, dim: int, heads: int, *, mlp_ratio: float = 4.0, dropout: float = 0.0, bias: bool = False,
                 cross_attention: bool = False, drop_path: float = 0.0, norm_eps: float = 1e-5,
                 activation: str = "gelu", qk_norm: bool = False):
        super().__init__()
        self.norm_attn = nn.LayerNorm(dim, eps=norm_eps, bias=bias)
        self.attn = Attention(dim, heads, dropout=dropout, bias=bias, qk_norm=qk_norm)
        self.norm_cross = nn.LayerNorm(dim, eps=norm_eps, bias=bias) if cross_attention else None
        self.cross = Attention(dim, heads, dropout=dropout, bias=bias, cross=True, qk_norm=qk_norm) \
            if cross_attention else None
        self.norm_mlp = nn.LayerNorm(dim, eps=norm_eps, bias=bias)
        self.mlp = MLP(dim, int(dim * mlp_ratio), dropout=dropout, bias=bias, activation=activation)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x, *, memory=None, causal=False, mask=None, memory_mask=None, rotary=None, cache=None,
                queries=None, value_embed=None):
        """x: (B, T, D) -> (B, T, D); with `queries`, the first `queries` tokens alone come out,
        (B, queries, D), having attended to all T (a classifier that reads only CLS needs no more).
        value_embed: (B, T, D) added to this block's attention values (a language model's value embeddings)."""
        if queries is not None and self.cross is not None:
            raise ValueError("queries= is for encoder blocks, which have no cross-attention")
        attended = self.attn(self.norm_attn(x), causal=causal, key_mask=mask, rotary=rotary, cache=cache,
                             queries=queries, value_embed=value_embed)
        x = x[:, :queries] + self.drop_path(attended)
        if self.cross is not None:
            x = x + self.drop_path(self.cross(self.norm_cross(x), memory, key_mask=memory_mask, cache=cache))
        return x + self.drop_path(self.mlp(self.norm_mlp(x)))


@dataclass
class TrunkConfig:
    """The settings of one trunk: `model.trunk` (or `model.encoder`, `model.decoder`) in a run's config."""
    dim: int = 384  # width D of every token vector
    layers: int = 6
    heads: int = 6  # head size Dh = dim / heads
    mlp_ratio: float = 4.0  # the MLP's hidden width is dim * mlp_ratio
    activation: str = "gelu"  # in the MLP: gelu | relu2
    bias: bool = False  # biases in Linear and LayerNorm (GPT-2 and timm's ViT have them)
    dropout: float = 0.0
    drop_path: float = 0.0  # stochastic depth of the last block (0 in the first, linear between)
    norm_eps: float = 1e-5  # LayerNorm epsilon (timm's ViT: 1e-6)
    qk_norm: bool = False  # queries and keys layer-normed per head before they meet (modded-nanogpt)
    zero_init: bool = False  # the projections into the residual stream start at zero: each block starts as identity


class Trunk(nn.Module):
    """A stack of `layers` blocks of width `dim`, then a final LayerNorm.

    causal: each token sees only itself and earlier tokens (decoders).
    cross_attention: blocks also attend to a `memory` sequence (captioning).
    rotary_positions: if > 0, rotary positions up to this length inside attention.
    activation: the MLP's, "gelu" or "relu2".
    qk_norm, zero_init: see TrunkConfig.
    """

    def __init__(self, *, dim: int, layers: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 bias: bool = False, causal: bool = False, cross_attention: bool = False,
                 rotary_positions: int = 0, drop_path: float = 0.0, norm_eps: float = 1e-5,
                 activation: str = "gelu", qk_norm: bool = False, zero_init: bool = False):
        super().__init__()
        self.dim, self.heads, self.causal = dim, heads, causal
        self.rotary = Rotary(dim // heads, rotary_positions) if rotary_positions else None
        # Stochastic depth grows linearly with depth, as in DeiT / timm.
        rates = [drop_path * i / max(layers - 1, 1) for i in range(layers)]
        self.blocks = nn.ModuleList(
            Block(dim, heads, mlp_ratio=mlp_ratio, dropout=dropout, bias=bias, cross_attention=cross_attention,
                  drop_path=rate, norm_eps=norm_eps, activation=activation, qk_norm=qk_norm)
            for rate in rates
        )
        self.norm_out = nn.LayerNorm(dim, eps=norm_eps, bias=bias)
        self.config = TrunkConfig(dim=dim, layers=layers, heads=heads, mlp_ratio=mlp_ratio, activation=activation,
                                  bias=bias, dropout=dropout, drop_path=drop_path, norm_eps=norm_eps,
                                  qk_norm=qk_norm, zero_init=zero_init)
        self.apply(init_gpt2)
        # The projections that write into the residual stream: GPT-2 scales them by 1/sqrt(2 * layers),
        # so the stream's variance does not grow with depth; zero_init starts them at zero (modded-nanogpt),
        # so every block starts as the identity and the gradient still reaches the projection itself.
        for name, param in self.named_parameters():
            if name.endswith("proj.weight"):
                if zero_init:
                    nn.init.zeros_(param)
                else:
                    nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * layers))

    @classmethod
    def from_config(cls, config: TrunkConfig, *, causal: bool = False, cross_attention: bool = False,
                    rotary_positions: int = 0) -> "Trunk":
        """The trunk `config` describes; how it is wired (causal, cross-attention, rotary) is the model's choice."""
        return cls(**asdict(config), causal=causal, cross_attention=cross_attention, rotary_positions=rotary_positions)

    def forward(self, x: torch.Tensor, *, memory: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                memory_mask: torch.Tensor | None = None, cache: KVCache | None = None,
                queries: int | None = None, value_embeds: list[torch.Tensor] | None = None) -> torch.Tensor:
        """x: (B, T, D) tokens -> (B, T, D) tokens that have attended to each other.

        memory: (B, S, D) tokens to cross-attend to; mask: (B, T) and
        memory_mask: (B, S) are True for real tokens, False for padding.
        queries: only the first `queries` tokens come out, (B, queries, D). The last
        block computes only their outputs (attending to all T); every earlier block
        needs all tokens, since they are the last block's keys and values. A ViT
        that reads only its CLS token asks for queries=1.
        value_embeds: one (B, T, D) tensor per block, added to that block's attention values.
        """
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x, memory=memory, causal=self.causal, mask=mask, memory_mask=memory_mask,
                      rotary=self.rotary, cache=None if cache is None else cache.layers[i],
                      queries=queries if i == last else None,
                      value_embed=None if value_embeds is None else value_embeds[i])
        return self.norm_out(x)

    def new_cache(self, batch: int, max_len: int, *, device=None, dtype=torch.float32) -> KVCache:
        return KVCache.empty(layers=len(self.blocks), batch=batch, heads=self.heads, max_len=max_len,
                             head_dim=self.dim // self.heads, device=device, dtype=dtype)

    def matrices(self) -> list[nn.Parameter]:
        """The blocks' 2-D weights (attention and MLP projections), in block order: what Muon trains."""
        return [p for block in self.blocks for p in block.parameters() if p.dim() == 2]

    def attention_modules(self) -> list[Attention]:
        return [m for m in self.modules() if isinstance(m, Attention)]


def init_gpt2(module: nn.Module) -> None:
    """GPT-2 initialisation: N(0, 0.02) weights, zero biases."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
