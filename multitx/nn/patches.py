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

Three ways to use one, none of which edits multitx:
  - from Python: `build_vit(tokenizer=MyTokenizer, ...)` (a class, an instance, or a name);
  - by import path: `python -m multitx.train task=vit_cifar model.tokenizer._target_=my_pkg.MyTokenizer`;
  - by name: decorate the class with `@register_tokenizer("mine")`, then `model.tokenizer.name=mine`
    (from the command line add `model.tokenizer.module=my_pkg` so that the module defining it is imported).
"""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from multitx.config.rules import Choice, Flag, Names, Numbers, Text, Whole
from multitx.config.settings import setting
from multitx.errors import UserError
from multitx.nn.positions import sincos_2d
from multitx.registry import Registry


@dataclass
class TokenizerSettings:
    """The keys of `model.tokenizer`; a tokenizer class of the user's may take more (+model.tokenizer.KEY=VALUE)."""
    name: str = setting("conv", Text(), "a registered tokenizer: conv | linear | convstem | yours")
    _target_: str | None = setting(None, Text(null=True), "or an import path, my_pkg.MyTokenizer (wins over name)")
    module: str | list | None = setting(None, Names(null=True),
                                        "imported first, so that the tokenizers it registers are known")
    positions: str = setting("learned", Choice(options=("learned", "sincos", "none")), "learned | sincos | none")
    cls_token: bool | None = setting(True, Flag(null=True), "prepend a CLS token for a classifier to read")
    stem_width: list | None = setting(None, Numbers(each=Whole(min=1), null=True),
                                      "convstem: the channels of each 3x3 convolution (null: D/4, D/2, D...)")


def pair(x) -> tuple[int, int]:
    """(H, W) from one number or two (a tuple, a list, a config list)."""
    values = list(x) if isinstance(x, Sequence) and not isinstance(x, str) else [x, x]
    if len(values) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        raise UserError(f"a size is one positive whole number or two ([H, W]), got {x!r}")
    return values[0], values[1]


def check_grid(image_size, patch_size) -> tuple[int, int]:
    """The patch grid (h, w) of an image size and a patch size, or one line if the patches do not tile it."""
    (H, W), (ph, pw) = pair(image_size), pair(patch_size)
    if H % ph or W % pw:
        raise UserError(f"image size {H}x{W} is not divisible by patch size {ph}x{pw}; "
                        f"choose a patch size that divides it, or set model.image_size")
    return H // ph, W // pw


