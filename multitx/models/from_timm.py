"""timm VisionTransformer weights in a multitx ViT.

The two are the same network under different names:

    timm                          multitx
    patch_embed.proj (Conv2d)     tokenizer.proj (ConvPatches; LinearPatches gets it flattened)
    cls_token, pos_embed          tokenizer.cls, tokenizer.position
    blocks.i.norm1                trunk.blocks.i.norm_attn
    blocks.i.attn.qkv (fused)     trunk.blocks.i.attn.to_qkv     (rows q, k, v; heads inside each)
    blocks.i.attn.proj            trunk.blocks.i.attn.proj
    blocks.i.norm2                trunk.blocks.i.norm_mlp
    blocks.i.mlp.fc1, fc2         trunk.blocks.i.mlp.fc, proj
    norm                          trunk.norm_out
    head                          head.proj

    vit = vit_from_timm(timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, num_classes=10))
    vit = timm_pretrained("vit_tiny_patch16_224.augreg_in21k", classes=10, image_size=224)  # needs network once

Only the plain ViT is covered (the ViT paper's, DeiT's and AugReg's): layer scale,
register tokens, QK-norm, fc_norm, attention pooling and friends are refused by name.
"""

import re
from dataclasses import replace

import torch
from einops import rearrange
from torch import nn

from multitx.errors import UserError
from multitx.models.vit import ViT, ViTConfig
from multitx.nn.trunk import TrunkConfig

BLOCK_NAMES = {
    "norm1": "norm_attn", "attn.qkv": "attn.to_qkv", "attn.proj": "attn.proj", "norm2": "norm_mlp",
    "mlp.fc1": "mlp.fc", "mlp.fc2": "mlp.proj",
}


def timm_config(model: nn.Module, *, tokenizer: str = "conv") -> ViTConfig:
    """The ViTConfig of a timm VisionTransformer's shape; refuses what multitx lacks."""
    problems = unsupported(model)
    if problems:
        raise UserError(f"cannot convert this timm model to a multitx ViT: {'; '.join(problems)}")
    block = model.blocks[0]
    dim = model.embed_dim
    trunk = TrunkConfig(dim=dim, layers=len(model.blocks), heads=block.attn.num_heads,
                        mlp_ratio=block.mlp.fc1.out_features / dim, bias=True, norm_eps=float(model.norm.eps))
    return ViTConfig(
        classes=model.num_classes, in_channels=model.patch_embed.proj.in_channels,
        image_size=list(model.patch_embed.img_size), patch_size=list(model.patch_embed.patch_size),
        tokenizer={"name": tokenizer, "_target_": None, "module": None,
                   "positions": "learned" if model.pos_embed is not None else "none",
                   "cls_token": model.cls_token is not None},
        trunk=trunk, pool="cls" if model.global_pool == "token" else "mean")


def unsupported(model: nn.Module) -> list[str]:
    """What in this timm model a multitx ViT cannot express (empty: convertible)."""
    identity = lambda m: m is None or isinstance(m, nn.Identity)  # noqa: E731
    found = []
    if type(model).__name__ != "VisionTransformer":
        found.append(f"{type(model).__name__} is not a timm VisionTransformer")
        return found
    if not hasattr(model.patch_embed, "proj") or not isinstance(model.patch_embed.proj, nn.Conv2d):
        found.append("its patch embedding is not one convolution")
    elif not identity(getattr(model.patch_embed, "norm", None)):
        found.append("a norm after the patch embedding")
    if model.num_classes == 0:
        found.append("no classifier head (num_classes=0)")
    if model.global_pool not in ("token", "avg"):
        found.append(f"global_pool={model.global_pool!r} (multitx pools cls or mean)")
    if getattr(model, "reg_token", None) is not None:
        found.append("register tokens")
    if getattr(model, "no_embed_class", False) and model.cls_token is not None:
        found.append("no_embed_class=True")
    if getattr(model, "dynamic_img_size", False):
        found.append("dynamic_img_size=True")
    for name in ("norm_pre", "fc_norm"):
        if not identity(getattr(model, name, None)):
            found.append(f"{name} (a LayerNorm before the blocks / after pooling)")
    if getattr(model, "attn_pool", None) is not None:
        found.append("attention pooling")
    if not isinstance(model.norm, nn.LayerNorm):
        found.append("no final LayerNorm")
    for i, blk in enumerate(model.blocks):
        if type(blk).__name__ != "Block":
            found.append(f"block {i} is a {type(blk).__name__}")
            break
        attn, mlp = blk.attn, blk.mlp
        extras = [n for n in ("ls1", "ls2") if not identity(getattr(blk, n, None))]
        extras += [f"attn.{n}" for n in ("q_norm", "k_norm", "norm") if not identity(getattr(attn, n, None))]
        extras += ["attn.gate"] if getattr(attn, "gate", None) is not None else []
        extras += ["mlp.norm"] if not identity(getattr(mlp, "norm", None)) else []
        if type(mlp).__name__ != "Mlp" or not isinstance(mlp.act, nn.GELU) or mlp.act.approximate != "none":
            extras.append("an MLP other than Linear-GELU-Linear")
        if attn.proj.bias is None or mlp.fc1.bias is None or blk.norm1.bias is None:
            extras.append("missing biases")
        if extras:
            found.append(f"block {i} has {', '.join(extras)}")
            break
    eps = {m.eps for m in model.modules() if isinstance(m, nn.LayerNorm)}
    if len(eps) > 1:
        found.append(f"LayerNorms with different eps {sorted(eps)}")
    return found


