"""Starting the caption encoder from a timm ViT: model.encoder_pretrained=timm:NAME.

The vision side's converter (multitx.models.from_timm) turns a timm
VisionTransformer into a multitx ViT, a PatchTokenizer plus a Trunk: the same
two modules the captioner's encoder is made of, so their weights move over as
they are. The captioner's config takes the ViT's own config for its encoder
(`encoder`, `tokenizer`, sizes) and the normalisation the weights expect; the
run's config.yaml records that built config, so `multitx.load` rebuilds the
same network without timm or a download.
"""

from dataclasses import replace

from multitx.errors import UserError
from multitx.models.captioner import Captioner, CaptionerConfig

PREFIX = "timm:"


def timm_name(spec: str) -> str:
    if not str(spec).startswith(PREFIX) or len(str(spec)) == len(PREFIX):
        raise UserError(f"model.encoder_pretrained={spec}: write timm:NAME, e.g. "
                        f"timm:vit_tiny_patch16_224.augreg_in21k")
    return str(spec)[len(PREFIX):]


def captioner_from_timm(config: CaptionerConfig) -> Captioner:
    """A Captioner whose encoder is the timm ViT `config.encoder_pretrained` names (downloaded once by
    timm), its position table resampled to config.image_size and its patch kernel to config.patch_size.
    The returned model's config describes what was built: the ViT's encoder shape, not the YAML's."""
    from multitx.models.from_timm import timm_pretrained

    vit, pretrained_cfg = timm_pretrained(timm_name(config.encoder_pretrained), classes=1,
                                          image_size=config.image_size, patch_size=config.patch_size)
    v = vit.config
    built = replace(config, encoder=replace(v.trunk, dropout=config.encoder.dropout), tokenizer=v.tokenizer,
                    image_size=int(v.image_size[0]), patch_size=int(v.patch_size[0]))
    if pretrained_cfg.get("mean") and pretrained_cfg.get("std"):
        built = replace(built, image_mean=tuple(float(x) for x in pretrained_cfg["mean"]),
                        image_std=tuple(float(x) for x in pretrained_cfg["std"]))
    model = Captioner(built)
    for target, source, what in ((model.tokenizer, vit.tokenizer, "patch tokenizer"),
                                 (model.encoder, vit.trunk, "trunk")):
        try:
            target.load_state_dict(source.state_dict(), strict=True)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0][:200]
            raise UserError(f"the pretrained ViT's {what} does not fit the caption encoder ({first}); "
                            f"leave the model.encoder settings to the timm model") from None
    return model
