"""Position information for token sequences.

Attention itself is order-blind: it mixes a set of tokens. Order comes from
one of these, chosen by name: for words ``learned``, ``sinusoidal`` or ``rotary``;
for image patches (multitx/nn/patches.py) ``learned`` or ``sincos``, the 2-D table below.
"""

import math

import torch
from torch import nn

from multitx.config.rules import Choice
from multitx.errors import UserError


def sinusoidal_table(length: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """The fixed (length, dim) table of "Attention Is All You Need", section 3.5.

    Even channels hold sin(pos / base^(2i/dim)), odd channels the matching cos.
    """
    position = torch.arange(length, dtype=torch.float32)[:, None]  # (T, 1)
    inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(base) / dim))  # (D/2,)
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq)[:, : dim // 2]
    return table


class Rotary(nn.Module):
    """Rotary position embedding (RoPE, Su et al. 2021), applied to queries and keys.

    Each pair of channels of a head is rotated by an angle proportional to the
    token's position, so q·k depends on the distance between the two tokens only.
    Uses the "rotate half" pairing: channel i is paired with channel i + Dh/2.
    """

    def __init__(self, head_dim: int, max_len: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary positions need an even head size, got {head_dim}")
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (Dh/2,)
        angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)  # (T, Dh/2)
        angles = torch.cat([angles, angles], dim=-1)  # (T, Dh)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """x: (B, H, T, Dh), the tokens at positions start .. start+T-1."""
        length = x.shape[-2]
        if start + length > self.cos.shape[0]:
            raise ValueError(f"position {start + length - 1} is past the rotary table ({self.cos.shape[0]} positions)")
        cos = self.cos[start : start + length].to(x.dtype)  # (T, Dh)
        sin = self.sin[start : start + length].to(x.dtype)
        first, second = x.chunk(2, dim=-1)
        rotated = torch.cat([-second, first], dim=-1)
        return x * cos + rotated * sin


def sincos_2d(grid_h: int, grid_w: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """Fixed 2-D sin-cos positions (h*w, D): half the channels encode the row,
    half the column (as in MAE and "Better plain ViT baselines")."""
    if dim % 4:
        raise ValueError(f"2-D sin-cos positions need a width divisible by 4, got {dim}")
    rows, cols = torch.meshgrid(torch.arange(grid_h, dtype=torch.float32),
                                torch.arange(grid_w, dtype=torch.float32), indexing="ij")
    inv_freq = 1.0 / base ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))  # (D/4,)
    r = rows.flatten()[:, None] * inv_freq  # (h*w, D/4)
    c = cols.flatten()[:, None] * inv_freq
    return torch.cat([r.sin(), r.cos(), c.sin(), c.cos()], dim=1)  # (h*w, D)


WORD_POSITIONS = Choice(options=("learned", "sinusoidal", "rotary"))  # model.positions of a text model


def check_rotary(positions: str, trunk, prefix: str) -> None:
    """Rotary positions turn channel pairs: each head's width must be even."""
    if positions == "rotary" and trunk.head_dim % 2:
        raise UserError(f"{prefix}.positions=rotary turns channel pairs: the width per head "
                        f"({trunk.dim} / {trunk.heads}) must be even")