def check_patches(image_size, patch_size, tokenizer, width: int, prefix: str) -> None:
    """The patches tile the image, and 2-D sin-cos positions can split the width in four."""
    if image_size is not None and patch_size is not None:
        check_grid(image_size, patch_size)
    if isinstance(tokenizer, dict) and tokenizer.get("positions") == "sincos" and width % 4:
        raise UserError(f"{prefix}.tokenizer.positions=sincos splits the width in four (rows and columns, sin and "
                        f"cos): {width} is not divisible by 4")


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
        self.grid = check_grid(image_size, patch_size)
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
            tokens = torch.cat([self.cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)  # (B, 1 + h*w, D)
        if self.position is not None:
            tokens = tokens + self.position
        return tokens

    def no_weight_decay(self) -> set[str]:
        return {"cls", "position"}


PATCH_TOKENIZERS = Registry("tokenizer", "model.tokenizer", PatchTokenizer, "multitx.PatchTokenizer")
register_tokenizer = PATCH_TOKENIZERS.register  # @register_tokenizer("mine"): then model.tokenizer.name=mine


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


def tokenizer_class(name: str | None = None, target: str | type | None = None, module=None) -> type[PatchTokenizer]:
    """The tokenizer class a config names: `target` is an import path (`my_pkg.MyTokenizer`),
    `name` a registered name (`conv`); `module` (a name or list of names) is imported first,
    so that the tokenizers it registers are known."""
    return PATCH_TOKENIZERS.resolve(name, target, module)


def build_tokenizer(tokenizer="conv", *, image_size, patch_size, in_channels: int, dim: int,
                    **options) -> PatchTokenizer:
    """A tokenizer from whatever names one: an instance (used as it is), a class, a
    registered name or import path (a string with a dot), or a config mapping
    {name | _target_, module, positions, cls_token, ...any keyword of the class}; in a mapping
    an option set to null is not passed (the class's own default)."""
    if isinstance(tokenizer, PatchTokenizer):
        if tokenizer.dim != dim:
            raise UserError(f"the tokenizer makes {tokenizer.dim}-wide tokens but the trunk is {dim} wide")
        return tokenizer
    if isinstance(tokenizer, Mapping):
        given = {k: v for k, v in tokenizer.items() if k not in ("name", "_target_", "module") and v is not None}
        options = {**given, **options}
        cls = tokenizer_class(tokenizer.get("name"), tokenizer.get("_target_"), tokenizer.get("module"))
    elif isinstance(tokenizer, str):
        cls = tokenizer_class(target=tokenizer) if "." in tokenizer else tokenizer_class(tokenizer)
    elif isinstance(tokenizer, type) and issubclass(tokenizer, PatchTokenizer):
        cls = tokenizer
    else:
        raise UserError(f"tokenizer must be a PatchTokenizer (class or instance), a name or a path, got {tokenizer!r}")
    try:
        return cls(image_size=image_size, patch_size=patch_size, in_channels=in_channels, dim=dim, **options)
    except TypeError as err:
        hint = ""
        if unexpected := re.search(r"unexpected keyword argument '(\w+)'", str(err)):
            key = f"model.tokenizer.{unexpected[1]}"
            hint = f"; if {key} is the recipe's option for another tokenizer, set it aside with {key}=null"
        raise UserError(f"could not build tokenizer {cls.__module__}.{cls.__qualname__} with options "
                        f"{sorted(options)}: {err}{hint}") from err


@register_tokenizer("convstem")
class ConvStemPatches(PatchTokenizer):
    """A small convolutional stem instead of one big-kernel projection ("Early Convolutions
    Help Transformers See Better", Xiao et al. 2021): log2(patch) 3x3 convolutions of
    stride 2, each followed by BatchNorm and GELU, then a 1x1 convolution to D. Same grid
    and token count as ConvPatches; the patch size must be a power of two.

    As in the paper, the channels double as the resolution halves and the last 3x3
    convolution has D: D/4, D/2, D for patch 8. stem_width: one width per convolution
    instead, or one number for all of them.
    """

    def __init__(self, *, stem_width: int | Sequence[int] | None = None, **kwargs):
        super().__init__(**kwargs)
        ph, pw = self.patch_size
        if ph != pw or ph < 2 or ph & (ph - 1):
            raise UserError(f"the convstem tokenizer needs a square power-of-two patch size (2, 4, 8...), "
                            f"got {ph}x{pw}; use conv or linear for others")
        convs = ph.bit_length() - 1  # each halves the height and width
        if stem_width is None:
            widths = [max(self.dim >> (convs - 1 - i), 8) for i in range(convs)]  # (..., D/4, D/2, D)
        elif isinstance(stem_width, Sequence):
            widths = list(stem_width)
        else:
            widths = [stem_width] * convs
        if len(widths) != convs or not all(isinstance(w, int) and w > 0 for w in widths):
            raise UserError(f"stem_width must be one positive width or {convs} of them (one per 3x3 convolution "
                            f"for patch size {ph}), got {stem_width!r}")
        layers, channels = [], self.in_channels
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.GELU()]
            channels = width
        self.stem = nn.Sequential(*layers)
        self.proj = nn.Conv2d(channels, self.dim, kernel_size=1)

    def embed_patches(self, images: torch.Tensor) -> torch.Tensor:
        features = self.proj(self.stem(images))  # (B, D, h, w)
        return rearrange(features, "b d h w -> b (h w) d")
