"""Command-line plumbing shared by `multitx.train`, `multitx.sample` and friends: the training
config from key=value arguments (with every registered task and dataset known), `--help` from
the settings' own help texts, and the user's mistakes as one clear line instead of a traceback."""

import sys
from dataclasses import dataclass, is_dataclass
from importlib.resources import files

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import multitx.data.builtins  # noqa: F401 - registers the built-in datasets
import multitx.tasks  # noqa: F401 - registers the built-in tasks
from multitx.config import compose
from multitx.config.hardware import DEVICE_HELP, Device
from multitx.config.rules import Flag, Folder, Which
from multitx.config.settings import defaults_of, help_rows, rules_of, setting
from multitx.config.training import TrainingConfig
from multitx.data.registry import DATASETS
from multitx.engine.task import task_class_of
from multitx.errors import UserError
from multitx.registry import import_modules


def load_config(overrides: list[str]) -> DictConfig:
    """The training config for `python -m multitx.train KEY=VALUE ...`, resolved and locked (struct
    mode). A `data.module=` (or `+data.module=`) among them is imported first: the datasets it
    registers can then be chosen with data=NAME."""
    for arg in overrides:
        key, _, value = arg.partition("=")
        if key.lstrip("+") == "data.module" and value not in ("", "null"):
            import_modules(OmegaConf.from_dotlist([f"v={value}"]).v, "data.module")
    return compose.load_config(overrides)


def settings_help(overrides: list[str]) -> str:
    """Every key of the composed config, with its default (the recipe's, where it changes it) and help."""
    cfg = load_config(overrides)
    task = task_class_of(cfg)
    rows = [("task", cfg.task.name, "the recipe (config/task/NAME.yaml): " + ", ".join(task_recipes())),
            ("data", cfg.data.name, "the dataset: " + ", ".join(DATASETS.names()))]
    rows += help_rows(TrainingConfig, "", cfg)
    rows += help_rows(task.settings, "", cfg) if task.settings else []
    rows += help_rows(DATASETS.get(str(cfg.data.name)), "data", cfg.data)
    if not any(arg.startswith("run_dir=") for arg in overrides):  # the pattern, not this second's folder
        rows = [(k, TrainingConfig.run_dir if k == "run_dir" else v, h) for k, v, h in rows]
    width = max(len(key) for key, _, _ in rows)
    lines = [f"  {key:<{width}}  {shown(value):<16} {text}" for key, value, text in rows]
    return f"keys of task={cfg.task.name} data={cfg.data.name} (key=value on the command line):\n" + "\n".join(lines)


def shown(value) -> str:
    """A default as the command line writes it: null, true, [0.9, 0.99]."""
    value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    if value is None or isinstance(value, bool):
        return "null" if value is None else str(value).lower()
    if isinstance(value, str) and (not value or value != value.strip()):
        return repr(value)  # "" or "\n": seen, not blank
    return str(value)


def task_recipes() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in (files("multitx.config") / "task").iterdir()
                  if p.name.endswith(".yaml"))


def tool_help(keys, doc: str) -> str:
    """A tool's docstring, then each key with its default and its help."""
    rows = help_rows(keys) if is_dataclass(keys) else [(key, value, "") for key, value in keys.items()]
    width = max(len(key) for key, _, _ in rows)
    lines = [f"  {key:<{width}}  {shown(value):<12} {text}".rstrip() for key, value, text in rows]
    return f"{doc.strip()}\n\nkeys (key=value):\n" + "\n".join(lines)


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


@dataclass
class RunArgs:
    """The keys of every command that loads a trained run (sample, caption, fill, evaluate, ...)."""

    run_dir: str | None = setting(None, Folder(hint="give run_dir=DIR, the folder python -m multitx.train wrote"),
                                  "the run: the folder python -m multitx.train wrote")
    checkpoint: str = setting("best", Which(), "best, latest or a checkpoint folder (RUN_DIR/checkpoints/step_N)")
    trust_code: bool = setting(False, Flag(), "import the code the run's config names (a tokenizer, task or "
                               "dataset of your own)")
    debug: bool = setting(False, Flag(), "show full tracebacks instead of one-line errors")


@dataclass
class OnDevice:
    device: str = setting("auto", Device(), DEVICE_HELP)


def parse_args(argv: list[str], keys, doc: str = "") -> dict:
    """key=value arguments over the defaults of `keys` (a dataclass of settings, or a plain dict of
    defaults); an unknown key is an error, and the rule of each key the user gave checks its value
    before anything is loaded. `--help` prints `doc` (the tool's own docstring) and every key, and exits.
    A true/false key may also be given as a flag: `--smoke` is `smoke=true`."""
    defaults = defaults_of(keys) if is_dataclass(keys) else dict(keys)
    rules = rules_of(keys) if is_dataclass(keys) else {}
    if argv and argv[0] in ("-h", "--help"):
        print(tool_help(keys, doc))
        sys.exit(0)
    args, given = dict(defaults), set()
    for arg in argv:
        if arg.startswith("--") and isinstance(defaults.get(arg[2:].replace("-", "_")), bool):
            arg = f"{arg[2:].replace('-', '_')}=true"  # --smoke is smoke=true: a flag, the one shorthand
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
    for key, rule in rules.items():
        if key in given:
            rule.check(key, args[key])
    return args