def convert_state_dict(state: dict[str, torch.Tensor], *, linear_patches: bool = False) -> dict[str, torch.Tensor]:
    """timm VisionTransformer state dict -> multitx ViT state dict (names, and a
    conv kernel flattened for LinearPatches). A missing qkv bias becomes zeros."""
    out = {}
    for name, tensor in state.items():
        if m := re.fullmatch(r"blocks\.(\d+)\.(.+)\.(weight|bias)", name):
            i, part, kind = m.groups()
            if part not in BLOCK_NAMES:
                raise UserError(f"unexpected timm tensor {name}")
            out[f"trunk.blocks.{i}.{BLOCK_NAMES[part]}.{kind}"] = tensor
        elif name == "patch_embed.proj.weight":
            out["tokenizer.proj.weight"] = (rearrange(tensor, "d c ph pw -> d (ph pw c)") if linear_patches
                                            else tensor)  # (D, C, ph, pw) or (D, ph*pw*C)
        elif name == "patch_embed.proj.bias":
            out["tokenizer.proj.bias"] = tensor
        elif name == "cls_token":
            out["tokenizer.cls"] = tensor  # (1, 1, D)
        elif name == "pos_embed":
            out["tokenizer.position"] = tensor  # (1, N, D)
        elif name.startswith("norm."):
            out["trunk.norm_out." + name.removeprefix("norm.")] = tensor
        elif name.startswith("head."):
            out["head.proj." + name.removeprefix("head.")] = tensor
        else:
            raise UserError(f"unexpected timm tensor {name}")
    for key in [k for k in out if k.endswith("attn.to_qkv.weight")]:
        bias = key.removesuffix("weight") + "bias"
        if bias not in out:  # qkv_bias=False in timm; multitx's trunk has the bias, so it is zero
            out[bias] = torch.zeros(out[key].shape[0], dtype=out[key].dtype)
    return out


def vit_from_timm(model: nn.Module, *, tokenizer: str = "conv", **trunk_overrides) -> ViT:
    """A multitx ViT with the shape and weights of a timm VisionTransformer; both
    give the same logits. tokenizer: "conv" or "linear". trunk_overrides: TrunkConfig
    fields that do not change the shape (dropout, drop_path)."""
    config = timm_config(model, tokenizer=tokenizer)
    config.trunk = replace(config.trunk, **trunk_overrides)
    vit = ViT.from_config(config)
    state = convert_state_dict(model.state_dict(), linear_patches=tokenizer == "linear")
    missing, unexpected = vit.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position") or config.tokenizer["positions"] == "learned"]
    if missing or unexpected:
        raise UserError(f"timm weights do not fit: missing {missing[:4]}, unexpected {unexpected[:4]}")
    return vit


def timm_input_size(name: str) -> tuple[int, int]:
    """(H, W) that timm model `name` was trained at, from its pretrained config: nothing is downloaded."""
    import timm

    found = timm.models.get_pretrained_cfg(name)
    if found is None or not getattr(found, "input_size", None):
        raise UserError(f"timm knows no pretrained config named {name!r}; give model.image_size=[H,W], or a timm "
                        f"model name such as vit_tiny_patch16_224.augreg_in21k")
    return tuple(found.input_size[-2:])


def timm_pretrained(name: str, *, classes: int, image_size, patch_size=None, in_channels: int = 3,
                    **trunk_overrides) -> tuple[ViT, dict]:
    """timm.create_model(name, pretrained=True) converted to a multitx ViT, with a
    new `classes`-way head. timm resamples the position table to `image_size`
    (and the patch kernel to `patch_size`, if given). Returns the model and timm's
    pretrained config (its mean and std are the normalisation the weights expect)."""
    import timm

    kwargs = {"num_classes": classes, "img_size": image_size, "in_chans": in_channels}
    if patch_size is not None:
        kwargs["patch_size"] = patch_size
    try:
        model = timm.create_model(name, pretrained=True, **kwargs)
    except Exception as err:  # noqa: BLE001 - hub, network and unknown-name errors come in many types
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise UserError(f"could not load pretrained timm weights {name!r} ({reason}); a timm model name such as "
                        f"vit_tiny_patch16_224.augreg_in21k, downloaded once from the Hugging Face Hub "
                        f"(then cached; HF_HUB_OFFLINE=1 uses the cache only)") from None
    return vit_from_timm(model, **trunk_overrides), dict(getattr(model, "pretrained_cfg", None) or {})
