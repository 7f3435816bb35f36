"""Starting the caption encoder from a timm ViT: model.encoder_pretrained=timm:NAME.

The vision side's converter (multitx.models.from_timm) turns a timm
VisionTransformer into a multitx ViT, a PatchTokenizer plus a Trunk: the same
two modules the captioner's encoder is made of, so their weights move over as
they are. The encoder's shape (width, depth, heads, biases, CLS token) and the
normalisation the weights expect are taken from the timm model and written
into the run's config, so that `multitx.caption` rebuilds the same network
from config.yaml without timm or a download.
"""

from omegaconf import DictConfig

from multitx.errors import UserError
from multitx.models.captioner import Captioner

PREFIX = "timm:"


def timm_name(spec: str) -> str:
    if not str(spec).startswith(PREFIX) or len(str(spec)) == len(PREFIX):
        raise UserError(f"model.encoder_pretrained={spec}: write timm:NAME, e.g. "
                        f"timm:vit_tiny_patch16_224.augreg_in21k")
    return str(spec)[len(PREFIX):]


def load_vit(spec: str, image_size: int, patch_size: int):
    """The multitx ViT and timm pretrained config of `timm:NAME` (downloaded once by timm),
    with its position table resampled to image_size and its patch kernel to patch_size."""
    from multitx.models.from_timm import timm_pretrained

    return timm_pretrained(timm_name(spec), classes=1, image_size=image_size, patch_size=patch_size)


def encoder_settings(vit, pretrained_cfg: dict | None = None) -> dict:
    """The `model.*` values that give the captioner's encoder the shape of `vit`."""
    trunk, tok = vit.trunk, vit.tokenizer
    block = trunk.blocks[0]
    settings = {
        "encoder_dim": trunk.dim, "encoder_layers": len(trunk.blocks), "encoder_heads": trunk.heads,
        "encoder_mlp_ratio": block.mlp.fc.out_features / trunk.dim, "encoder_bias": block.attn.proj.bias is not None,
        "encoder_norm_eps": float(trunk.norm_out.eps), "image_size": tok.image_size[0], "patch_size": tok.patch_size[0],
        "tokenizer.name": "conv", "tokenizer._target_": None,
        "tokenizer.positions": "learned" if tok.position is not None else "none",
        "tokenizer.cls_token": tok.cls is not None,
    }
    if pretrained_cfg and pretrained_cfg.get("mean") and pretrained_cfg.get("std"):
        settings["image_mean"] = [float(x) for x in pretrained_cfg["mean"]]
        settings["image_std"] = [float(x) for x in pretrained_cfg["std"]]
    return settings


def apply_settings(model_cfg: DictConfig, settings: dict) -> None:
    """Write encoder settings into the run's `model:` config (shown in config.yaml)."""
    for key, value in settings.items():
        node, _, leaf = key.rpartition(".")
        (model_cfg[node] if node else model_cfg)[leaf] = value


def copy_encoder(model: Captioner, vit) -> None:
    """vit.tokenizer -> model.patches, vit.trunk -> model.encoder; every tensor must fit."""
    for target, source, what in ((model.patches, vit.tokenizer, "patch tokenizer"), (model.encoder, vit.trunk,
                                                                                     "trunk")):
        try:
            target.load_state_dict(source.state_dict(), strict=True)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0][:200]
            raise UserError(f"the pretrained ViT's {what} does not fit the caption encoder ({first}); "
                            f"leave the model.encoder_* settings to the timm model") from None
