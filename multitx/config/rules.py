"""The rules that check one setting's value each: Whole, Number, Choice, Choices, Flag, Text, Names,
Numbers, Size, Workers, Folder, File, Resume, Which, Target.

    Whole(min=1).check("steps", 0)   raises UserError("steps must be at least 1, got 0")

multitx/engine/validation.py says which rule checks which key.
"""

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from multitx.config.paths import check_file, check_folder
from multitx.errors import UserError


def shown(value) -> str:
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value)
    return repr(value)


@dataclass(frozen=True)
class Rule:
    """Checks one value: `need(value)` says what the value must be, or None when it is fine."""

    null: bool = False  # null (None) is allowed

    def check(self, key: str, value) -> None:
        if value is None:
            if not self.null:
                raise UserError(f"{key} must be {self.describe()}, got null")
            return
        need = self.need(value)
        if need:
            raise UserError(f"{key} must be {need}{' or null' if self.null else ''}, got {shown(value)}")

    def need(self, value) -> str | None:
        return None if self.accepts(value) else self.describe()

    def accepts(self, value) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


def is_whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Whole(Rule):
    min: int | None = None
    max: int | None = None

    def need(self, value) -> str | None:
        if not is_whole(value):
            return "a whole number"
        if self.min is not None and self.max is not None and not self.min <= value <= self.max:
            return f"from {self.min} to {self.max}"
        if self.min is not None and value < self.min:
            return f"at least {self.min}"
        return None

    def accepts(self, value) -> bool:
        return self.need(value) is None

    def describe(self) -> str:
        return "a whole number" + (f" from {self.min} to {self.max}" if self.min is not None and self.max is not None
                                   else f" at least {self.min}" if self.min is not None else "")


@dataclass(frozen=True)
class Number(Rule):
    """A finite number in [min, max]; `open` leaves out an end: "min", "max" or "both"."""

    min: float | None = None
    max: float | None = None
    open: str = ""

    def need(self, value) -> str | None:
        if not is_number(value):
            return "a finite number"
        low_ok = self.min is None or (value > self.min if self.open in ("min", "both") else value >= self.min)
        high_ok = self.max is None or (value < self.max if self.open in ("max", "both") else value <= self.max)
        return None if low_ok and high_ok else self.range()

    def accepts(self, value) -> bool:
        return self.need(value) is None

    def range(self) -> str:
        if self.min is not None and self.max is not None:
            left = "(" if self.open in ("min", "both") else "["
            right = ")" if self.open in ("max", "both") else "]"
            return f"in {left}{self.min:g}, {self.max:g}{right}"
        if self.min == 0:
            return "positive" if self.open == "min" else "at least 0"
        if self.min is not None:
            return f"{'above' if self.open == 'min' else 'at least'} {self.min:g}"
        return "a finite number"

    def describe(self) -> str:
        return "a number" if self.min is None and self.max is None else f"a number {self.range()}"


POSITIVE = Number(min=0, open="min")
NON_NEGATIVE = Number(min=0)
RATE = Number(min=0, max=1, open="max")  # dropout, smoothing: 1 would drop or smooth everything
PROBABILITY = Number(min=0, max=1)


@dataclass(frozen=True)
class Choice(Rule):
    options: tuple = ()

    def accepts(self, value) -> bool:
        return any(type(value) is type(option) and value == option for option in self.options)  # True is not 1

    def describe(self) -> str:
        return "one of " + ", ".join(str(option) for option in self.options)


@dataclass(frozen=True)
class Choices(Rule):
    """One of `options`, or a list of them, each once (fusions=[cross,prefix])."""
    options: tuple = ()

    def accepts(self, value) -> bool:
        values = [value] if isinstance(value, str) else list(value) if isinstance(value, (Sequence, ListConfig)) \
            else []
        return bool(values) and all(isinstance(v, str) and v in self.options for v in values) \
            and len(set(values)) == len(values)

    def describe(self) -> str:
        return f"one of {', '.join(map(str, self.options))} or a list of them, each once"


@dataclass(frozen=True)
class Flag(Rule):
    def accepts(self, value) -> bool:
        return isinstance(value, bool)

    def describe(self) -> str:
        return "true or false"


@dataclass(frozen=True)
class Text(Rule):
    prefix: str = ""  # e.g. "timm:" for model.pretrained

    def accepts(self, value) -> bool:
        return isinstance(value, str) and value.strip() != "" and value.startswith(self.prefix) \
            and len(value) > len(self.prefix)

    def describe(self) -> str:
        return f"text of the form {self.prefix}NAME" if self.prefix else "non-empty text"


