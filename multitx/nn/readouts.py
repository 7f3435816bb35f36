"""Task heads: read tokens (B, T, D) out into predictions."""

import torch
from torch import nn


class LMHead(nn.Module):
    """Next-token logits (B, T, vocab). With `tie_to`, shares the token embedding's
    weight (Press & Wolf 2017): the same vector reads a token in and writes it out.
    Without, its own weights start at zero (uniform predictions, as modded-nanogpt's head).
    softcap > 0: logits = softcap * tanh(logits / softcap), smoothly kept within +-softcap (Gemma 2,
    modded-nanogpt), so that no logit runs away; 0: plain logits."""

    def __init__(self, dim: int, vocab_size: int, *, tie_to: nn.Embedding | None = None, softcap: float = 0.0):
        super().__init__()
        self.softcap = softcap
        self.proj = nn.Linear(dim, vocab_size, bias=False)
        if tie_to is not None:
            self.proj.weight = tie_to.weight
        else:
            nn.init.zeros_(self.proj.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.proj(x)  # (B, T, vocab)
        if self.softcap > 0:
            logits = self.softcap * torch.tanh(logits / self.softcap)
        return logits


class ClassifierHead(nn.Module):
    """Class logits (B, classes) from the CLS token (`pool="cls"`, token 0) or
    the mean of all tokens (`pool="mean"`)."""

    def __init__(self, dim: int, classes: int, *, pool: str = "cls", dropout: float = 0.0):
        super().__init__()
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")
        self.pool = pool
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.proj = nn.Linear(dim, classes)
        nn.init.zeros_(self.proj.weight)  # start from uniform predictions, as timm does
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, num_prefix_tokens: int = 1) -> torch.Tensor:
        pooled = x[:, 0] if self.pool == "cls" else x[:, num_prefix_tokens:].mean(dim=1)  # (B, D)
        return self.proj(self.dropout(pooled))
