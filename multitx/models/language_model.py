"""A GPT: text embedder -> causal trunk -> LM head (tied to the embedding, or its own).

Options from the modded-nanogpt speedruns, each off by default (the char LM recipe's choices and
what each did are in multitx/benchmarks/charlm.py): an untied head, value embeddings (a second
embedding of each token added to every block's attention values) and logit soft-capping.

With causal=False the same model reads the whole sequence at once: the
encoder-only masked language model of task=mlm (BERT's objective on characters).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from multitx.config.rules import NON_NEGATIVE, Flag, Text, Whole
from multitx.config.settings import from_data, section, setting
from multitx.models.decoding import refuse_beyond_memory, sample_next
from multitx.nn.positions import WORD_POSITIONS, check_rotary
from multitx.nn.readouts import LMHead
from multitx.nn.text_embedder import TextEmbedder
from multitx.nn.trunk import Trunk, TrunkConfig


@dataclass
class LanguageModelConfig:
    vocab_size: int = from_data()  # the vocabulary's size
    context: int = setting(256, Whole(min=1), "longest sequence the model reads at once")
    positions: str = setting("learned", WORD_POSITIONS, "learned | sinusoidal | rotary")
    causal: bool = setting(True, Flag(), "each token sees only those before it (false: all of them, as task=mlm)")
    trunk: TrunkConfig = section(TrunkConfig, "the trunk (nn/trunk.py), the same section in every model")
    tie_head: bool = setting(True, Flag(), "the head reads out with the token embedding's weights (false: its own)")
    value_embeds: bool = setting(False, Flag(), "each block adds its own embedding of the tokens to its values")
    logit_softcap: float = setting(0.0, NON_NEGATIVE, "> 0: logits = c * tanh(logits / c); 0: off")
    pretrained: str | None = setting(None, Text(prefix="hf:", null=True),
                                     "hf:FOLDER starts from a Hugging Face GPT-2 (config.json, model.safetensors; "
                                     "hf:NAME downloads it once); its shape replaces the keys above", before=None)

    def check(self, prefix: str = "model") -> None:
        self.trunk.check(f"{prefix}.trunk")
        check_rotary(self.positions, self.trunk, prefix)


class LanguageModel(nn.Module):
    def __init__(self, config: LanguageModelConfig):
        super().__init__()
        self.config = config
        width = config.trunk.dim
        self.embed = TextEmbedder(config.vocab_size, width, config.context, positions=config.positions,
                                  dropout=config.trunk.dropout)
        self.trunk = Trunk(config.trunk, causal=config.causal,
                           rotary_positions=config.context if config.positions == "rotary" else 0)
        self.head = LMHead(width, config.vocab_size, tie_to=self.embed.token if config.tie_head else None,
                           softcap=config.logit_softcap)
        # (vocab, D) tables, one a block, read by token id: a shortcut from each token to every block's values
        self.value_embeds = None
        if config.value_embeds:
            layers = config.trunk.layers
            self.value_embeds = nn.ModuleList(nn.Embedding(config.vocab_size, width) for _ in range(layers))
            for table in self.value_embeds:
                nn.init.zeros_(table.weight)  # the model starts as it would without them

    def forward(self, ids: torch.Tensor, targets: torch.Tensor | None = None, *, cache=None):
        """ids: (B, T) -> logits (B, T, vocab), and the mean cross-entropy against
        targets (B, T) (ids shifted by one) when given."""
        start = 0 if cache is None else cache.length
        tokens = self.embed(ids, start)  # (B, T, D)
        values = None if self.value_embeds is None else [table(ids) for table in self.value_embeds]  # (B, T, D) each
        logits = self.head(self.trunk(tokens, cache=cache, value_embeds=values))  # (B, T, vocab)
        loss = None
        if targets is not None:  # a target of -100 (cross_entropy's ignore_index) is not scored
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
        refuse_beyond_memory(8 * ids.shape[0] * (ids.shape[1] + max_new_tokens), f"max_new_tokens={max_new_tokens}",
                             ids.device)  # the ids it returns, before anything is allocated
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

    def matrix_parameters(self) -> list[nn.Parameter]:
        """The trunk's weight matrices (Muon's share); embeddings and norms are not."""
        return self.trunk.matrices()

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

