"""Models come straight from their config: every field of a model's config dataclass is a key of
the same name in the task's YAML (trunks as nested sections), settable from the command line,
and a run's config.yaml rebuilds the same dataclass."""

import dataclasses

import pytest

from multitx.cli import load_config
from multitx.config.settings import from_settings, setting_fields, settings_of
from multitx.models.captioner import CaptionerConfig
from multitx.models.language_model import LanguageModelConfig
from multitx.models.vit import ViTConfig
from multitx.nn.trunk import TrunkConfig
from multitx.tasks.caption import CaptionTask
from multitx.tasks.charlm import CharLMTask
from tests.conftest import run_here

TASKS = {"charlm": LanguageModelConfig, "mlm": LanguageModelConfig, "vit_cifar": ViTConfig,
         "vit_cifar_quick": ViTConfig, "vit_fashion": ViTConfig, "vit_finetune": ViTConfig, "caption": CaptionerConfig}
CHARS = {"vocab.json": {"kind": "char", "chars": "abcdefgh \n"}}


def field_tree(cls) -> dict:
    """{field: None | subtree} of a config dataclass's settings (a dict-typed field, the patch tokenizer, is a leaf)."""
    hints = {f.name: f.type for f in dataclasses.fields(cls)}
    return {f.name: field_tree(hints[f.name]) if dataclasses.is_dataclass(hints[f.name]) else None
            for f in setting_fields(cls)}


def key_tree(node) -> dict:
    return {key: key_tree(value) if isinstance(value, dict) and key != "tokenizer" else None
            for key, value in node.items()}


@pytest.mark.parametrize("task", list(TASKS))
def test_the_yaml_model_section_holds_every_field_of_the_model_config_and_nothing_else(task):
    from omegaconf import OmegaConf

    model = OmegaConf.to_container(load_config([f"task={task}"]).model)
    assert key_tree(model) == field_tree(TASKS[task])


@pytest.mark.parametrize("task", list(TASKS))
def test_a_run_config_and_its_dataclass_go_both_ways_unchanged(task):
    settings = load_config([f"task={task}"]).model
    config = from_settings(TASKS[task], settings, **({"classes": 3} if TASKS[task] is ViTConfig else
                                                      {"vocab_size": 11}))
    assert from_settings(TASKS[task], settings_of(config), **{f.name: getattr(config, f.name)
                                                             for f in dataclasses.fields(config)
                                                             if f.metadata.get("from_data")}) == config


def test_a_trunk_field_no_mapper_knew_reaches_the_module_from_the_command_line():
    cfg = load_config(["task=charlm", "model.trunk.mlp_ratio=3.0", "model.trunk.norm_eps=1e-3",
                       "model.trunk.bias=true"])
    model, _ = CharLMTask.build(cfg.model, CHARS)
    block = model.trunk.blocks[0]
    assert block.mlp.fc.out_features == 3 * cfg.model.trunk.dim
    assert block.norm_attn.eps == 1e-3 and block.attn.proj.bias is not None
    assert model.config.trunk == TrunkConfig(**cfg.model.trunk)


def test_the_captioner_has_one_trunk_section_for_its_encoder_and_one_for_its_decoder():
    cfg = load_config(["task=caption", "model.encoder.layers=1", "model.encoder.dim=64", "model.decoder.heads=2",
                       "model.decoder.activation=relu2"])
    model, _ = CaptionTask.build(cfg.model, {"vocab.json": {"kind": "words", "vocab": ["<pad>", "<bos>", "<eos>",
                                                                                     "<unk>", "a", "b"]}})
    assert len(model.encoder.blocks) == 1 and model.encoder.dim == 64 and model.decoder.heads == 2
    assert model.decoder.config.activation == "relu2" and model.encoder.config.activation == "gelu"
    assert model.tokenizer.dim == 64  # the patch tokenizer makes tokens as wide as the encoder


def test_cfg_prints_the_nested_shape():
    done = run_here("multitx.train", "--cfg", "task=charlm")
    assert done.returncode == 0, done.stderr
    shown = done.stdout
    assert "\n  trunk:\n    dim: 128\n" in shown
