"""Patch tokenizers, the ViT, and a user's own tokenizer three ways."""

import json

import pytest
import torch
from safetensors.torch import load_file

from multitx.benchmarks.vit_fashion import RECIPES as FASHION_RECIPES
from multitx.cli import load_config
from multitx.engine.runtime import setup_runtime
from multitx.engine.trainer import train
from multitx.errors import UserError
from multitx.models.vit import ViT, build_vit
from multitx.nn.patches import (
    PATCH_TOKENIZERS,
    ConvPatches,
    ConvStemPatches,
    LinearPatches,
    PatchTokenizer,
    build_tokenizer,
    sincos_2d,
)
from multitx.nn.readouts import ClassifierHead
from multitx.nn.trace import trace
from multitx.nn.trunk import ReLUSquared
from multitx.tasks.vit import ViTTask
from tests.conftest import REPO, run_module
from tests.helpers_vision import OverlapPatches, write_fashion_mnist, write_imagefolder


@pytest.mark.parametrize("cls", [LinearPatches, ConvPatches, OverlapPatches])
@pytest.mark.parametrize("size, patch, grid", [(32, 4, (8, 8)), ((32, 48), 4, (8, 12)), ((28, 21), 7, (4, 3)),
                                               ((16, 24), (4, 8), (4, 3))])
@pytest.mark.parametrize("cls_token", [True, False])
def test_tokens_and_grid(cls, size, patch, grid, cls_token):
    tok = cls(image_size=size, patch_size=patch, in_channels=3, dim=16, cls_token=cls_token)
    h, w = (size, size) if isinstance(size, int) else size
    tokens = tok(torch.randn(2, 3, h, w))
    assert tok.grid == grid
    assert tok.num_patches == grid[0] * grid[1]
    assert tok.num_prefix_tokens == int(cls_token)
    assert tok.num_tokens == grid[0] * grid[1] + int(cls_token)
    assert tokens.shape == (2, tok.num_tokens, 16)


def test_conv_stem_tokenizer():
    tok = ConvStemPatches(image_size=(28, 20), patch_size=4, in_channels=1, dim=32)
    assert tok(torch.randn(2, 1, 28, 20)).shape == (2, 7 * 5 + 1, 32) and tok.grid == (7, 5)
    assert len([m for m in tok.stem if isinstance(m, torch.nn.Conv2d)]) == 2  # log2(4) stride-2 convolutions
    with pytest.raises(UserError, match="power-of-two"):
        ConvStemPatches(image_size=28, patch_size=7, in_channels=1, dim=32)


def test_conv_stem_takes_one_width_per_convolution():
    tok = ConvStemPatches(image_size=32, patch_size=8, in_channels=1, dim=32, stem_width=[8, 16, 24])
    convs = [m for m in tok.stem if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 8), (8, 16), (16, 24)]
    assert tok.proj.in_channels == 24 and tok(torch.randn(2, 1, 32, 32)).shape == (2, 16 + 1, 32)
    with pytest.raises(UserError, match="stem_width must be one positive width or 3 of them"):
        ConvStemPatches(image_size=32, patch_size=8, in_channels=1, dim=32, stem_width=[8, 16])


def test_a_tokenizer_option_set_to_null_is_not_passed_and_a_foreign_one_names_the_fix():
    """task=vit_fashion gives convstem a stem_width; another tokenizer swapped in sets it aside with null."""
    spec = {"name": "conv", "positions": "learned", "cls_token": True, "stem_width": None}
    tok = build_tokenizer(spec, image_size=8, patch_size=4, in_channels=1, dim=16)
    assert tok(torch.randn(2, 1, 8, 8)).shape == (2, 4 + 1, 16)
    with pytest.raises(UserError, match=r"unexpected keyword argument 'stem_width'; if model.tokenizer.stem_width "
                                        r"is the recipe's option for another tokenizer, set it aside with "
                                        r"model.tokenizer.stem_width=null"):
        build_tokenizer({**spec, "stem_width": [8, 16]}, image_size=8, patch_size=4, in_channels=1, dim=16)


