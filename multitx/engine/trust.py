"""What loading a run folder trusts.

Loading reads data, never code: weights through safetensors, training state
through torch.load(weights_only=True), config.yaml as plain YAML. What could
still run code is a setting that names it: a module to import
(`model.tokenizer.module`, `data.module`, `loggers_module`) or a class to build (`model.tokenizer._target_`,
or a `task._target_` other than multitx's own tasks). `sample`, `caption` and every
other command that loads a run refuse such a run folder unless the user adds
`trust_code=true` to that command (as Hugging Face's trust_remote_code). Training
from the command line is different: there the user typed the names.
"""

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from multitx.errors import UserError

BUILT_IN = "multitx.tasks."  # the tasks that come with multitx: task._target_=multitx.tasks.MODULE.CLASS
CODE_KEYS = ("_target_", "module", "loggers_module")


def code_named(cfg: DictConfig) -> list[tuple[str, object]]:
    """(key, value) of every setting in a run's config that names code to import."""
    found = []

    def walk(node, prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, f"{path}.")
            elif key in CODE_KEYS and value not in (None, "", []) and not (path == "task._target_"
                                                                          and is_built_in(value)):
                found.append((path, value))

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return found


def is_built_in(target) -> bool:
    """A task of multitx's own: multitx.tasks.MODULE.CLASS, nothing deeper."""
    return isinstance(target, str) and target.startswith(BUILT_IN) and target.count(".") == 3 \
        and all(part.isidentifier() for part in target.split("."))


def refuse_code(cfg: DictConfig, source: Path, trust_code: bool) -> None:
    """One line naming the setting and the flag, unless the user trusts this run's code."""
    named = code_named(cfg)
    if named and not trust_code:
        key, value = named[0]
        raise UserError(f"{source} names code to import ({key}={value}); loading a run folder builds only "
                        f"multitx's own parts: add trust_code=true to this command if you trust that code")
