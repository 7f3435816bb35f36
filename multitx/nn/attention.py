"""Multi-head attention: message passing between tokens.

Every token emits a query ("what am I looking for"), a key ("what do I hold")
and a value ("what I pass on"). A token's output is the average of all values
weighted by softmax(q·k / sqrt(Dh)) over the tokens it may see. With H heads
this happens H times in parallel on Dh = D / H channels each.

Shapes: B batch, T query tokens, S key/value tokens, D model width,
H heads, Dh = D / H channels per head.
"""

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from multitx.nn.kv_cache import LayerCache
from multitx.nn.positions import Rotary

# On the CPU, attention over up to this many keys without a plain causal mask is spelled out (QKᵀ, softmax,
# ·V as three kernels): there that ran forward and backward faster than SDPA's flash kernel, which pays off only
# for longer sequences (fp32, Zen 4, 2026-12-06: a ViT's 65 tokens, 1.16-1.4x; Fashion-MNIST's 17, 1.55x;
# 197 and more, SDPA 1.1x faster). Plain causal attention (the char LM) stays with SDPA's is_causal.
SPELLED_OUT_MAX_KEYS = 128


class ScaledDotProduct(nn.Module):
    """softmax(QKᵀ/√Dh)·V for every head at once: fused `scaled_dot_product_attention` (flash
    attention on GPUs), or on the CPU for short sequences the same maths spelled out, which is
    faster there. A module of its own so that a recorder (multitx.trace) can hook it and see
    Q, K, V and the mask without changing this path."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor | None = None,
                causal: bool = False, dropout: float = 0.0) -> torch.Tensor:
        """q (B, H, T, Dh), k and v (B, H, S, Dh), allowed (B|1, 1, T, S) bool or None -> (B, H, T, Dh)."""
        if q.device.type == "cpu" and k.shape[-2] <= SPELLED_OUT_MAX_KEYS and not (causal and allowed is None):
            weights = attention_weights(q, k, allowed, causal)  # (B, H, T, S)
            return F.dropout(weights, dropout) @ v if dropout > 0 else weights @ v
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout,
                                              is_causal=causal and allowed is None)


def attention_weights(q: torch.Tensor, k: torch.Tensor, allowed: torch.Tensor | None = None,
                      causal: bool = False) -> torch.Tensor:
    """The weights SDPA mixes the values with, spelled out: softmax(QKᵀ/√Dh) over the keys each
    query may see (B, H, T, S); 0 where the causal or padding mask forbids a key (and, as SDPA
    gives, 0 for a query that may see no key at all)."""
    scores = q @ k.transpose(-2, -1) * (q.shape[-1] ** -0.5)  # (B, H, T, S): each query meets each key
    if allowed is None and causal:
        allowed = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device).tril()  # (T, S)
    if allowed is None:
        return scores.softmax(dim=-1)
    weights = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
    return weights.masked_fill(~allowed.any(dim=-1, keepdim=True), 0.0)  # no NaN from a query with no key


class Attention(nn.Module):
    """Self-attention (keys from the same tokens) or cross-attention (keys from `memory`).

    The maths of the heads is `self.attend` (ScaledDotProduct); to look at it, trace
    the model (`with multitx.trace(model) as trace: ...`), which records Q, K, V, the
    weights and the outputs through hooks.
    """

    def __init__(self, config, *, reads_memory: bool = False):
        """config: the trunk's TrunkConfig (dim, heads, bias, dropout, qk_norm); reads_memory: cross-attention,
        queries from the tokens, keys and values from a second sequence (`memory`)."""
        super().__init__()
        dim = config.dim  # config.check() (the trunk calls it) has seen that the heads divide it
        self.heads, self.head_dim, self.reads_memory = config.heads, dim // config.heads, reads_memory
        # QK-norm (Dehghani et al. 2023, ViT-22B; modded-nanogpt): each head's query and key normalised
        # (zero mean, unit RMS, times a learned gain) before they meet, so that no logit grows without
        # bound. LayerNorm, as ViT-22B: on the CPU its fused kernel ran forward and backward 6x as fast as
        # RMSNorm's (0.45 against 2.8 ms for a (24, 8, 64, 32) tensor, Zen 4, 2026-12-06).
        self.q_norm = nn.LayerNorm(self.head_dim, bias=False) if config.qk_norm else None
        self.k_norm = nn.LayerNorm(self.head_dim, bias=False) if config.qk_norm else None
        bias = config.bias
        if reads_memory:
            self.to_q = nn.Linear(dim, dim, bias=bias)  # queries from the tokens being written
            self.to_kv = nn.Linear(dim, 2 * dim, bias=bias)  # keys and values from the memory
        else:
            self.to_qkv = nn.Linear(dim, 3 * dim, bias=bias)  # one matmul for all three
        self.proj = nn.Linear(dim, dim, bias=bias)
        self.dropout = config.dropout
        self.proj_dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.attend = ScaledDotProduct()

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(x, "b t (h d) -> b h t d", h=self.heads)  # (B, T, D) -> (B, H, T, Dh)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        *,
        causal: bool = False,
        key_mask: torch.Tensor | None = None,
        rotary: Rotary | None = None,
        cache: LayerCache | None = None,
        queries: int | None = None,
        value_embed: torch.Tensor | None = None,
        bidirectional_prefix: int = 0,
    ) -> torch.Tensor:
        """x: (B, T, D) -> (B, T, D), or (B, queries, D) with `queries`: only the first
        tokens ask (their outputs alone are computed), every token still answers.

        memory: (B, S, D), the tokens to read from in cross-attention.
        key_mask: (B, S) bool, True for real keys, False for padding.
        cache: keys/values of earlier positions (self-attention) or of the
            memory (cross-attention); appended to / filled in place.
        value_embed: (B, T, D) added to the values (self-attention): value embeddings of the tokens.
        bidirectional_prefix: with causal, the first this many positions see each other both ways
            (a prefix-LM mask: a captioner's image tokens before its words).
        """
        start = 0
        if self.reads_memory:
            q = self.norm_q(self.split_heads(self.to_q(x)))  # (B, H, T, Dh)
            if cache is not None and cache.memory_kv is not None:
                k, v = cache.memory_kv  # computed once per generation
            else:
                if memory is None:
                    raise ValueError("cross-attention needs a memory sequence")
                k, v = map(self.split_heads, self.to_kv(memory).chunk(2, dim=-1))  # (B, H, S, Dh) each
                k = self.norm_k(k)
                if cache is not None:
                    cache.memory_kv = (k, v)
            causal = False
        else:
            q, k, v = self.to_qkv(x).chunk(3, dim=-1)  # (B, T, D) each
            if value_embed is not None:
                v = v + value_embed
            q, k, v = self.norm_q(self.split_heads(q)), self.norm_k(self.split_heads(k)), self.split_heads(v)
            if cache is not None:
                start = cache.length
            if rotary is not None:
                q, k = rotary(q, start), rotary(k, start)
            if cache is not None:
                k, v = cache.append(k, v)  # (B, H, start + T, Dh): all positions so far
            q = q[:, :, :queries]  # (B, H, queries, Dh); all T when queries is None

        allowed = self.allowed(q.shape[2], k.shape[2], start, causal, key_mask, q.device, bidirectional_prefix)
        out = self.attend(q, k, v, allowed, causal, self.dropout if self.training else 0.0)  # (B, H, T, Dh)
        out = rearrange(out, "b h t d -> b t (h d)")  # heads side by side again: (B, T, D)
        return self.proj_dropout(self.proj(out))

    def norm_q(self, q: torch.Tensor) -> torch.Tensor:
        return q if self.q_norm is None else self.q_norm(q)  # (B, H, T, Dh), each head's vector normalised

    def norm_k(self, k: torch.Tensor) -> torch.Tensor:
        return k if self.k_norm is None else self.k_norm(k)

    @staticmethod
    def allowed(t: int, s: int, start: int, causal: bool, key_mask, device,
                bidirectional_prefix: int = 0) -> torch.Tensor | None:
        """Boolean (B|1, 1, T, S) mask of which key each query may see, or None for
        "all" / "plain causal" (which SDPA handles itself, fastest). bidirectional_prefix (causal only):
        keys 0 .. prefix - 1 are seen by every query, so the prefix's own tokens see each other both ways."""
        mask = None
        if causal and (start > 0 or key_mask is not None or t != s or bidirectional_prefix > 0):
            # Query i sits at absolute position start + i and sees keys 0 .. start + i (and the whole prefix).
            query_pos = torch.arange(start, start + t, device=device)[:, None]
            keys = torch.arange(s, device=device)[None, :]
            mask = ((keys <= query_pos) | (keys < bidirectional_prefix))[None, None]  # (1, 1, T, S)
        if key_mask is not None:
            keys = key_mask[:, None, None, :].bool()  # (B, 1, 1, S)
            mask = keys if mask is None else mask & keys
        return mask
