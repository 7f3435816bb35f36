"""A GPT: text embedder -> causal trunk -> LM head tied to the embedding."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from multitx.nn.heads import LMHead
from multitx.nn.text_embedder import TextEmbedder
from multitx.nn.trunk import Trunk


@dataclass
class LanguageModelConfig:
    vocab_size: int
    context: int = 256  # longest sequence the model reads at once
    dim: int = 384  # width D of every token vector
    layers: int = 6
    heads: int = 6  # head size Dh = dim / heads
    dropout: float = 0.0
    positions: str = "learned"  # learned | sinusoidal | rotary
    bias: bool = False  # biases in Linear and LayerNorm (GPT-2 had them; they barely help)
    mlp_ratio: float = 4.0
    activation: str = "gelu"  # in the MLP: gelu | relu2


class LanguageModel(nn.Module):
    def __init__(self, config: LanguageModelConfig):
        super().__init__()
        self.config = config
        self.embed = TextEmbedder(config.vocab_size, config.dim, config.context, positions=config.positions,
                                  dropout=config.dropout)
        self.trunk = Trunk(dim=config.dim, layers=config.layers, heads=config.heads, mlp_ratio=config.mlp_ratio,
                           dropout=config.dropout, bias=config.bias, causal=True, activation=config.activation,
                           rotary_positions=config.context if config.positions == "rotary" else 0)
        self.head = LMHead(config.dim, config.vocab_size, tie_to=self.embed.token)

    def forward(self, ids: torch.Tensor, targets: torch.Tensor | None = None, *, cache=None):
        """ids: (B, T) -> logits (B, T, vocab), and the mean cross-entropy against
        targets (B, T) (ids shifted by one) when given."""
        start = 0 if cache is None else cache.length
        tokens = self.embed(ids, start)  # (B, T, D)
        logits = self.head(self.trunk(tokens, cache=cache))  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        return logits, loss

    @torch.no_grad()
    def generate(self, ids: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Extend ids (B, T) by max_new_tokens sampled tokens, one at a time, using a KV cache.

        Only the newest token passes through the model at each step; keys and
        values of the others come from the cache. When the sequence outgrows
        the context, the cache is refilled from the last `context - 1` tokens,
        which is exactly what cropping and recomputing would give.
        """
        context = self.config.context
        cache = self.trunk.new_cache(ids.shape[0], context, device=ids.device, dtype=self.embed.token.weight.dtype)
        step_input = ids[:, -context:]
        for _ in range(max_new_tokens):
            if cache.length + step_input.shape[1] > context:
                cache.reset()
                step_input = ids[:, -(context - 1):]
            logits, _ = self(step_input, cache=cache)
            next_id = sample_next(logits[:, -1], temperature=temperature, top_k=top_k, generator=generator)  # (B, 1)
            ids = torch.cat([ids, next_id], dim=1)
            step_input = next_id
        return ids

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def sample_next(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """logits (B, vocab) -> one sampled id per row (B, 1). temperature 0 is greedy."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, [-1]]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator)
