"""A Vision Transformer: patch tokenizer -> encoder trunk -> classifier head.

    images (B, C, H, W) --tokenizer--> tokens (B, N, D) --trunk--> (B, N, D) --head--> logits (B, classes)

The trunk is the same class that runs the char GPT, here without the causal
mask. Any PatchTokenizer fits, the built-in ones or a user's own.
"""

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from multitx.config.rules import Choice, Size, Text
from multitx.config.settings import from_data, section, setting
from multitx.errors import UserError
from multitx.nn.patches import PatchTokenizer, TokenizerSettings, build_tokenizer, check_patches
from multitx.nn.readouts import ClassifierHead
from multitx.nn.trunk import Trunk, TrunkConfig


@dataclass
class ViTConfig:
    classes: int = from_data()  # the dataset's classes
    in_channels: int = from_data(default=3)  # 1 (grey) or 3 (RGB)
    image_size: Any = setting(32, Size(null=True), "[H, W] or one number: images are scaled and centre-cropped "
                              "to it (null: a pretrained model's own)")
    patch_size: Any = setting(4, Size(null=True), "must divide image_size (null: a pretrained model's own)")
    # A registered name ("conv", "linear", "convstem"), or a mapping {name | _target_, module, positions,
    # cls_token, ...any keyword of the tokenizer class}: anything multitx.nn.patches.build_tokenizer takes.
    tokenizer: Any = section(dict, "the PatchTokenizer (nn/patches.py)", schema=TokenizerSettings)
    trunk: TrunkConfig = section(TrunkConfig, "the trunk (nn/trunk.py)", dim=192, layers=9, heads=12, mlp_ratio=2.0,
                                 bias=True, norm_eps=1e-6)  # timm's ViT
    pool: str = setting("cls", Choice(options=("cls", "mean")),
                        "cls | mean: the classifier reads the CLS token, or the mean of the patch tokens")
    pretrained: str | None = setting(None, Text(prefix="timm:", null=True),
                                     "timm:MODEL_NAME starts from timm's pretrained weights (network needed once)")

    def check(self, prefix: str = "model") -> None:
        self.trunk.check(f"{prefix}.trunk")
        for key in ("image_size", "patch_size"):
            if getattr(self, key) is None and not self.pretrained:
                raise UserError(f"{prefix}.{key}=null means a pretrained model's own: give {prefix}.pretrained="
                                f"timm:NAME too, or a size")
        check_patches(self.image_size, self.patch_size, self.tokenizer, self.trunk.dim, prefix)
        if self.pool == "cls" and isinstance(self.tokenizer, dict) and self.tokenizer.get("cls_token") is False:
            raise UserError(f"{prefix}.pool=cls reads the CLS token, but {prefix}.tokenizer.cls_token=false; "
                            f"set {prefix}.tokenizer.cls_token=true or {prefix}.pool=mean")


