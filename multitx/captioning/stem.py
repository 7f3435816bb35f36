"""A convolutional stem: a PatchTokenizer written outside multitx.vision and registered by name.

    model.tokenizer.name=stem model.tokenizer.module=multitx.captioning.stem   (task=caption's default)
    model.tokenizer._target_=multitx.captioning.stem.ConvStem                 (the same, by import path)

One linear map per patch (LinearPatches, ConvPatches) must tell a small
triangle from a small circle on its own, wherever the shape falls in the
patch. A few 3x3 convolutions first ("Early convolutions help transformers
see better", Xiao et al. 2021) learn those local features much faster: each
stride-2 step halves the resolution, log2(patch_size) of them make one token
per patch, and a 1x1 convolution sets the width. It is the captioning
benchmark's tokenizer; it plugs in through the same PatchTokenizer API as
the built-in ones. Unlike multitx.vision's `convstem` it has no BatchNorm and
widens as it downsamples (32, 64, 128 channels); on data=shapes it ended
training with the better captions of the two.
"""

import torch
from einops import rearrange
from torch import nn

from multitx.errors import UserError
from multitx.vision.patches import PatchTokenizer, register_tokenizer


@register_tokenizer("stem")
class ConvStem(PatchTokenizer):
    """(B, C, H, W) -> log2(patch) x [3x3 conv, stride 2, GELU] -> 1x1 conv -> (B, h*w, D)."""

    def __init__(self, *, stem_width: int = 32, **kwargs):
        super().__init__(**kwargs)
        ph, pw = self.patch_size
        steps = ph.bit_length() - 1
        if ph != pw or ph != 2**steps or steps < 1:
            raise UserError(f"the conv stem needs a square power-of-two patch size (2, 4, 8, 16), got {ph}x{pw}")
        layers, width = [], self.in_channels
        for i in range(steps):
            out = stem_width * 2**i  # channels double as resolution halves
            layers += [nn.Conv2d(width, out, kernel_size=3, stride=2, padding=1), nn.GELU()]
            width = out
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Conv2d(width, self.dim, kernel_size=1)

    def embed_patches(self, images: torch.Tensor) -> torch.Tensor:
        features = self.proj(self.convs(images))  # (B, D, h, w)
        return rearrange(features, "b d h w -> b (h w) d")  # (B, h*w, D)