def test_vit_mlp_activation_is_a_setting():
    assert isinstance(build_vit(image_size=8, dim=16, layers=1, heads=2).trunk.blocks[0].mlp.act, torch.nn.GELU)
    relu2 = build_vit(image_size=8, dim=16, layers=1, heads=2, activation="relu2")
    assert isinstance(relu2.trunk.blocks[0].mlp.act, ReLUSquared)


@pytest.mark.parametrize("recipe", sorted(FASHION_RECIPES))
def test_the_shipped_fashion_recipes_build_and_classify(recipe, tmp_path):
    folder = write_fashion_mnist(tmp_path / "fm", train=8, test=4)
    cfg = load_config(["task=vit_fashion", f"data.root={folder}", f"data_dir={tmp_path}", *FASHION_RECIPES[recipe]])
    task = ViTTask(cfg, setup_runtime("cpu", "fp32"))
    images = task.test_set.images[:2]  # (2, 1, 32, 32) uint8, scaled up from 28x28 as the recipe asks
    assert task.build_model()(task.augment.normalize(images)).shape == (2, 10)


@pytest.mark.parametrize("positions", ["learned", "sincos", "none"])
def test_positions(positions):
    tok = ConvPatches(image_size=(8, 12), patch_size=4, dim=16, positions=positions)
    assert tok(torch.randn(1, 3, 8, 12)).shape == (1, 7, 16)
    if positions == "sincos":
        assert torch.equal(tok.position[0, 1:], sincos_2d(2, 3, 16))
        assert "position" not in dict(tok.named_parameters())
    if positions == "none":
        assert tok.position is None


def test_linear_and_conv_patches_are_the_same_maths():
    conv = ConvPatches(image_size=8, patch_size=4, in_channels=3, dim=6, positions="none", cls_token=False)
    linear = LinearPatches(image_size=8, patch_size=4, in_channels=3, dim=6, positions="none", cls_token=False)
    linear.proj.weight.data = conv.proj.weight.data.permute(0, 2, 3, 1).reshape(6, -1)  # (D, ph*pw*C)
    linear.proj.bias.data = conv.proj.bias.data
    images = torch.randn(2, 3, 8, 8)
    assert torch.allclose(conv(images), linear(images), atol=1e-6)


@pytest.mark.parametrize("size, patch", [(30, 4), ((32, 30), 4), (28, (4, 3))])
def test_non_dividing_size_is_a_clear_error_at_build_time(size, patch):
    with pytest.raises(UserError, match="not divisible by patch size"):
        build_vit(image_size=size, patch_size=patch, dim=24, layers=1, heads=2)


def test_wrong_input_size_is_a_clear_error():
    model = build_vit(image_size=32, patch_size=4, dim=24, layers=1, heads=2)
    with pytest.raises(UserError, match="takes 3x32x32 images"):
        model(torch.randn(1, 3, 28, 28))


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_classifier_head_pooling(pool):
    head = ClassifierHead(8, 3, pool=pool)
    torch.nn.init.normal_(head.proj.weight)
    tokens = torch.randn(2, 5, 8)
    expected = tokens[:, 0] if pool == "cls" else tokens[:, 1:].mean(dim=1)
    assert torch.allclose(head(tokens, num_prefix_tokens=1), head.proj(expected))


def test_vit_cls_shortcut_equals_full_trunk():
    model = build_vit(image_size=16, patch_size=4, dim=24, layers=3, heads=3, classes=5).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)
    images = torch.randn(3, 3, 16, 16)
    full = model.head(model.trunk(model.tokenizer(images)))
    assert torch.allclose(model(images), full, atol=1e-5)
    with trace(model) as recorded:
        assert torch.allclose(model(images), full, atol=1e-5)  # traced, the same code runs
    assert [r.weights.shape for r in recorded.attention] == [(3, 3, 17, 17)] * 2 + [(3, 3, 1, 17)]  # CLS asks last