class ViT(nn.Module):
    """images (B, C, H, W) -> class logits (B, classes).

    With `pool="cls"` only the CLS token's output is read, so the trunk's last block
    computes attention, projection and MLP for that one token alone (keys and
    values still come from every token; Trunk's `queries=1`). The logits are exactly
    those of the full computation; it skips work that would be thrown away.

    Built from its config (`ViT.from_config`, as training and multitx.load do), or assembled
    by hand from the three parts: ViT(tokenizer, trunk, head).
    """

    def __init__(self, tokenizer: PatchTokenizer, trunk: Trunk, head: ClassifierHead, *,
                 config: ViTConfig | None = None):
        super().__init__()
        if tokenizer.dim != trunk.dim:
            raise UserError(f"the tokenizer makes {tokenizer.dim}-wide tokens but the trunk is {trunk.dim} wide")
        if trunk.causal:
            raise UserError("a ViT's trunk sees every patch at once: build it with causal=False")
        if head.pool == "cls" and tokenizer.num_prefix_tokens == 0:
            raise UserError("pool=cls reads the CLS token, but the tokenizer has none: "
                            "set model.tokenizer.cls_token=true or model.pool=mean")
        self.tokenizer, self.trunk, self.head = tokenizer, trunk, head
        self.config = config  # what it was built from (None when assembled by hand)

    @classmethod
    def from_config(cls, config: ViTConfig, tokenizer: PatchTokenizer | None = None) -> "ViT":
        """The ViT `config` describes; `tokenizer`: your own PatchTokenizer (dim = config.trunk.dim)
        instead of the one config.tokenizer names."""
        c = config
        c.check()
        spec = c.tokenizer
        if isinstance(spec, dict) and spec.get("cls_token") is None:
            spec = {**spec, "cls_token": c.pool == "cls"}  # a CLS token exactly when the head reads one
        tokenizer = tokenizer or build_tokenizer(spec, image_size=c.image_size, patch_size=c.patch_size,
                                                 in_channels=c.in_channels, dim=c.trunk.dim)
        trunk = Trunk(c.trunk)  # built in this order: the same seed, the same initial weights
        head = ClassifierHead(c.trunk.dim, c.classes, pool=c.pool, dropout=c.trunk.dropout)
        return cls(tokenizer, trunk, head, config=c)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.tokenizer(images)  # (B, N, D)
        queries = 1 if self.head.pool == "cls" else None  # only CLS is read: the last block computes it alone
        return self.head(self.trunk(tokens, queries=queries), self.tokenizer.num_prefix_tokens)  # (B, classes)

    def no_weight_decay(self) -> set[str]:
        """Parameter names the optimizer leaves undecayed: the CLS token and learned positions."""
        names = {f"tokenizer.{n}" for n in self.tokenizer.no_weight_decay()}
        return names & {n for n, _ in self.named_parameters()}

    def pretrained_parameters(self) -> list[nn.Parameter]:
        """What came from pretrained weights (all but the new head), which fine-tuning trains at a lower rate."""
        if self.config is None or not self.config.pretrained:
            return []
        return [p for name, p in self.named_parameters() if not name.startswith("head.")]

    def matrix_parameters(self) -> list[nn.Parameter]:
        """The trunk's weight matrices (Muon's share); the tokenizer and head are not."""
        return self.trunk.matrices()


TRUNK_FIELDS = {f.name for f in fields(TrunkConfig)}


def build_vit(*, classes: int = 10, tokenizer="conv", positions: str = "learned", cls_token: bool | None = None,
              bias: bool = True, norm_eps: float = 1e-6, **settings) -> ViT:
    """A ViT from flat keywords, for Python use: build_vit(image_size=32, dim=192, layers=9, heads=12, classes=10).
    TrunkConfig's fields (dim, layers, heads, mlp_ratio, ...) go to the trunk, the rest to ViTConfig.
    `tokenizer`: a registered name, a config mapping, or a PatchTokenizer subclass or instance; a name or class
    gets `positions`, `cls_token` (default: pool == "cls") and any keyword the class takes (e.g. stem_width)."""
    trunk = TrunkConfig(bias=bias, norm_eps=norm_eps, **{k: settings.pop(k) for k in list(settings)
                                                         if k in TRUNK_FIELDS})
    vit_fields = {f.name for f in fields(ViTConfig)}
    options = {k: settings.pop(k) for k in list(settings) if k not in vit_fields}  # the tokenizer's own keywords
    config = ViTConfig(classes=classes, trunk=trunk, **settings)
    if isinstance(tokenizer, PatchTokenizer):
        return ViT.from_config(config, tokenizer)
    if isinstance(tokenizer, str) and "." not in tokenizer:
        tokenizer = {"name": tokenizer}
    elif isinstance(tokenizer, str | type):
        tokenizer = {"_target_": tokenizer}
    config.tokenizer = {"positions": positions, "cls_token": cls_token, **tokenizer, **options}
    return ViT.from_config(config)
