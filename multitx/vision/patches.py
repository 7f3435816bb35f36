"""Patch tokenizers: images (B, C, H, W) -> tokens (B, N, D) for the trunk.

This is multitx's public extension point. A tokenizer cuts an image into a
grid of h x w patches, turns each into a D-vector, adds position, and may
prepend a CLS token. Write your own by subclassing PatchTokenizer and
implementing `embed_patches`; positions, the CLS token and the size checks
come with the base class.

    class MyTokenizer(PatchTokenizer):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.proj = nn.Conv2d(self.in_channels, self.dim, self.patch_size, self.patch_size)
        def embed_patches(self, images):            # (B, C, H, W) -> (B, h*w, D)
            return rearrange(self.proj(images), "b d h w -> b (h w) d")
"""

import torch
from einops import rearrange
from torch import nn

from multitx.errors import UserError

TOKENIZERS: dict[str, type["PatchTokenizer"]] = {}


def register_tokenizer(name: str):
    """Class decorator: make a tokenizer available by name, e.g. model.tokenizer.name=NAME."""

    def add(cls):
        TOKENIZERS[name] = cls
        return cls

    return add


def pair(x) -> tuple[int, int]:
    return (int(x[0]), int(x[1])) if isinstance(x, (tuple, list)) else (int(x), int(x))


def sincos_2d(grid_h: int, grid_w: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """Fixed 2-D sin-cos positions (h*w, D): half the channels encode the row,
    half the column (as in MAE and "Better plain ViT baselines")."""
    if dim % 4:
        raise ValueError(f"2-D sin-cos positions need a width divisible by 4, got {dim}")
    rows, cols = torch.meshgrid(torch.arange(grid_h, dtype=torch.float32),
                                torch.arange(grid_w, dtype=torch.float32), indexing="ij")
    inv_freq = 1.0 / base ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))  # (D/4,)
    r = rows.flatten()[:, None] * inv_freq  # (h*w, D/4)
    c = cols.flatten()[:, None] * inv_freq
    return torch.cat([r.sin(), r.cos(), c.sin(), c.cos()], dim=1)  # (h*w, D)


class PatchTokenizer(nn.Module):
    """Base class: images (B, C, H, W) -> tokens (B, N, D), N = num_tokens.

    image_size: (H, W) or one int; patch_size: (ph, pw) or one int; each must
    divide the image size. positions: "learned" | "sincos" | "none". cls_token:
    prepend one learned token for a classifier to read (N = h*w + 1).
    Exposes `grid` (h, w), `num_patches`, `num_prefix_tokens`, `num_tokens`.
    """

    def __init__(self, *, image_size=32, patch_size=4, in_channels: int = 3, dim: int = 192,
                 positions: str = "learned", cls_token: bool = True):
        super().__init__()
        self.image_size, self.patch_size = pair(image_size), pair(patch_size)
        (H, W), (ph, pw) = self.image_size, self.patch_size
        if H % ph or W % pw:
            raise UserError(f"image size {H}x{W} is not divisible by patch size {ph}x{pw}; "
                            f"choose a patch size that divides it, or resize the images")
        self.grid = (H // ph, W // pw)
        self.in_channels, self.dim = in_channels, dim
        self.num_patches = self.grid[0] * self.grid[1]
        self.num_prefix_tokens = 1 if cls_token else 0
        self.cls = nn.Parameter(torch.zeros(1, 1, dim)) if cls_token else None
        if positions == "learned":
            self.position = nn.Parameter(torch.randn(1, self.num_tokens, dim) * 0.02)
        elif positions == "sincos":
            table = sincos_2d(*self.grid, dim)
            if cls_token:
                table = torch.cat([torch.zeros(1, dim), table])  # the CLS token has no place in the grid
            self.register_buffer("position", table[None], persistent=False)
        elif positions == "none":
            self.position = None
        else:
            raise UserError(f"positions must be learned, sincos or none, got {positions!r}")
        if self.cls is not None:
            nn.init.normal_(self.cls, std=1e-6)

    @property
    def num_tokens(self) -> int:
        return self.num_patches + self.num_prefix_tokens

    def embed_patches(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, h*w, D), patches in row-major order. Subclasses implement this."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if tuple(images.shape[-2:]) != self.image_size or images.shape[1] != self.in_channels:
            raise UserError(f"this model takes {self.in_channels}x{self.image_size[0]}x{self.image_size[1]} images, "
                            f"got {tuple(images.shape[1:])}; resize them or set model.image_size")
        tokens = self.embed_patches(images)  # (B, h*w, D)
        if self.cls is not None:
            tokens = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], dim=1)  # (B, 1 + h*w, D)
        if self.position is not None:
            tokens = tokens + self.position
        return tokens

    def no_weight_decay(self) -> set[str]:
        return {"cls", "position"}


@register_tokenizer("linear")
class LinearPatches(PatchTokenizer):
    """Cut into patches with one einops rearrange, then one Linear layer (ViT paper, eq. 1)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        ph, pw = self.patch_size
        self.proj = nn.Linear(ph * pw * self.in_channels, self.dim)

    def embed_patches(self, images: torch.Tensor) -> torch.Tensor:
        ph, pw = self.patch_size
        patches = rearrange(images, "b c (h ph) (w pw) -> b (h w) (ph pw c)", ph=ph, pw=pw)  # (B, h*w, ph*pw*C)
        return self.proj(patches)  # (B, h*w, D)


@register_tokenizer("conv")
class ConvPatches(PatchTokenizer):
    """One convolution with kernel = stride = patch size: the same maths as
    LinearPatches, laid out as timm's PatchEmbed (so timm weights load into it)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.proj = nn.Conv2d(self.in_channels, self.dim, kernel_size=self.patch_size, stride=self.patch_size)

    def embed_patches(self, images: torch.Tensor) -> torch.Tensor:
        return rearrange(self.proj(images), "b d h w -> b (h w) d")  # (B, D, h, w) -> (B, h*w, D)
