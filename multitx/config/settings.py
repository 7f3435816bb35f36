"""One way from a run's `model:` settings to a model's config dataclass, and back.

    LanguageModelConfig <- from_settings(LanguageModelConfig, cfg.model, vocab_size=V)
    settings_of(config) -> the plain mapping config.yaml holds (what from_settings reads)

Every field of a config dataclass is a key of the same name in the YAML; a field
that is itself a dataclass (a `TrunkConfig`) is a nested section (`model.trunk`,
`model.encoder`). Fields marked `from_data()` (a vocabulary's size, a dataset's
classes) are not settings: the task passes them in, from the data it loaded.
"""

import dataclasses
import typing
from collections.abc import Mapping

from omegaconf import DictConfig, ListConfig, OmegaConf


def from_data(**kwargs):
    """A dataclass field that the data decides (e.g. vocab_size), not the YAML."""
    return dataclasses.field(metadata={"from_data": True}, **kwargs)


def setting_fields(cls) -> list[dataclasses.Field]:
    """The fields of a config dataclass that are settings (not decided by the data)."""
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("from_data")]


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
