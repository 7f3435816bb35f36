"""Every setting is defined once, on its dataclass field: default, rule and one line of help.

    @dataclass
    class TrunkConfig:
        heads: int = setting(6, Whole(min=1), "attention heads; each gets dim / heads channels")

    rules_of(TrunkConfig, "model.trunk")  -> {"model.trunk.heads": Whole(min=1), ...}   (checked: engine/validation.py)
    defaults_of(TrunkConfig)              -> {"heads": 6, ...}   (the config store composes recipes over them)
    help_rows(TrunkConfig, "model.trunk") -> [("model.trunk.heads", 6, "attention heads; ..."), ...]   (--help)

And one way from a run's `model:` settings to a model's config dataclass, and back:

    LanguageModelConfig <- from_settings(LanguageModelConfig, cfg.model, vocab_size=V)
    settings_of(config) -> the plain mapping config.yaml holds (what from_settings reads)

Every field of a config dataclass is a key of the same name in the YAML; a field
that is itself a dataclass (a `TrunkConfig`) is a nested section (`model.trunk`,
`model.encoder`), declared with `section(...)`. Fields marked `from_data()` (a
vocabulary's size, a dataset's classes) are not settings: the task passes them in,
from the data it loaded. A config dataclass may check what ties its fields together
in a `check(prefix)` method, which engine/validation.py calls with the section's prefix.
"""

import copy
import dataclasses
import typing
from collections.abc import Mapping

from omegaconf import DictConfig, ListConfig, OmegaConf

from multitx.config.rules import Rule

NOT_ADDED = object()


def setting(default, rule: Rule | None, help: str, *, before=NOT_ADDED):
    """A field that is a setting: its default, the rule its value must pass (None: any value), one line of help.
    before: the value runs written before the setting existed had (engine/migrate.py fills it in)."""
    metadata = {"rule": rule, "help": help, **({} if before is NOT_ADDED else {"before": before})}
    if isinstance(default, (list, dict)):  # mutable: each instance gets its own copy
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def section(cls, help: str, schema: type | None = None, **changes):
    """A nested section (model.trunk): a `cls` with `changes` from its defaults. `schema`: the dataclass
    whose fields are the section's keys when the value is kept as a plain mapping (a patch tokenizer's
    options, which a user's own tokenizer may extend)."""
    make = (lambda: {**defaults_of(schema), **changes}) if schema else (lambda: cls(**changes))
    return dataclasses.field(default_factory=make, metadata={"help": help, "section": schema or cls})


def rules_of(cls, prefix: str = "") -> dict[str, Rule]:
    """{dotted key: rule} of every setting of a config dataclass, nested sections under their prefix."""
    rules = {}
    for f in setting_fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if "section" in f.metadata:
            rules.update(rules_of(f.metadata["section"], key))
        elif f.metadata.get("rule") is not None:
            rules[key] = f.metadata["rule"]
    return rules


def defaults_of(cls) -> dict:
    """The default of every setting of a config dataclass, as config.yaml would hold it."""
    out = {}
    for f in setting_fields(cls):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            continue
        out[f.name] = settings_of(value) if dataclasses.is_dataclass(value) else plain_value(value)
    return out


def help_rows(cls, prefix: str = "", defaults: Mapping | None = None) -> list[tuple[str, object, str]]:
    """(dotted key, default, help) of every setting; `defaults` (a composed config) gives the values shown."""
    defaults = defaults_of(cls) if defaults is None else defaults
    rows = []
    for f in setting_fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        value = defaults.get(f.name) if isinstance(defaults, Mapping) else None
        if "section" in f.metadata:
            rows += help_rows(f.metadata["section"], key, value if isinstance(value, Mapping) else None)
        elif "help" in f.metadata:
            rows.append((key, value, f.metadata["help"]))
    return rows


def added_later(cls) -> dict:
    """{field: value} of the settings that came after the first release, as older runs had them."""
    return {f.name: f.metadata["before"] for f in setting_fields(cls) if "before" in f.metadata}


def plain_value(value):
    return list(value) if isinstance(value, tuple) else plain(value)


def from_data(**kwargs):
    """A dataclass field that the data decides (e.g. vocab_size), not the YAML."""
    return dataclasses.field(metadata={"from_data": True}, **kwargs)


def setting_fields(cls) -> list[dataclasses.Field]:
    """The fields of a config dataclass that are settings (not decided by the data)."""
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("from_data") and f.init]


def plain(value):
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def from_settings(cls, settings: Mapping, **given):
    """cls(...) from the mapping `settings` (nested dataclasses from nested mappings) and `given`
    (the from_data fields). Keys that are no field of cls are not the model's (a user's own
    +model.KEY for a task of theirs) and are left alone; the schema has checked the rest."""
    settings = plain(settings) or {}
    hints = typing.get_type_hints(cls)
    names = {f.name for f in setting_fields(cls)}
    values = {}
    for name, value in settings.items():
        if name not in names:
            continue
        kind = hints[name]
        if dataclasses.is_dataclass(kind) and isinstance(value, Mapping):
            value = from_settings(kind, value)
        elif isinstance(value, list) and typing.get_origin(kind) is tuple:
            value = tuple(value)
        values[name] = value
    return cls(**values, **given)


def for_checking(cls, settings: Mapping):
    """cls from `settings` with the from_data fields it cannot default left None: enough for its check()."""
    unknown = {f.name: None for f in dataclasses.fields(cls) if f.metadata.get("from_data")
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    return from_settings(cls, settings, **unknown)


def settings_of(config) -> dict:
    """The settings of a config dataclass as plain values (nested sections for nested
    dataclasses), without the from_data fields: what config.yaml records of it."""
    out = {}
    for f in setting_fields(type(config)):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            value = settings_of(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def leaves(node, prefix: str = ""):
    """(dotted key, value) of every leaf of a config; lists are leaves."""
    for key, value in node.items():
        if isinstance(value, Mapping | DictConfig):
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value
