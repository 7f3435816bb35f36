"""A Vision Transformer: patch tokenizer -> encoder trunk -> classifier head.

    images (B, C, H, W) --tokenizer--> tokens (B, N, D) --trunk--> (B, N, D) --head--> logits (B, classes)

The trunk is the same class that runs the char GPT, here without the causal
mask. Any PatchTokenizer fits, the built-in ones or a user's own.
"""

from collections.abc import Mapping

import torch
from torch import nn

from multitx.errors import UserError
from multitx.nn.heads import ClassifierHead
from multitx.nn.patches import PatchTokenizer, build_tokenizer
from multitx.nn.trunk import Trunk


class ViT(nn.Module):
    """images (B, C, H, W) -> class logits (B, classes).

    With `pool="cls"` only the CLS token's output is read, so the trunk's last block
    computes attention, projection and MLP for that one token alone (keys and
    values still come from every token; Trunk's `queries=1`). The logits are exactly
    those of the full computation; it skips work that would be thrown away.
    """

    def __init__(self, tokenizer: PatchTokenizer, trunk: Trunk, head: ClassifierHead):
        super().__init__()
        if tokenizer.dim != trunk.dim:
            raise UserError(f"the tokenizer makes {tokenizer.dim}-wide tokens but the trunk is {trunk.dim} wide")
        if trunk.causal:
            raise UserError("a ViT's trunk sees every patch at once: build it with causal=False")
        if head.pool == "cls" and tokenizer.num_prefix_tokens == 0:
            raise UserError("pool=cls reads the CLS token, but the tokenizer has none: "
                            "set model.tokenizer.cls_token=true or model.pool=mean")
        self.tokenizer, self.trunk, self.head = tokenizer, trunk, head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.tokenizer(images)  # (B, N, D)
        queries = 1 if self.head.pool == "cls" else None  # only CLS is read: the last block computes it alone
        return self.head(self.trunk(tokens, queries=queries), self.tokenizer.num_prefix_tokens)  # (B, classes)

    def no_weight_decay(self) -> set[str]:
        """Parameter names the optimizer leaves undecayed: the CLS token and learned positions."""
        names = {f"tokenizer.{n}" for n in self.tokenizer.no_weight_decay()}
        return names & {n for n, _ in self.named_parameters()}


def build_vit(*, image_size=32, patch_size=4, in_channels: int = 3, classes: int = 10, dim: int = 192,
              layers: int = 9, heads: int = 12, mlp_ratio: float = 2.0, dropout: float = 0.0, drop_path: float = 0.0,
              pool: str = "cls", tokenizer="conv", positions: str = "learned", cls_token: bool | None = None,
              activation: str = "gelu", **tokenizer_options) -> ViT:
    """A ViT from plain settings. `tokenizer` is a PatchTokenizer instance, a
    PatchTokenizer subclass, a registered name ("conv", "linear"), an import path
    ("my_pkg.MyTokenizer") or a config mapping; classes get image_size, patch_size,
    in_channels, dim, positions, cls_token and any `tokenizer_options`.
    cls_token defaults to pool == "cls". Biases and LayerNorm eps 1e-6 as in timm."""
    if pool not in ("cls", "mean"):
        raise UserError(f"model.pool must be cls or mean, got {pool!r}")
    if not isinstance(tokenizer, PatchTokenizer):
        defaults = {"positions": positions, "cls_token": pool == "cls" if cls_token is None else cls_token}
        if isinstance(tokenizer, Mapping):  # a config's own settings win over these defaults
            defaults = {k: v for k, v in defaults.items() if tokenizer.get(k) is None}
        tokenizer_options = {**defaults, **tokenizer_options}
    if dim % heads:
        raise UserError(f"model.dim={dim} is not divisible by model.heads={heads}")
    tok = build_tokenizer(tokenizer, image_size=image_size, patch_size=patch_size, in_channels=in_channels, dim=dim,
                          **tokenizer_options)
    trunk = Trunk(dim=dim, layers=layers, heads=heads, mlp_ratio=mlp_ratio, dropout=dropout, bias=True,
                  drop_path=drop_path, norm_eps=1e-6, activation=activation)
    return ViT(tok, trunk, ClassifierHead(dim, classes, pool=pool, dropout=dropout))


def vit_from_settings(model: Mapping, *, image_size, in_channels: int, classes: int) -> ViT:
    """The ViT that a run's `model:` settings describe (as plain values), for its data's channels and classes."""
    keys = ("patch_size", "dim", "layers", "heads", "mlp_ratio", "dropout", "drop_path", "pool", "tokenizer",
            "activation")
    return build_vit(image_size=image_size, in_channels=in_channels, classes=classes,
                     **{key: model[key] for key in keys if key in model})
