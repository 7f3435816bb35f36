"""One way to extend multitx: a named registry that multitx's own parts use too.

    PATCH_TOKENIZERS = Registry("patch tokenizer", "model.tokenizer", PatchTokenizer, "multitx.PatchTokenizer")

    @PATCH_TOKENIZERS.register("mine")     # from then on: model.tokenizer.name=mine
    class MyTokenizer(PatchTokenizer): ...

A setting picks an entry by its registered name; `module` (a module or a list of them)
is imported first, so that what a user's package registers is known; `_target_`
names a class by import path instead (package.module.Class). Tasks (engine/task.py),
datasets (data/registry.py), patch tokenizers (nn/patches.py), text tokenizers
(data/text/tokenizers.py) and metric loggers (engine/loggers.py) each have one, in the
layer of what they hold. Importing what a setting names is for the command the user typed:
loading a run folder refuses it unless the user trusts it (multitx/engine/trust.py).
"""

import importlib
from collections.abc import Callable, Iterator

from multitx.errors import UserError
from multitx.imports import named_class


class Registry:
    """Named subclasses of `base` (what a `key` setting chooses among), in registration order."""

    def __init__(self, what: str, key: str, base: type, public: str = "",
                 on_register: Callable[[str, type], None] | None = None, module_key: str = ""):
        self.what, self.key, self.base = what, key, base
        self.module_key = module_key or f"{key}.module"  # the key that imports a user's package first
        self.public = public or f"{base.__module__}.{base.__qualname__}"  # the base as users know it
        self.entries: dict[str, type] = {}
        self.on_register = on_register  # told of each entry: e.g. the config store learns its settings

    def register(self, name: str):
        """Class decorator: make the class available by `name`."""

        def add(cls):
            self.entries[name] = cls
            if self.on_register is not None:
                self.on_register(name, cls)
            return cls

        return add

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __getitem__(self, name: str) -> type:
        return self.get(name)

    def names(self) -> list[str]:
        return list(self.entries)

    def get(self, name: str) -> type:
        """The class registered as `name`, or one line that lists the names there are."""
        if name not in self.entries:
            raise UserError(f"unknown {self.what} {name!r}; registered: {', '.join(sorted(self.entries))}. "
                            f"One registered in your own package also needs {self.module_key}=YOUR_MODULE")
        cls = self.entries[name]
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise UserError(f"the {self.what} registered as {name!r} is not a subclass of {self.public}")
        return cls

    def resolve(self, name: str | None = None, target: str | type | None = None, module=None) -> type:
        """The class a setting names: `target`, an import path (or a class, from Python), wins over `name`;
        `module` (one name or a list) is imported first."""
        import_modules(module, self.module_key)
        if isinstance(target, type) and issubclass(target, self.base):
            return target
        if target:
            return named_class(target, f"{self.key}._target_", self.base, self.public)
        return self.get(name)


def import_modules(modules, key: str) -> None:
    """Import a module name or each of a list of them (what they register becomes known)."""
    for module in [modules] if isinstance(modules, str) else list(modules or []):
        try:
            importlib.import_module(module)
        except Exception as err:  # noqa: BLE001 - whatever the module raises while it is imported
            raise UserError(f"{key}={module}: cannot import it ({type(err).__name__}: "
                            f"{' '.join(str(err).split())[:200]}); check the name, "
                            f"and that its folder is on PYTHONPATH or installed") from None

