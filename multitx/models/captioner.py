"""The captioner: an image encoder and a text decoder, joined in one of two ways (model.fusion).

cross (the default): the decoder cross-attends to the image.

    images (B, 3, H, W) ─► PatchTokenizer ─► Trunk (bidirectional) ─► memory (B, N, D)
                                                                          │ keys, values
    caption ids (B, T) ─► TextEmbedder ─► Trunk (causal, cross-attention) ─► LMHead ─► logits (B, T, vocab)

prefix: the image's tokens go before the words in one causal trunk (nanoVLM, LLaVA).

    images ─► PatchTokenizer ─► Trunk (bidirectional) ─► ModalityProjector ─► memory (B, N, D) ─┐
                                   (pixel shuffle s: N = h/s * w/s; then Linear De*s*s -> D)      │ first
    caption ids (B, T) ─► TextEmbedder ─────────────────────────────────────────► (B, T, D) ──────┤ then
                                                                                                  ▼
                     Trunk (prefix-LM mask, no cross-attention) over (B, N + T, D) ─► last T ─► LMHead

The same Trunk class serves every part: the encoder lets every patch see every other
patch; the decoder lets each word see the words before it, and reads the image either in
a cross-attention of each block (queries from the words, keys and values from the
memory) or, with prefix fusion, in its one self-attention, whose keys are the image's N
tokens followed by the words.
"""

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from multitx.config.rules import POSITIVE, RATE, Choice, Numbers, Text, Whole
from multitx.config.settings import from_data, section, setting
from multitx.errors import UserError
from multitx.nn.kv_cache import KVCache
from multitx.nn.patches import PatchTokenizer, TokenizerSettings, build_tokenizer, check_grid, check_patches
from multitx.nn.positions import WORD_POSITIONS, check_rotary
from multitx.nn.projector import ModalityProjector, ProjectorConfig, check_shuffle
from multitx.nn.readouts import LMHead
from multitx.nn.text_embedder import TextEmbedder
from multitx.nn.trunk import Trunk, TrunkConfig


@dataclass
class CaptionerConfig:
    vocab_size: int = from_data()  # the word vocabulary's size
    pad_id: int = from_data(default=0)  # caption padding: ignored by the loss, masked in attention
    unk_id: int = from_data(default=3)  # what word dropout puts in place of a word
    eos_id: int = from_data(default=2)  # ends a caption: scored, and nothing after it is (pad_id may equal it)
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
    # how the decoder reads the image: cross-attention to the encoder's tokens in each block, or the image's
    # tokens (through the modality projector) before the words in the decoder's one self-attention.
    fusion: str = setting("cross", Choice(options=("cross", "prefix")),
                          "cross: the decoder cross-attends to the image | prefix: the image's tokens go before "
                          "the words in one causal trunk", before="cross")
    projector: ProjectorConfig = section(ProjectorConfig, "fusion=prefix: the modality projector from the encoder's "
                                         "patch tokens to the decoder's width (nn/projector.py)")
    # text decoder
    decoder: TrunkConfig = section(TrunkConfig, "the decoder trunk: causal over the words, reading the encoder's "
                                   "tokens (model.fusion)", dim=128, layers=3, heads=4)
    decoder_pretrained: str | None = setting(None, Text(prefix="hf:", null=True),
                                             "hf:FOLDER starts the decoder from a GPT-2 (config.json, "
                                             "model.safetensors, tokenizer.json) and writes captions in its tokens")
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
        if self.fusion == "prefix" and self.image_size is not None and self.patch_size is not None:
            check_shuffle(check_grid(self.image_size, self.patch_size), self.projector.shuffle, prefix)
        if self.fusion != "prefix" and self.projector.shuffle != 1:
            raise UserError(f"{prefix}.projector.shuffle={self.projector.shuffle} is for {prefix}.fusion=prefix "
                            f"(cross-attention reads every patch token); set {prefix}.fusion=prefix or leave it 1")


