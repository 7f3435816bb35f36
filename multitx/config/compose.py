"""Hydra composition: config.yaml, a task's recipe and a dataset, over the defaults of every setting,
then the user's key=value overrides.

    store_node("data", "textfile", {...})   the config store learns a registered part's keys and defaults
    load_config(["task=charlm", "steps=10"])   the composed training config, resolved and locked

Every key's default is its dataclass field's (multitx/config/settings.py): the registries put each
task's and each dataset's defaults into Hydra's config store as they register, the shared keys
(config/training.py) come in the same way, and a recipe YAML holds only what it changes.
"""

import functools
import re
from datetime import datetime

from hydra import compose, initialize_config_module
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from multitx.config.settings import defaults_of
from multitx.config.training import TrainingConfig
from multitx.errors import UserError

if not OmegaConf.has_resolver("now"):
    OmegaConf.register_new_resolver("now", lambda pattern: datetime.now().strftime(pattern), use_cache=True)

GROUPS = ("task", "data")  # config groups: their values pick a file, not a value


def store_node(group: str, name: str, node: dict, package: str | None = None) -> None:
    """Put a part's defaults into Hydra's config store: a recipe's defaults list (or data=NAME) names it."""
    ConfigStore.instance().store(group=group, name=name, node=node, package=package)
    defaults_for.cache_clear()


def load_config(overrides: list[str]) -> DictConfig:
    """The training config for `python -m multitx.train KEY=VALUE ...`, resolved and
    locked (struct mode): reading or setting a key that does not exist is an error."""
    for arg in overrides:
        if "=" not in arg:
            raise UserError(f"arguments are key=value pairs, got {arg!r}; e.g. task=charlm steps=100")
    try:
        cfg = composed(tuple(overrides))
        defaults = defaults_for(tuple(a for a in overrides if a.split("=", 1)[0].lstrip("+~") in GROUPS
                                      or a.startswith("hydra.searchpath=")))
    except (HydraException, OmegaConfBaseException) as err:
        raise UserError(explain_hydra_error(err)) from None
    check_types(cfg, defaults, overrides)
    resolved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    OmegaConf.set_struct(resolved, True)
    return resolved


def composed(overrides: tuple[str, ...]) -> DictConfig:
    """Hydra's composition of config.yaml, the task and data nodes, and the overrides."""
    with initialize_config_module(config_module="multitx.config", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@functools.lru_cache(maxsize=16)
def defaults_for(group_args: tuple[str, ...]) -> DictConfig:
    """The defaults of a task and dataset choice (read only: a recipe's own values, the type of each key)."""
    return composed(group_args)


store_node("settings", "training", defaults_of(TrainingConfig), package="_global_")


def explain_hydra_error(err: Exception) -> str:
    text = str(err)
    if m := re.search(r"Could not override '([^']+)'", text):
        return (f"unknown config key '{m.group(1)}'{moved_hint(m.group(1))}; see the keys with "
                f"`python -m multitx.train --cfg`, or add a new one with +{m.group(1)}=VALUE")
    if m := re.search(r"Could not find '([\w/]+)/(\S+)'", text):
        group, name = m.group(1), m.group(2)
        options = re.findall(r"^\t(\S+)$", text, flags=re.M)
        plugin = f" (a Hydra plugin adds its own: pip install hydra-{name}-{group.split('/')[-1]})" \
            if group.startswith("hydra/") else ""
        return f"unknown {group} '{name}'; choose one of: {', '.join(options)}{plugin}"
    if m := re.search(r"LexerNoViableAltException: (\S+?)=(\S*[<>]\S*)", text):
        return f"cannot parse {m.group(1)}={m.group(2)}: the command line needs <= and >= quoted, as in " \
               f"'{m.group(1)}=\"{m.group(2)}\"'"
    if m := re.search(r"Error parsing override '([^']+)'", text):
        return f"cannot parse the argument '{m.group(1)}'; write key=value (quote values with spaces)"
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return f"invalid configuration: {first}"


FLAT_TRUNK_KEYS = ("dim", "layers", "heads", "mlp_ratio", "activation", "bias", "dropout", "drop_path", "norm_eps")


def moved_hint(key: str) -> str:
    """multitx 0.1's flat trunk keys (model.heads, model.encoder_dim) now live in a trunk section."""
    leaf = key.removeprefix("model.")
    if leaf.startswith("encoder_") and leaf.removeprefix("encoder_") in FLAT_TRUNK_KEYS:
        return f" (a trunk setting: model.encoder.{leaf.removeprefix('encoder_')})"
    if leaf == "decoder_layers":
        return " (a trunk setting: model.decoder.layers)"
    if key.startswith("model.") and leaf in FLAT_TRUNK_KEYS:
        return f" (a trunk setting: model.trunk.{leaf}, or model.encoder.{leaf} / model.decoder.{leaf} for caption)"
    return ""


def check_types(cfg: DictConfig, defaults: DictConfig, overrides: list[str]) -> None:
    """A value given on the command line must have the type of the default it replaces."""
    for arg in overrides:
        key = arg.split("=", 1)[0]
        if key.startswith(("+", "~")) or key in GROUPS or key.endswith("_target_"):
            continue
        old, new = OmegaConf.select(defaults, key), OmegaConf.select(cfg, key)
        if old is None or new is None or isinstance(old, (DictConfig,)):
            continue
        expected = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}.get(type(old))
        ok = (isinstance(new, bool) if isinstance(old, bool)
              else isinstance(new, int) and not isinstance(new, bool) if isinstance(old, int)
              else isinstance(new, (int, float)) and not isinstance(new, bool) if isinstance(old, float)
              else True)
        if expected and not ok:
            raise UserError(f"{key} must be {expected}, got {new!r}")
