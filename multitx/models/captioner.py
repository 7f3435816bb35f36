"""The captioner: an image encoder and a text decoder that cross-attends to it.

    images (B, 3, H, W) ─► PatchTokenizer ─► Trunk (bidirectional) ─► memory (B, N, D)
                                                                          │ keys, values
    caption ids (B, T) ─► TextEmbedder ─► Trunk (causal, cross-attention) ─► LMHead ─► logits (B, T, vocab)

The same Trunk class serves both halves: the encoder lets every patch see
every other patch; the decoder lets each word see the words before it, and
in each block reads from the image's patch tokens (queries from the words,
keys and values from the memory).
"""

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from multitx.nn.heads import LMHead
from multitx.nn.kv_cache import KVCache
from multitx.nn.patches import PatchTokenizer, build_tokenizer
from multitx.nn.text_embedder import TextEmbedder
from multitx.nn.trunk import Trunk


@dataclass
class CaptionerConfig:
    vocab_size: int
    pad_id: int = 0  # caption padding: ignored by the loss, masked in attention
    unk_id: int = 3  # what word dropout puts in place of a word
    # image encoder
    image_size: int = 48
    patch_size: int = 6
    in_channels: int = 3
    # A registered name ("conv", "linear"), an import path, a PatchTokenizer subclass, or a config
    # mapping {name | _target_, module, ...}: anything multitx.nn.patches.build_tokenizer takes.
    tokenizer: Any = "conv"
    image_positions: str = "learned"  # learned | sincos | none
    cls_token: bool = False
    encoder_dim: int = 128
    encoder_layers: int = 3
    encoder_heads: int = 4
    encoder_mlp_ratio: float = 4.0
    encoder_bias: bool = False  # True for timm ViT weights
    encoder_norm_eps: float = 1e-5  # 1e-6 for timm ViT weights
    image_mean: tuple[float, ...] = field(default=(0.5, 0.5, 0.5))  # images arrive in [0, 1]
    image_std: tuple[float, ...] = field(default=(0.5, 0.5, 0.5))
    # text decoder
    dim: int = 128
    decoder_layers: int = 3
    heads: int = 4
    positions: str = "learned"  # learned | sinusoidal | rotary
    max_caption_len: int = 24  # tokens, <bos> and <eos> included
    mlp_ratio: float = 4.0
    bias: bool = False  # biases in Linear and LayerNorm
    dropout: float = 0.0  # both halves
    # In training, this share of the decoder's input words (not <bos>) is replaced by <unk>, so that
    # the next word cannot always be guessed from the words before it: the decoder must read the image.
    word_dropout: float = 0.0


def build_patch_tokenizer(config: CaptionerConfig) -> PatchTokenizer:
    return build_tokenizer(config.tokenizer, image_size=config.image_size, patch_size=config.patch_size,
                           in_channels=config.in_channels, dim=config.encoder_dim, positions=config.image_positions,
                           cls_token=config.cls_token)