class Captioner(nn.Module):
    """encode(images) -> memory; decode(ids, memory) -> logits; forward does both and the loss.

    One class for both ways of joining image and text (config.fusion); only the decoder's wiring
    differs, the public calls are the same, so decoding, the caption task, inspect and explore
    use either alike.

    fusion=prefix, the mask of the decoder's self-attention over [image tokens | words]: a prefix-LM
    mask. The image's N tokens see each other both ways (the image is given whole: no image token
    needs to wait for a later one, and the encoder's tokens were bidirectional already); each word
    sees every image token and the words before it, never a later word (the decoder writes left to
    right, so teacher forcing must hide the future as generation does). N = 2, T = 3:

                  keys:  i0 i1 w0 w1 w2
        query i0          x  x  .  .  .
        query i1          x  x  .  .  .
        query w0          x  x  x  .  .
        query w1          x  x  x  x  .
        query w2          x  x  x  x  x

    Only the words are scored: the trunk's outputs at the image positions never reach the head
    (nothing is predicted there), so the loss is the mean over the caption's real tokens, as with
    cross-attention. A CLS token of the tokenizer (a timm encoder has one) is left out of the image
    prefix: the pixel shuffle needs the patch grid, and CLS summarises the same patches.

    tokenizer: pass your own PatchTokenizer (dim = config.encoder.dim) to replace
    the one config.tokenizer names.
    """

    def __init__(self, config: CaptionerConfig, tokenizer: PatchTokenizer | None = None):
        super().__init__()
        self.config = c = config
        self.tokenizer = tokenizer or build_tokenizer(c.tokenizer, image_size=c.image_size, patch_size=c.patch_size,
                                                      in_channels=c.in_channels, dim=c.encoder.dim)
        self.encoder = Trunk(c.encoder)
        self.prefix_fusion = c.fusion == "prefix"
        if self.prefix_fusion:  # the image's tokens at the decoder's width, before the words
            self.projector = ModalityProjector(c.encoder.dim, c.decoder.dim, self.tokenizer.grid, c.projector.shuffle)
        else:  # the decoder reads the memory at its own width
            self.bridge = nn.Linear(c.encoder.dim, c.decoder.dim) if c.encoder.dim != c.decoder.dim else nn.Identity()
        self.embed = TextEmbedder(c.vocab_size, c.decoder.dim, c.max_caption_len, positions=c.positions,
                                  dropout=c.decoder.dropout)
        # With prefix fusion rotary positions run over the whole sequence: the image's N, then the words.
        self.decoder = Trunk(c.decoder, causal=True, cross_attention=not self.prefix_fusion,
                             rotary_positions=self.image_prefix + c.max_caption_len if c.positions == "rotary" else 0)
        self.head = LMHead(c.decoder.dim, c.vocab_size, tie_to=self.embed.token)
        self.register_buffer("mean", torch.tensor(c.image_mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(c.image_std).view(1, -1, 1, 1), persistent=False)
        self._register_load_state_dict_pre_hook(rename_former_tensors)

    @property
    def image_prefix(self) -> int:
        """N, the positions the image's tokens take before the words in the decoder (0 with cross-attention)."""
        return self.projector.num_tokens if self.prefix_fusion else 0

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W), floats in [0, 1] -> memory (B, N, D): the image's tokens the decoder reads
        (cross: its keys and values; prefix: the tokens before the words)."""
        tokens = self.encoder(self.tokenizer((images - self.mean) / self.std))  # (B, n, De)
        if self.prefix_fusion:
            return self.projector(tokens[:, self.tokenizer.num_prefix_tokens:])  # (B, N, D): CLS left out
        return self.bridge(tokens)  # (B, N, D)

    def decode(self, ids: torch.Tensor, memory: torch.Tensor, *, mask: torch.Tensor | None = None,
               cache: KVCache | None = None) -> torch.Tensor:
        """ids (B, T) of the words at positions start .. -> logits (B, T, vocab).

        mask (B, T): True for real tokens, False for padding. With a cache, only
        the new tokens pass through. The image is read on the first call and kept in
        the cache from then on: cross, each layer's keys and values of the memory;
        prefix, the memory's N tokens go through the trunk before the words, their
        keys and values the cache's first N positions.
        """
        if not self.prefix_fusion:
            start = 0 if cache is None else cache.length
            x = self.embed(ids, start)  # (B, T, D)
            x = self.decoder(x, memory=memory, mask=mask, cache=cache)  # (B, T, D)
            return self.head(x)  # (B, T, vocab)
        n = self.image_prefix
        if cache is not None and cache.length > 0:  # the image is in the cache: the words alone
            x = self.decoder(self.embed(ids, cache.length - n), cache=cache, bidirectional_prefix=n)  # (B, T, D)
            return self.head(x)
        x = torch.cat([memory, self.embed(ids, 0)], dim=1)  # (B, N + T, D): the image, then the words
        if mask is not None:
            mask = torch.cat([mask.new_ones(mask.shape[0], n), mask], dim=1)  # (B, N + T): the image is never padding
        x = self.decoder(x, mask=mask, cache=cache, bidirectional_prefix=n)  # (B, N + T, D)
        return self.head(x[:, n:])  # (B, T, vocab): only the words are read out

    def forward(self, images: torch.Tensor, ids: torch.Tensor, *, label_smoothing: float | None = None):
        """Teacher forcing. images (B, 3, H, W) in [0, 1]; ids (B, T+1) = <bos> w1 .. wn <eos> <pad>...,
        or (B, R, T+1): R captions of each image, decoded against one encoding of it.

        The decoder reads ids[..., :-1] and is scored on predicting ids[..., 1:];
        padded positions are masked out of attention and ignored by the loss (as are
        the image's positions with prefix fusion: decode reads out the words alone).
        Returns (logits (B*R, T, vocab), mean cross-entropy per real token).
        """
        memory = self.encode(images)  # (B, N, D)
        if ids.dim() == 3:
            memory = memory.repeat_interleave(ids.shape[1], dim=0)  # (B*R, N, D): each image once per caption
            ids = ids.flatten(0, 1)  # (B*R, T+1)
        real = real_tokens(ids, self.config.eos_id, self.config.pad_id)  # (B*R, T+1): <bos> .. <eos>, no padding
        inputs, targets = ids[:, :-1], ids[:, 1:].masked_fill(~real[:, 1:], IGNORED)  # (B*R, T) each
        mask = real[:, :-1]
        if self.training and self.config.word_dropout > 0:
            drop = (torch.rand(inputs.shape, device=inputs.device) < self.config.word_dropout) & mask
            drop[:, 0] = False  # <bos> stays
            inputs = inputs.masked_fill(drop, self.config.unk_id)
        logits = self.decode(inputs, memory, mask=mask)
        smoothing = self.config.label_smoothing if label_smoothing is None else label_smoothing
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORED,
                               label_smoothing=smoothing)
        return logits, loss

    def new_cache(self, batch: int, *, device=None, dtype=None) -> KVCache:
        """An empty decoder KV cache for `batch` captions of up to max_caption_len tokens (after the image's
        N tokens, with prefix fusion)."""
        weight = self.embed.token.weight
        return self.decoder.new_cache(batch, self.image_prefix + self.config.max_caption_len,
                                      device=device or weight.device, dtype=dtype or weight.dtype)

    def no_weight_decay(self) -> set[str]:
        names = {f"tokenizer.{n}" for n in self.tokenizer.no_weight_decay()} | {"embed.position"}
        return names & {n for n, _ in self.named_parameters()}

    def matrix_parameters(self) -> list[nn.Parameter]:
        """Both trunks' weight matrices (Muon's share), the encoder's first; the projector's stays with AdamW,
        as the cross-attention bridge's does."""
        return self.encoder.matrices() + self.decoder.matrices()

    def parts(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """The captioner's parameters by part (PARTS), each trained, frozen (freeze=) or scaled (lr_scale.) as one:
        encoder (patch tokenizer and encoder trunk), projector (fusion=prefix's modality projector, or cross's
        bridge between the widths), cross (the decoder's cross-attention layers and their norms), decoder (the
        rest of the decoder: word embeddings, self-attention and MLP blocks, final norm; the head is tied)."""
        found = {part: [] for part in PARTS}
        for name, param in self.named_parameters():
            if name.startswith(("tokenizer.", "encoder.")):
                part = "encoder"
            elif name.startswith(("projector.", "bridge.")):
                part = "projector"
            elif ".cross." in name or ".norm_cross." in name:
                part = "cross"
            else:
                part = "decoder"
            found[part].append((name, param))
        return found

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())



