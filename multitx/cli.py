"""Command-line plumbing shared by `multitx.train`, `multitx.sample` and friends:
composing the Hydra config from key=value arguments, and turning the user's
mistakes into one clear line instead of a traceback."""

import functools
import re
import sys
from datetime import datetime

from hydra import compose, initialize_config_module
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from multitx.errors import UserError

if not OmegaConf.has_resolver("now"):
    OmegaConf.register_new_resolver("now", lambda pattern: datetime.now().strftime(pattern), use_cache=True)

GROUPS = ("task", "data")  # config groups: their values pick a file, not a value


def load_config(overrides: list[str]) -> DictConfig:
    """The training config for `python -m multitx.train KEY=VALUE ...`, resolved and
    locked (struct mode): reading or setting a key that does not exist is an error."""
    for arg in overrides:
        if "=" not in arg:
            raise UserError(f"arguments are key=value pairs, got {arg!r}; e.g. task=charlm steps=100")
    try:
        cfg = composed(tuple(overrides))
        defaults = defaults_for(tuple(a for a in overrides if a.split("=", 1)[0].lstrip("+~") in GROUPS))
    except (HydraException, OmegaConfBaseException) as err:
        raise UserError(explain_hydra_error(err)) from None
    check_types(cfg, defaults, overrides)
    resolved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    OmegaConf.set_struct(resolved, True)
    return resolved


def composed(overrides: tuple[str, ...]) -> DictConfig:
    """Hydra's composition of config.yaml, the task and data files, and the overrides."""
    with initialize_config_module(config_module="multitx.config", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@functools.lru_cache(maxsize=16)
def defaults_for(group_args: tuple[str, ...]) -> DictConfig:
    """The defaults of a task and dataset choice (read only: for the type of each given value)."""
    return composed(group_args)


def explain_hydra_error(err: Exception) -> str:
    text = str(err)
    if m := re.search(r"Could not override '([^']+)'", text):
        return (f"unknown config key '{m.group(1)}'{moved_hint(m.group(1))}; see the keys with "
                f"`python -m multitx.train --cfg`, or add a new one with +{m.group(1)}=VALUE")
    if m := re.search(r"Could not find '(\w+)/(\S+)'", text):
        group, name = m.group(1), m.group(2)
        options = re.findall(r"^\t(\S+)$", text, flags=re.M)
        return f"unknown {group} '{name}'; choose one of: {', '.join(options)}"
    if m := re.search(r"LexerNoViableAltException: (\S+?)=(\S*[<>]\S*)", text):
        return f"cannot parse {m.group(1)}={m.group(2)}: the command line needs <= and >= quoted, as in " \
               f"'{m.group(1)}=\"{m.group(2)}\"'"
    if m := re.search(r"Error parsing override '([^']+)'", text):
        return f"cannot parse the argument '{m.group(1)}'; write key=value (quote values with spaces)"
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return f"invalid configuration: {first}"


TRUNK_KEYS = ("dim", "layers", "heads", "mlp_ratio", "activation", "bias", "dropout", "drop_path", "norm_eps")


def moved_hint(key: str) -> str:
    """multitx 0.1's flat trunk keys (model.heads, model.encoder_dim) now live in a trunk section."""
    leaf = key.removeprefix("model.")
    if leaf.startswith("encoder_") and leaf.removeprefix("encoder_") in TRUNK_KEYS:
        return f" (a trunk setting: model.encoder.{leaf.removeprefix('encoder_')})"
    if leaf == "decoder_layers":
        return " (a trunk setting: model.decoder.layers)"
    if key.startswith("model.") and leaf in TRUNK_KEYS:
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


def run_cli(main, argv: list[str] | None = None) -> None:
    """Run `main(argv)`; a UserError (or a bad config) ends in one line on stderr
    and a non-zero exit, unless debug=true asks for the whole traceback."""
    argv = sys.argv[1:] if argv is None else argv
    debug = any(a.lower() in ("debug=true", "debug=1") for a in argv)
    try:
        main(argv)
    except UserError as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)


def parse_args(argv: list[str], defaults: dict, rules: dict | None = None) -> dict:
    """key=value arguments over `defaults`; an unknown key is an error. `rules` (key -> a
    multitx.config.schema rule) check the values the user gave, before anything is loaded."""
    args, given = dict(defaults), set()
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in defaults:
            raise UserError(f"unknown argument {arg!r}; the keys are: {', '.join(defaults)}")
        try:
            args[key] = value if isinstance(defaults[key], str) else OmegaConf.from_dotlist([f"v={value}"]).v
        except OmegaConfBaseException:
            raise UserError(f"cannot parse the argument {arg!r}; write key=value (quote values with spaces)") from None
        given.add(key)
    if "run_dir" in defaults and defaults["run_dir"] is None and not args["run_dir"]:  # a tool that needs a run
        raise UserError("say which run to use: run_dir=DIR (the folder python -m multitx.train wrote)")
    for key, rule in (rules or {}).items():
        if key in given:
            rule.check(key, args[key])
    return args
