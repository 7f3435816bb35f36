"""The modality projector: an image encoder's patch tokens turned into tokens a text decoder reads as words.

    patch tokens (B, h*w, De) ─► pixel shuffle (s) ─► (B, h/s * w/s, De*s*s) ─► Linear ─► (B, N, D)

A prefix-fusion captioner (models/captioner.py, model.fusion=prefix) places these N tokens
before the caption's words in one causal trunk, as nanoVLM and LLaVA place a vision
encoder's tokens before the prompt. The linear layer moves them to the decoder's width D.

The pixel shuffle (nanoVLM's name; torch calls the image operation pixel_unshuffle, or
space-to-depth) first merges each s x s block of neighbouring patches into one token
holding their s*s vectors side by side: s*s times fewer image tokens for the decoder to
attend over, none of their channels lost. With s = 1 nothing is merged.

    patches of a 4 x 4 grid, s = 2:      a b | c d        tokens of the 2 x 2 grid:
                                         e f | g h   ─►   [a b e f]  [c d g h]
                                         ----+----        [i j m n]  [k l o p]
                                         i j | k l
                                         m n | o p

Letters: B batch, h x w the patch grid (row-major), De the encoder's width, s the shuffle,
N = (h/s)(w/s) image tokens, D the decoder's width.
"""

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from multitx.config.rules import Whole
from multitx.config.settings import setting
from multitx.errors import UserError


@dataclass
class ProjectorConfig:
    """`model.projector`: how a prefix-fusion captioner turns the image's patch tokens into decoder tokens."""
    shuffle: int = setting(1, Whole(min=1), "pixel shuffle: each s x s block of patches becomes one token of s*s "
                           "times the channels (must divide the patch grid; 1: none)")


def check_shuffle(grid: tuple[int, int], shuffle: int, prefix: str = "model") -> tuple[int, int]:
    """The grid (h/s, w/s) after the shuffle, or one line when s does not divide the patch grid."""
    h, w = grid
    if h % shuffle or w % shuffle:
        raise UserError(f"{prefix}.projector.shuffle={shuffle} does not divide the {h}x{w} patch grid: each "
                        f"{shuffle}x{shuffle} block of patches becomes one token; choose a divisor of {h} and {w}")
    return h // shuffle, w // shuffle


def pixel_shuffle(x: torch.Tensor, grid: tuple[int, int], shuffle: int) -> torch.Tensor:
    """x (B, h*w, C), the patches of an h x w grid row by row -> (B, h/s * w/s, s*s*C): each s x s block of
    neighbours, row by row within the block, concatenated into one token of the (h/s) x (w/s) grid."""
    h, w = check_shuffle(grid, shuffle)
    return rearrange(x, "b (h sr w sc) c -> b (h w) (sr sc c)", h=h, sr=shuffle, w=w, sc=shuffle)


class ModalityProjector(nn.Module):
    """(B, h*w, De) patch tokens -> (B, N, D) decoder tokens: pixel shuffle, then one linear map (no bias,
    as nanoVLM's; GPT-2's N(0, 0.02) start)."""

    def __init__(self, in_dim: int, out_dim: int, grid: tuple[int, int], shuffle: int = 1):
        super().__init__()
        self.shuffle = shuffle
        self.in_grid = tuple(grid)  # (h, w): the encoder's patches
        self.grid = check_shuffle(self.in_grid, shuffle)  # (h/s, w/s): the tokens the decoder reads
        self.num_tokens = self.grid[0] * self.grid[1]  # N
        self.proj = nn.Linear(in_dim * shuffle * shuffle, out_dim, bias=False)
        nn.init.normal_(self.proj.weight, std=0.02)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """patches (B, h*w, De) -> (B, N, D)."""
        return self.proj(pixel_shuffle(patches, self.in_grid, self.shuffle))  # (B, N, De*s*s) -> (B, N, D)