PARTS = ("encoder", "projector", "cross", "decoder")  # what freeze= and lr_scale. name (Captioner.parts)
IGNORED = -100  # a target the loss skips: padding


def real_tokens(ids: torch.Tensor, eos_id: int, pad_id: int | None = None) -> torch.Tensor:
    """ids (..., L) = <bos> w1 .. wn <eos> <pad>... -> (..., L) bool: True up to and including the first <eos>
    after <bos>, and never at a padding id where padding has an id of its own (pad_id, if it is not <eos>'s).
    Read from the <eos> first: GPT-2's tokenizer has one end-of-text token for <bos>, <eos> and padding alike,
    and its first <eos> is a target the decoder must learn to write."""
    ends = ids == eos_id
    ends[..., 0] = False  # <bos> may be the end-of-text token itself
    real = (ends.cumsum(-1) - ends.long()) == 0  # no <eos> before this position
    if pad_id is not None and pad_id != eos_id:  # ids given padded without an <eos> (a word vocabulary's <pad>)
        real &= ids != pad_id
    return real


def scored_tokens(ids: torch.Tensor, eos_id: int, pad_id: int | None = None) -> int:
    """How many targets the loss of a batch of captions ids (..., L) scores: its real tokens after <bos>."""
    return int(real_tokens(ids, eos_id, pad_id)[..., 1:].sum())


def rename_former_tensors(state_dict, prefix, *args) -> None:
    """Checkpoints written before multitx 0.2 named the patch tokenizer `patches`; it is `tokenizer`, as in a ViT."""
    for key in [k for k in state_dict if k.startswith(prefix + "patches.")]:
        state_dict[prefix + "tokenizer." + key[len(prefix + "patches."):]] = state_dict.pop(key)