@dataclass(frozen=True)
class Names(Rule):
    """One name or a list of them: modules to import (model.tokenizer.module), registered loggers (loggers)."""

    what: str = "a module name"
    empty: bool = False  # [] is allowed

    def accepts(self, value) -> bool:
        values = [value] if isinstance(value, str) else list(value) if isinstance(value, (Sequence, ListConfig)) \
            else None
        return values is not None and (bool(values) or self.empty) and all(isinstance(v, str) and v.strip()
                                                                           for v in values)

    def describe(self) -> str:
        return f"{self.what} or a list of them" + (" (or [])" if self.empty else "")


@dataclass(frozen=True)
class Numbers(Rule):
    """A list of `count` numbers (any count when 0), each accepted by `each`."""

    count: int = 0
    each: Rule = Number()

    def accepts(self, value) -> bool:
        if isinstance(value, str) or not isinstance(value, (Sequence, ListConfig)):
            return False
        values = list(value)
        return (len(values) == self.count if self.count else len(values) > 0) and all(
            v is not None and self.each.accepts(v) for v in values)

    def describe(self) -> str:
        return f"a list of {self.count or 'one or more'} numbers, each {self.each.describe().removeprefix('a ')}"


@dataclass(frozen=True)
class Size(Rule):
    """An image or patch size: one whole number at least 1, or [H, W]."""

    def accepts(self, value) -> bool:
        values = list(value) if isinstance(value, (Sequence, ListConfig)) and not isinstance(value, str) else [value]
        return len(values) in (1, 2) and all(is_whole(v) and v >= 1 for v in values)

    def describe(self) -> str:
        return "one whole number at least 1, or two ([H, W])"


@dataclass(frozen=True)
class Workers(Rule):
    def accepts(self, value) -> bool:
        return value == "auto" or (is_whole(value) and value >= 0)

    def describe(self) -> str:
        return "auto or a whole number at least 0"


@dataclass(frozen=True)
class Folder(Rule):
    """A folder. must_exist: it must be there already; otherwise it may be made, so
    whatever part of it exists must be a folder, and the nearest existing one writable."""

    must_exist: bool = True
    hint: str = ""  # what belongs in it, said when it is not there

    def check(self, key: str, value) -> None:
        super().check(key, value)
        if value is not None:
            check_folder(key, Path(str(value)).expanduser(), self.must_exist, self.hint)

    def accepts(self, value) -> bool:
        return isinstance(value, str) and value.strip() != ""

    def describe(self) -> str:
        return "a folder's path"


@dataclass(frozen=True)
class File(Rule):
    """An existing, readable file; text=True: UTF-8 text."""

    text: bool = False

    def check(self, key: str, value) -> None:
        super().check(key, value)
        if value is not None:
            check_file(key, Path(str(value)).expanduser(), self.text)

    def accepts(self, value) -> bool:
        return isinstance(value, str) and value.strip() != ""

    def describe(self) -> str:
        return "a file's path"


@dataclass(frozen=True)
class Resume(Rule):
    def check(self, key: str, value) -> None:
        if value in (None, False, "", "none", "auto"):
            return
        if not isinstance(value, str):
            raise UserError(f"resume must be null, auto or a checkpoint folder, got {shown(value)}")
        path = Path(value).expanduser()
        if not path.is_dir():
            raise UserError(f"resume={value}: no such checkpoint folder; give RUN_DIR/checkpoints/step_N or auto")

    def describe(self) -> str:
        return "null, auto or a checkpoint folder"


@dataclass(frozen=True)
class Which(Rule):
    """checkpoint=: best, latest, or a checkpoint folder."""

    def check(self, key: str, value) -> None:
        if value in ("best", "latest"):
            return
        if not isinstance(value, str) or not Path(value).expanduser().is_dir():
            raise UserError(f"{key} must be best, latest or an existing checkpoint folder "
                            f"(RUN_DIR/checkpoints/step_N), got {shown(value)}")

    def describe(self) -> str:
        return "best, latest or a checkpoint folder (RUN_DIR/checkpoints/step_N)"


TARGET = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Target(Rule):
    """stop_at=: a metric, <= or >=, and a number ("val_loss<=1.47", "val_acc>=0.945")."""

    def accepts(self, value) -> bool:
        return isinstance(value, str) and TARGET.match(value) is not None

    def describe(self) -> str:
        return "a metric, <= or >= and a number, e.g. val_loss<=1.47"

    @staticmethod
    def parse(value: str) -> tuple[str, str, float]:
        """"val_loss<=1.47" -> ("val_loss", "<=", 1.47)."""
        metric, op, number = TARGET.match(value).groups()
        return metric, op, float(number)
