"""Each setting is defined once, on its dataclass field: its default, its rule and its help come from
there, a recipe YAML holds only what it changes, and --help lists every key of the composed config."""

import io
from contextlib import redirect_stdout

import pytest
import yaml

from multitx import train
from multitx.cli import load_config
from multitx.config.compose import defaults_for
from multitx.engine import validation
from multitx.engine.task import task_class_of
from tests.conftest import REPO

RECIPES = sorted(p.stem for p in (REPO / "multitx" / "config" / "task").glob("*.yaml"))


def leaves(node, prefix=""):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_key_of_a_recipe_has_a_rule_and_appears_in_help(recipe):
    cfg = load_config([f"task={recipe}"])
    rules = validation.rules_for(cfg, task_class_of(cfg).rules)
    keys = [key for key, _ in validation.leaves(cfg) if not key.startswith("task.")]
    assert [key for key in keys if key not in rules] == []
    shown = io.StringIO()
    with redirect_stdout(shown):
        train.main(["--help", f"task={recipe}"])
    listed = {line.split()[0] for line in shown.getvalue().splitlines() if line.startswith("  ")}
    assert [key for key in keys if key not in listed] == []


@pytest.mark.parametrize("recipe", RECIPES)
def test_a_recipe_holds_only_what_it_changes(recipe):
    """Every value a recipe's YAML sets differs from what it would be without that YAML: the defaults of
    its settings (a recipe that starts from /settings/NAME) or of the recipe it extends."""
    text = yaml.safe_load((REPO / "multitx" / "config" / "task" / f"{recipe}.yaml").read_text(encoding="utf-8"))
    parents = [d for d in text.get("defaults", []) if isinstance(d, str) and d != "_self_"]
    base = defaults_for((f"task={parents[0]}",)) if not parents[0].startswith("/") else None
    if base is None:  # the task's own defaults and the shared ones, with the recipe's dataset
        from omegaconf import OmegaConf

        from multitx.config.settings import defaults_of
        from multitx.config.training import TrainingConfig

        settings = task_class_of(load_config([f"task={recipe}"])).settings
        base = OmegaConf.merge(defaults_of(TrainingConfig), defaults_of(settings))
    same = [key for key, value in leaves({k: v for k, v in text.items() if k not in ("defaults", "task")})
            if base_value(base, key) == value and type(base_value(base, key)) is type(value)]
    assert same == [], f"{recipe}.yaml repeats defaults: {same}"


def base_value(base, key: str):
    from omegaconf import OmegaConf

    value = OmegaConf.select(base, key)
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


TOOLS = ["sample", "caption", "fill", "evaluate", "predict", "export", "inspect.__main__"]


@pytest.mark.parametrize("tool", TOOLS)
def test_every_tool_answers_help_with_its_keys_and_exit_0(tool):
    import importlib

    module = importlib.import_module(f"multitx.{tool}")
    shown = io.StringIO()
    with redirect_stdout(shown), pytest.raises(SystemExit) as stop:
        module.main(["--help"])
    assert stop.value.code == 0
    listed = {line.split()[0] for line in shown.getvalue().split("keys (key=value):")[1].splitlines() if line.strip()}
    assert {"run_dir", "checkpoint", "trust_code"} <= listed
    assert module.__doc__.strip().splitlines()[0] in shown.getvalue()
