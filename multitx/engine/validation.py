"""Every training key's rule, checked before any data or model is built.

    validate(cfg, task_class)   raises UserError ("KEY must be ..., got VALUE") for the first bad value

Each rule is the `rule` of the dataclass field that defines the key (config/settings.py):
`rules_for(cfg, task_rules)` gathers those of the composed config's keys, the shared ones
(config/training.py), the task's (its Task class's `settings`) and the dataset's (its class in
data/registry.py). Checks that tie keys together follow: each config class's own `check`.
Keys a user adds with +KEY=VALUE for a task of their own have no rule and are left to that task.
"""


from omegaconf import DictConfig, OmegaConf

import multitx.data.builtins  # noqa: F401 - the datasets data.name may name
from multitx.config.rules import Rule, Text
from multitx.config.settings import leaves, rules_of
from multitx.config.training import TrainingConfig
from multitx.data.registry import DATASETS, DataSettings, dataset

SHARED = {**rules_of(TrainingConfig), "task.name": Text(), "task._target_": Text()}


def data_class(cfg: DictConfig) -> type[DataSettings]:
    """The class of the dataset cfg.data.name names (one line listing them when it names none)."""
    return DATASETS.get(str(cfg.data.get("name")))


def rules_for(cfg: DictConfig, task_rules: dict[str, Rule]) -> dict[str, Rule]:
    """The rules of a composed config's keys: the shared ones, the task's (its class's `rules`), the dataset's."""
    data = rules_of(data_class(cfg), "data") if str(cfg.data.get("name")) in DATASETS else {}
    return {**SHARED, **task_rules, **data}


def validate(cfg: DictConfig, task_class) -> None:
    """Check every value of a composed training config, then the keys that go together."""
    rules = rules_for(cfg, task_class.rules)
    plain = OmegaConf.to_container(cfg, resolve=True)
    values = dict(leaves(plain))
    for key, rule in rules.items():
        if key in values:
            rule.check(key, values[key])
    TrainingConfig.check(values)
    if task_class.reads:  # the dataset is of the kind the task reads
        dataset(str(cfg.data.name), task_class.reads)
    data_class(cfg).check(plain["data"])
    task_class.check(plain)
