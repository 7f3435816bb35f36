"""Parity with timm's VisionTransformer: converted weights give the same logits."""

import pytest
import timm
import torch

from multitx.cli import load_config
from multitx.engine.runtime import setup_runtime
from multitx.errors import UserError
from multitx.models.from_timm import timm_pretrained, vit_from_timm
from multitx.tasks.vit import ViTTask
from tests.helpers_vision import write_imagefolder


def random_timm(**kwargs):
    """A randomly initialised timm ViT (nothing can be downloaded here), weights jittered so that
    zero-initialised biases, heads and tokens are not trivially equal."""
    settings = dict(img_size=32, patch_size=4, num_classes=10, embed_dim=48, depth=3, num_heads=3, mlp_ratio=2.0)
    model = timm.models.VisionTransformer(**{**settings, **kwargs}).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize("kwargs", [
    {},
    {"embed_dim": 192, "depth": 2, "num_heads": 3, "mlp_ratio": 4.0},
    {"global_pool": "avg", "class_token": False, "fc_norm": False},
    {"global_pool": "avg", "fc_norm": False},
    {"img_size": (32, 48), "qkv_bias": False},
    {"in_chans": 1, "img_size": 28, "patch_size": 7},
])
@pytest.mark.parametrize("tokenizer", ["conv", "linear"])
def test_same_logits_as_timm(kwargs, tokenizer):
    reference = random_timm(**kwargs)
    model = vit_from_timm(reference, tokenizer=tokenizer).eval()
    h, w = reference.patch_embed.img_size
    images = torch.randn(4, reference.patch_embed.proj.in_channels, h, w)
    with torch.no_grad():
        expected, got = reference(images), model(images)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-4


def test_same_gradients_as_timm():
    reference = random_timm().train()
    model = vit_from_timm(reference).train()
    images = torch.randn(2, 3, 32, 32)
    reference(images).square().sum().backward()
    model(images).square().sum().backward()
    assert torch.allclose(model.tokenizer.proj.weight.grad, reference.patch_embed.proj.weight.grad, atol=1e-4)
    assert torch.allclose(model.trunk.blocks[0].attn.to_qkv.weight.grad, reference.blocks[0].attn.qkv.weight.grad,
                          atol=1e-4)


@pytest.mark.parametrize("kwargs, message", [
    ({"init_values": 1e-5}, "ls1"),
    ({"qk_norm": True}, "q_norm"),
    ({"reg_tokens": 2}, "register tokens"),
    ({"global_pool": "avg"}, "fc_norm"),
    ({"num_classes": 0}, "no classifier head"),
])
def test_unsupported_timm_models_are_refused_by_name(kwargs, message):
    with pytest.raises(UserError, match=message):
        vit_from_timm(random_timm(**kwargs))


def test_pretrained_through_the_task(tmp_path, monkeypatch):
    """model.pretrained=timm:NAME goes through timm.create_model(NAME, pretrained=True); here create_model
    gives a random model, since nothing can be downloaded."""
    calls, real_create_model = [], timm.create_model

    def create_model(name, pretrained=False, **kwargs):
        calls.append((name, pretrained, kwargs))
        return real_create_model(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", create_model)
    root = write_imagefolder(tmp_path / "images")
    cfg = load_config(["task=vit_cifar", "data=imagefolder", f"data.root={root}", "model.image_size=16",
                       "model.pretrained=timm:vit_tiny_patch16_224.augreg_in21k", "device=cpu"])
    task = ViTTask(cfg, setup_runtime("cpu"))
    model = task.build_model()
    assert calls == [("vit_tiny_patch16_224.augreg_in21k", True,
                      {"num_classes": 2, "img_size": (16, 16), "in_chans": 3, "patch_size": 4})]
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 2)
    assert task.mean == [0.5, 0.5, 0.5]  # the normalisation the weights were trained with (timm's default cfg)


def test_pretrained_without_network_is_one_clear_error(monkeypatch):
    def create_model(name, pretrained=False, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(timm, "create_model", create_model)
    with pytest.raises(UserError, match="could not load pretrained timm weights 'vit_tiny_patch16_224'"):
        timm_pretrained("vit_tiny_patch16_224", classes=10, image_size=32)
