"""The captioner: an image encoder and a text decoder that cross-attends to it.

    images (B, 3, H, W) ─► PatchTokenizer ─► Trunk (bidirectional) ─► memory (B, N, D)
                                                                          │ keys, values
    caption ids (B, T) ─► TextEmbedder ─► Trunk (causal, cross-attention) ─► LMHead ─► logits (B, T, vocab)

The same Trunk class serves both halves: the encoder lets every patch see
every other patch; the decoder lets each word see the words before it, and
in each block reads from the image's patch tokens (queries from the words,
keys and values from the memory).
"""

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from multitx.config.rules import POSITIVE, RATE, Numbers, Text, Whole
from multitx.config.settings import from_data, section, setting
from multitx.nn.kv_cache import KVCache
from multitx.nn.patches import PatchTokenizer, TokenizerSettings, build_tokenizer, check_patches
from multitx.nn.positions import WORD_POSITIONS, check_rotary
from multitx.nn.readouts import LMHead
from multitx.nn.text_embedder import TextEmbedder
from multitx.nn.trunk import Trunk, TrunkConfig


@dataclass
class CaptionerConfig:
    vocab_size: int = from_data()  # the word vocabulary's size
    pad_id: int = from_data(default=0)  # caption padding: ignored by the loss, masked in attention
    unk_id: int = from_data(default=3)  # what word dropout puts in place of a word
    in_channels: int = from_data(default=3)
    # image encoder
    image_size: int = setting(48, Whole(min=1), "images are resized to image_size x image_size")
    patch_size: int = setting(6, Whole(min=1), "must divide image_size")
    # A registered name ("conv", "linear", "convstem"), or a mapping {name | _target_, module, positions,
    # cls_token, ...}: anything multitx.nn.patches.build_tokenizer takes.
    tokenizer: Any = section(dict, "the PatchTokenizer (nn/patches.py)", schema=TokenizerSettings, cls_token=False)
    encoder: TrunkConfig = section(TrunkConfig, "the encoder trunk: bidirectional, over the patch tokens", dim=128,
                                   layers=3, heads=4)
    encoder_pretrained: str | None = setting(None, Text(prefix="timm:", null=True),
                                             "timm:NAME starts the encoder from a timm ViT")
    image_mean: tuple[float, ...] = setting((0.5, 0.5, 0.5), Numbers(count=3), "per channel; images arrive in [0, 1]")
    image_std: tuple[float, ...] = setting((0.5, 0.5, 0.5), Numbers(count=3, each=POSITIVE), "per channel")
    # text decoder
    decoder: TrunkConfig = section(TrunkConfig, "the decoder trunk: causal over the words, cross-attending to the "
                                   "encoder's tokens", dim=128, layers=3, heads=4)
    positions: str = setting("learned", WORD_POSITIONS, "caption word positions: learned | sinusoidal | rotary")
    max_caption_len: int = setting(24, Whole(min=3), "tokens, <bos> and <eos> included; longer captions are cut")
    # In training, this share of the decoder's input words (not <bos>) is replaced by <unk>, so that
    # the next word cannot always be guessed from the words before it: the decoder must read the image.
    word_dropout: float = setting(0.0, RATE, "share of decoder input words replaced by <unk> in training")
    label_smoothing: float = setting(0.0, RATE, "of the training loss's targets")

    def check(self, prefix: str = "model") -> None:
        self.encoder.check(f"{prefix}.encoder")
        self.decoder.check(f"{prefix}.decoder")
        check_rotary(self.positions, self.decoder, prefix)
        check_patches(self.image_size, self.patch_size, self.tokenizer, self.encoder.dim, prefix)


class Captioner(nn.Module):
    """encode(images) -> memory; decode(ids, memory) -> logits; forward does both and the loss.

    tokenizer: pass your own PatchTokenizer (dim = config.encoder.dim) to replace
    the one config.tokenizer names.
    """

    def __init__(self, config: CaptionerConfig, tokenizer: PatchTokenizer | None = None):
        super().__init__()
        self.config = c = config
        self.tokenizer = tokenizer or build_tokenizer(c.tokenizer, image_size=c.image_size, patch_size=c.patch_size,
                                                      in_channels=c.in_channels, dim=c.encoder.dim)
        self.encoder = Trunk(c.encoder)
        # The decoder reads the memory at its own width.
        self.bridge = nn.Linear(c.encoder.dim, c.decoder.dim) if c.encoder.dim != c.decoder.dim else nn.Identity()
        self.embed = TextEmbedder(c.vocab_size, c.decoder.dim, c.max_caption_len, positions=c.positions,
                                  dropout=c.decoder.dropout)
        self.decoder = Trunk(c.decoder, causal=True, cross_attention=True,
                             rotary_positions=c.max_caption_len if c.positions == "rotary" else 0)
        self.head = LMHead(c.decoder.dim, c.vocab_size, tie_to=self.embed.token)
        self.register_buffer("mean", torch.tensor(c.image_mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(c.image_std).view(1, -1, 1, 1), persistent=False)
        self._register_load_state_dict_pre_hook(rename_former_tensors)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W), floats in [0, 1] -> memory (B, N, D): the patch tokens the decoder reads."""
        tokens = self.tokenizer((images - self.mean) / self.std)  # (B, N, De)
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

    def forward(self, images: torch.Tensor, ids: torch.Tensor, *, label_smoothing: float | None = None):
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
        smoothing = self.config.label_smoothing if label_smoothing is None else label_smoothing
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=self.config.pad_id,
                               label_smoothing=smoothing)
        return logits, loss

    def new_cache(self, batch: int, *, device=None, dtype=None) -> KVCache:
        """An empty decoder KV cache for `batch` captions of up to max_caption_len tokens."""
        weight = self.embed.token.weight
        return self.decoder.new_cache(batch, self.config.max_caption_len, device=device or weight.device,
                                      dtype=dtype or weight.dtype)

    def no_weight_decay(self) -> set[str]:
        names = {f"tokenizer.{n}" for n in self.tokenizer.no_weight_decay()} | {"embed.position"}
        return names & {n for n, _ in self.named_parameters()}

    def matrix_parameters(self) -> list[nn.Parameter]:
        """Both trunks' weight matrices (Muon's share), the encoder's first."""
        return self.encoder.matrices() + self.decoder.matrices()

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())



def rename_former_tensors(state_dict, prefix, *args) -> None:
    """Checkpoints written before multitx 0.2 named the patch tokenizer `patches`; it is `tokenizer`, as in a ViT."""
    for key in [k for k in state_dict if k.startswith(prefix + "patches.")]:
        state_dict[prefix + "tokenizer." + key[len(prefix + "patches."):]] = state_dict.pop(key)
