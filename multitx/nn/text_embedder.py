"""Text to tokens: token ids (B, T) -> vectors (B, T, D) that carry their position."""

import torch
from torch import nn

from multitx.nn.positions import sinusoidal_table

POSITIONS = ("learned", "sinusoidal", "rotary")


class TextEmbedder(nn.Module):
    """Token embedding plus position.

    positions: "learned" (a trained (context, D) table, as GPT-2), "sinusoidal"
    (the fixed table of the original transformer) or "rotary" (nothing is added
    here: the trunk rotates queries and keys inside attention instead).
    """

    def __init__(self, vocab_size: int, dim: int, context: int, *, positions: str = "learned", dropout: float = 0.0):
        super().__init__()
        if positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}")
        self.context, self.positions = context, positions
        self.token = nn.Embedding(vocab_size, dim)
        if positions == "learned":
            self.position = nn.Parameter(torch.zeros(context, dim))
            nn.init.normal_(self.position, std=0.02)
        elif positions == "sinusoidal":
            self.register_buffer("position", sinusoidal_table(context, dim), persistent=False)
        else:
            self.position = None
        nn.init.normal_(self.token.weight, std=0.02)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        """ids: (B, T) for positions start .. start+T-1 -> (B, T, D)."""
        x = self.token(ids)  # (B, T, D)
        if self.position is not None:
            end = start + ids.shape[1]
            if end > self.context:
                raise ValueError(f"sequence of {end} tokens is longer than the context of {self.context}")
            x = x + self.position[start:end]  # (T, D) broadcast over the batch
        return self.dropout(x)