def test_vit_gradients_reach_every_parameter_and_no_weight_decay():
    model = build_vit(image_size=16, patch_size=4, dim=24, layers=2, heads=3, classes=5)
    torch.nn.init.normal_(model.head.proj.weight)  # zero-initialised: nothing would flow back
    model(torch.randn(2, 3, 16, 16)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.no_weight_decay() == {"tokenizer.cls", "tokenizer.position"}


def test_pool_cls_without_cls_token_is_an_error():
    with pytest.raises(UserError, match="cls_token"):
        build_vit(image_size=16, patch_size=4, dim=24, layers=1, heads=2, pool="cls", cls_token=False)


# -------------------------------------------------------------------------- a user's own tokenizer

def test_custom_tokenizer_from_python():
    """Passed in as a class, or as an instance, when building the model."""
    by_class = build_vit(image_size=16, patch_size=4, dim=24, layers=1, heads=2, tokenizer=OverlapPatches,
                         overlap=2)
    assert isinstance(by_class.tokenizer, OverlapPatches) and by_class.tokenizer.proj.kernel_size == (8, 8)
    mine = OverlapPatches(image_size=16, patch_size=4, in_channels=3, dim=24)
    by_instance = build_vit(image_size=16, patch_size=4, dim=24, layers=1, heads=2, tokenizer=mine)
    assert by_instance.tokenizer is mine
    assert by_class(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    # or assembled by hand from the three parts
    vit = ViT(mine, by_instance.trunk, by_instance.head)
    assert vit(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def vision_args(root, run_dir, *extra):
    return ["task=vit_cifar", "data=imagefolder", f"data.root={root}", f"run_dir={run_dir}", "steps=2",
            "eval_every=2", "batch_size=4", "model.image_size=16", "model.trunk.dim=24", "model.trunk.layers=1",
            "model.trunk.heads=2", "augment.policy=none", "progress=false", "device=cpu", *extra]


def test_custom_tokenizer_by_import_path_on_the_command_line(tmp_path):
    root = write_imagefolder(tmp_path / "images")
    result = run_module("multitx.train", *vision_args(root, tmp_path / "run",
                                                      "model.tokenizer._target_=tests.helpers_vision.OverlapPatches"),
                        cwd=REPO, env={"PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-2000:]
    weights = load_file(str(tmp_path / "run" / "checkpoints" / "step_0000002" / "model.safetensors"))
    assert weights["tokenizer.proj.weight"].shape == (24, 3, 6, 6)  # OverlapPatches' kernel, not ConvPatches'


def test_custom_tokenizer_by_registered_name(tmp_path):
    assert PATCH_TOKENIZERS["test_overlap"] is OverlapPatches
    root = write_imagefolder(tmp_path / "images")
    cfg = load_config(vision_args(root, tmp_path / "run", "model.tokenizer.name=test_overlap",
                                  "model.tokenizer.module=tests.helpers_vision"))
    metrics = train(cfg)
    assert 0.0 <= metrics["val_acc"] <= 1.0
    weights = load_file(str(tmp_path / "run" / "checkpoints" / "step_0000002" / "model.safetensors"))
    assert weights["tokenizer.proj.weight"].shape == (24, 3, 6, 6)
    info = json.loads((tmp_path / "run" / "classes.json").read_text())
    assert info["classes"] == ["circle", "square"] and info["image_size"] == [16, 16]


@pytest.mark.parametrize("override, message", [
    ("model.tokenizer._target_=no_such_pkg.Tok", "cannot import it"),
    ("model.tokenizer._target_=torch.nn.Linear", "not a subclass of multitx.PatchTokenizer"),
    ("model.tokenizer.name=nope", "unknown tokenizer 'nope'"),
    ("model.tokenizer.module=no_such_module", "cannot import it"),
    ("model.image_size=18", "not divisible by patch size"),
])
def test_bad_tokenizer_settings_are_one_line_errors(tmp_path, override, message):
    root = write_imagefolder(tmp_path / "images")
    task = ViTTask(load_config(vision_args(root, tmp_path / "run", override)), setup_runtime("cpu"))
    with pytest.raises(UserError, match=message):
        task.build_model()


def test_bad_tokenizer_on_the_command_line_prints_one_line(tmp_path, capsys):
    from multitx.cli import run_cli
    from multitx.train import main

    root = write_imagefolder(tmp_path / "images")
    with pytest.raises(SystemExit) as stop:
        run_cli(main, vision_args(root, tmp_path / "run", "model.tokenizer._target_=nope.Nope"))
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: model.tokenizer._target_=nope.Nope: cannot import it")


def test_tokenizer_is_a_patch_tokenizer_subclass():
    assert issubclass(OverlapPatches, PatchTokenizer)