class Captioner(nn.Module):
    """encode(images) -> memory; decode(ids, memory) -> logits; forward does both and the loss.

    patch_tokenizer: pass your own PatchTokenizer (dim = config.encoder_dim) to
    replace the one named by config.tokenizer.
    """

    def __init__(self, config: CaptionerConfig, patch_tokenizer: PatchTokenizer | None = None):
        super().__init__()
        self.config = c = config
        self.patches = patch_tokenizer or build_patch_tokenizer(c)
        self.encoder = Trunk(dim=c.encoder_dim, layers=c.encoder_layers, heads=c.encoder_heads,
                             mlp_ratio=c.encoder_mlp_ratio, dropout=c.dropout, bias=c.encoder_bias,
                             norm_eps=c.encoder_norm_eps)
        # The decoder reads the memory at its own width.
        self.bridge = nn.Linear(c.encoder_dim, c.dim) if c.encoder_dim != c.dim else nn.Identity()
        self.embed = TextEmbedder(c.vocab_size, c.dim, c.max_caption_len, positions=c.positions, dropout=c.dropout)
        self.decoder = Trunk(dim=c.dim, layers=c.decoder_layers, heads=c.heads, mlp_ratio=c.mlp_ratio,
                             dropout=c.dropout, bias=c.bias, causal=True, cross_attention=True,
                             rotary_positions=c.max_caption_len if c.positions == "rotary" else 0)
        self.head = LMHead(c.dim, c.vocab_size, tie_to=self.embed.token)
        self.register_buffer("mean", torch.tensor(c.image_mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(c.image_std).view(1, -1, 1, 1), persistent=False)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W), floats in [0, 1] -> memory (B, N, D): the patch tokens the decoder reads."""
        tokens = self.patches((images - self.mean) / self.std)  # (B, N, De)
        return self.bridge(self.encoder(tokens))  # (B, N, D)

    def decode(self, ids: torch.Tensor, memory: torch.Tensor, *, mask: torch.Tensor | None = None,
               cache: KVCache | None = None) -> torch.Tensor:
        """ids (B, T) at positions cache.length .. -> logits (B, T, vocab).

        mask (B, T): True for real tokens, False for padding. With a cache, only
        the new tokens pass through; the memory's keys and values are computed
        on the first call and kept in the cache from then on.
        """
        start = 0 if cache is None else cache.length
        x = self.embed(ids, start)  # (B, T, D)
        x = self.decoder(x, memory=memory, mask=mask, cache=cache)  # (B, T, D)
        return self.head(x)  # (B, T, vocab)

    def forward(self, images: torch.Tensor, ids: torch.Tensor, *, label_smoothing: float = 0.0):
        """Teacher forcing. images (B, 3, H, W) in [0, 1]; ids (B, T+1) = <bos> w1 .. wn <eos> <pad>...,
        or (B, R, T+1): R captions of each image, decoded against one encoding of it.

        The decoder reads ids[..., :-1] and is scored on predicting ids[..., 1:];
        padded positions are masked out of attention and ignored by the loss.
        Returns (logits (B*R, T, vocab), mean cross-entropy per real token).
        """
        memory = self.encode(images)  # (B, N, D)
        if ids.dim() == 3:
            memory = memory.repeat_interleave(ids.shape[1], dim=0)  # (B*R, N, D): each image once per caption
            ids = ids.flatten(0, 1)  # (B*R, T+1)
        inputs, targets = ids[:, :-1], ids[:, 1:]  # (B*R, T) each
        mask = inputs != self.config.pad_id
        if self.training and self.config.word_dropout > 0:
            drop = (torch.rand(inputs.shape, device=inputs.device) < self.config.word_dropout) & mask
            drop[:, 0] = False  # <bos> stays
            inputs = inputs.masked_fill(drop, self.config.unk_id)
        logits = self.decode(inputs, memory, mask=mask)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=self.config.pad_id,
                               label_smoothing=label_smoothing)
        return logits, loss

    def new_cache(self, batch: int, *, device=None, dtype=None) -> KVCache:
        """An empty decoder KV cache for `batch` captions of up to max_caption_len tokens."""
        weight = self.embed.token.weight
        return self.decoder.new_cache(batch, self.config.max_caption_len, device=device or weight.device,
                                      dtype=dtype or weight.dtype)

    def no_weight_decay(self) -> set[str]:
        names = {f"patches.{n}" for n in self.patches.no_weight_decay()} | {"embed.position"}
        return names & {n for n, _ in self.named_parameters()}

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def captioner_config(model_cfg, vocab_size: int, pad_id: int = 0, unk_id: int = 3) -> CaptionerConfig:
    """CaptionerConfig from the `model:` section of a caption run's config."""
    m, t = model_cfg, model_cfg.tokenizer
    tokenizer = {k: v for k, v in OmegaConf.to_container(t, resolve=True).items()
                 if k not in ("positions", "cls_token") and v is not None}
    return CaptionerConfig(
        vocab_size=vocab_size, pad_id=pad_id, unk_id=unk_id, image_size=m.image_size, patch_size=m.patch_size,
        tokenizer=tokenizer, image_positions=t.positions, cls_token=t.cls_token,
        encoder_dim=m.encoder_dim, encoder_layers=m.encoder_layers, encoder_heads=m.encoder_heads,
        encoder_mlp_ratio=m.encoder_mlp_ratio, encoder_bias=m.encoder_bias, encoder_norm_eps=m.encoder_norm_eps,
        image_mean=tuple(m.image_mean), image_std=tuple(m.image_std),
        dim=m.dim, decoder_layers=m.decoder_layers, heads=m.heads, positions=m.positions,
        max_caption_len=m.max_caption_len, mlp_ratio=m.mlp_ratio, dropout=m.dropout, bias=m.bias,
        word_dropout=m.word_dropout)
