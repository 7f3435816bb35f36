"""The key/value cache used for generation, kept outside the model maths.

During generation each new token only needs its own query; the keys and
values of earlier tokens never change, so they are stored here instead of
being recomputed. The attention layers read and append to the cache they are
handed; a model without one computes exactly the same thing from scratch.
"""

from dataclasses import dataclass, field

import torch


@dataclass
class LayerCache:
    """Keys and values of one attention layer, each (B, H, T_max, Dh)."""

    keys: torch.Tensor
    values: torch.Tensor
    length: int = 0  # how many positions are filled
    # Cross-attention keys/values over the memory (e.g. image patches): they
    # depend on the memory alone, so they are computed once per generation.
    memory_kv: tuple[torch.Tensor, torch.Tensor] | None = None

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, H, T_new, Dh) and return all keys/values so far."""
        end = self.length + k.shape[2]
        if end > self.keys.shape[2]:
            raise ValueError(f"KV cache holds {self.keys.shape[2]} positions; {end} were asked for")
        self.keys[:, :, self.length : end] = k
        self.values[:, :, self.length : end] = v
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]


@dataclass
class KVCache:
    """One LayerCache per block of a trunk."""

    layers: list[LayerCache] = field(default_factory=list)

    @classmethod
    def empty(cls, *, layers: int, batch: int, heads: int, max_len: int, head_dim: int,
              device=None, dtype=torch.float32) -> "KVCache":
        shape = (batch, heads, max_len, head_dim)
        return cls([
            LayerCache(torch.empty(shape, device=device, dtype=dtype), torch.empty(shape, device=device, dtype=dtype))
            for _ in range(layers)
        ])

    @property
    def length(self) -> int:
        return self.layers[0].length if self.layers else 0

    def reset(self) -> None:
        for layer in self.layers:
            layer.length = 0

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows `index` (B_new,), e.g. the surviving beams of a beam search."""
        for layer in self.layers:
            layer.keys = layer.keys.index_select(0, index)
            layer.values = layer.values.index_select(0, index)
            if layer.memory_kv is not None:
                layer.memory_kv = tuple(t.index_select(0, index) for t in layer.memory_kv)
