"""Every training key, its type and range, checked before any data or model is built.

    validate(cfg)   raises UserError ("KEY must be ..., got VALUE") for the first bad value

A rule checks one value; `rules_for(cfg)` picks the rules of the keys the composed
config holds: the shared ones (config.yaml), the task's (config/task/*.yaml) and the
dataset's (config/data/*.yaml). Checks that tie keys together (heads dividing width,
patches dividing images...) follow in `check_combinations`. Keys a user adds with
+KEY=VALUE for a task of their own have no rule and are left to that task.
"""

import codecs
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

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
    """One import name or a list of them (model.tokenizer.module)."""

    def accepts(self, value) -> bool:
        values = [value] if isinstance(value, str) else list(value) if isinstance(value, (Sequence, ListConfig)) \
            else None
        return bool(values) and all(isinstance(v, str) and v.strip() for v in values)

    def describe(self) -> str:
        return "a module name or a list of them"


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


@dataclass(frozen=True)
class Which(Rule):
    """checkpoint=: best, latest, or a checkpoint folder."""

    def check(self, key: str, value) -> None:
        if value in ("best", "latest"):
            return
        if not isinstance(value, str) or not Path(value).expanduser().is_dir():
            raise UserError(f"{key} must be best, latest or an existing checkpoint folder "
                            f"(RUN_DIR/checkpoints/step_N), got {shown(value)}")


def check_folder(key: str, path: Path, must_exist: bool, hint: str = "") -> None:
    hint = f"; {hint}" if hint else ""
    if path.exists():
        if not path.is_dir():
            raise UserError(f"{key}={path} is a file, not a folder{hint or '; give a folder'}")
        if not os.access(path, os.R_OK | os.X_OK) or (not must_exist and not os.access(path, os.W_OK)):
            raise UserError(f"{key}={path} cannot be {'read' if must_exist else 'written'}; check its permissions")
        return
    if must_exist:
        raise UserError(f"{key}={path} does not exist{hint or '; give an existing folder'}")
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{key}={path} cannot be made: {parent} is not a writable folder; choose another place")


def check_file(key: str, path: Path, text: bool) -> None:
    if not path.exists():
        raise UserError(f"{key}={path} does not exist; give an existing {'UTF-8 ' if text else ''}file")
    if path.is_dir():
        raise UserError(f"{key}={path} is a folder, not a file; give a file")
    try:
        with open(path, "rb") as f:
            if text:
                decoder = codecs.getincrementaldecoder("utf-8")()
                offset = 0
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    decoder.decode(chunk)
                    offset += len(chunk)
                decoder.decode(b"", final=True)
            else:
                f.read(1)
    except PermissionError:
        raise UserError(f"{key}={path} cannot be read; check its permissions") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{key}={path} is not UTF-8 text (byte {offset + err.start} cannot be decoded); "
                        f"convert it, e.g. iconv -t UTF-8, and try again") from None


# ---------------------------------------------------------------------------------------------- the rules

SHARED = {
    "steps": Whole(min=1), "batch_size": Whole(min=1), "grad_accum": Whole(min=1),
    "lr": POSITIVE, "min_lr": NON_NEGATIVE, "warmup_steps": Whole(min=0), "weight_decay": NON_NEGATIVE,
    "betas": Numbers(count=2, each=RATE), "optimizer": Choice(options=("adamw", "muon")),
    "muon.lr": POSITIVE, "muon.momentum": RATE, "muon.weight_decay": NON_NEGATIVE, "muon.ns_steps": Whole(min=1),
    "grad_clip": NON_NEGATIVE, "device": Choice(options=("auto", "cpu", "cuda")),
    "precision": Choice(options=("auto", "fp32", "bf16")), "compile": Flag(), "deterministic": Flag(),
    "dist_timeout": Number(min=0, open="min"),
    "seed": Whole(min=0), "run_dir": Folder(must_exist=False), "resume": Resume(null=True),
    "eval_every": Whole(min=1), "eval_batches": Whole(min=1), "keep_checkpoints": Whole(min=1),
    "nonfinite": Choice(options=("stop", "skip")), "max_skipped_steps": Whole(min=0), "progress": Flag(),
    "plots": Flag(),
    "data_dir": Folder(must_exist=False), "debug": Flag(), "task.name": Text(), "task._target_": Text(),
    "data.name": Text(),
}

ACTIVATION = Choice(options=("gelu", "relu2"))
WORD_POSITIONS = Choice(options=("learned", "sinusoidal", "rotary"))
PATCH_TOKENIZER = {
    "model.tokenizer.name": Text(), "model.tokenizer._target_": Text(null=True),
    "model.tokenizer.module": Names(null=True), "model.tokenizer.positions": Choice(options=("learned", "sincos",
                                                                                              "none")),
    "model.tokenizer.cls_token": Flag(null=True), "model.tokenizer.stem_width": Numbers(each=Whole(min=1), null=True),
}

CHARLM = {
    "show_tokens": Whole(min=0), "model.layers": Whole(min=1), "model.heads": Whole(min=1), "model.dim": Whole(min=1),
    "model.context": Whole(min=1), "model.dropout": RATE, "model.positions": WORD_POSITIONS,
    "model.activation": ACTIVATION, "model.bias": Flag(),
}

VIT = {
    "eval_images": Whole(min=0), "eval_batch_size": Whole(min=1),
    "augment.crop_padding": Whole(min=0), "augment.flip": Flag(),
    "augment.policy": Choice(options=("none", "autoaugment", "randaugment", "trivialaugment")),
    "augment.ops": Whole(min=1), "augment.magnitude": Whole(min=0, max=30), "augment.erase": PROBABILITY,
    "augment.mixup": NON_NEGATIVE, "augment.cutmix": NON_NEGATIVE, "augment.mix_prob": PROBABILITY,
    "augment.switch_prob": PROBABILITY, "augment.label_smoothing": RATE,
    "model.image_size": Size(), "model.patch_size": Size(), "model.dim": Whole(min=1), "model.layers": Whole(min=1),
    "model.heads": Whole(min=1), "model.mlp_ratio": POSITIVE, "model.activation": ACTIVATION, "model.dropout": RATE,
    "model.drop_path": RATE, "model.pool": Choice(options=("cls", "mean")), "model.pretrained": Text(prefix="timm:",
                                                                                                   null=True),
    **PATCH_TOKENIZER,
}

CAPTION = {
    "captions_per_image": Whole(min=1), "eval_images": Whole(min=0, null=True), "eval_beam": Whole(min=1),
    "length_penalty": NON_NEGATIVE, "show_captions": Whole(min=0),
    "model.image_size": Whole(min=1), "model.patch_size": Whole(min=1), "model.encoder_layers": Whole(min=1),
    "model.encoder_dim": Whole(min=1), "model.encoder_heads": Whole(min=1), "model.encoder_mlp_ratio": POSITIVE,
    "model.encoder_bias": Flag(), "model.encoder_norm_eps": POSITIVE,
    "model.encoder_pretrained": Text(prefix="timm:", null=True), "model.image_mean": Numbers(count=3),
    "model.image_std": Numbers(count=3, each=POSITIVE), "model.decoder_layers": Whole(min=1),
    "model.dim": Whole(min=1), "model.heads": Whole(min=1), "model.positions": WORD_POSITIONS,
    "model.max_caption_len": Whole(min=3), "model.mlp_ratio": POSITIVE, "model.dropout": RATE, "model.bias": Flag(),
    "model.word_dropout": RATE, "model.label_smoothing": RATE,
    **PATCH_TOKENIZER,
}

IMAGE_DATA = {"download": Flag(), "mean": Numbers(null=True), "std": Numbers(each=POSITIVE, null=True),
              "workers": Workers()}
CAPTION_DATA = {"max_images": Whole(min=1, null=True), "min_word_count": Whole(min=1)}
DATA = {
    "pysource": {},
    "shakespeare": {},
    "textfile": {"path": File(text=True, null=True)},
    "cifar10": {"root": Folder(null=True, must_exist=False), **IMAGE_DATA},
    "fashion_mnist": {"root": Folder(null=True, hint="give the folder of Fashion-MNIST's four .gz files"),
                      **IMAGE_DATA},
    "imagefolder": {"root": Folder(null=True, hint="data=imagefolder wants DIR/train/CLASS/*.png and DIR/val/..."),
                    "channels": Choice(options=(1, 3)), **IMAGE_DATA},
    "shapes": {"num_train": Whole(min=1), "num_val": Whole(min=1), "num_test": Whole(min=1), "seed": Whole(min=0),
               "min_word_count": Whole(min=1)},
    "coco": {"root": Folder(null=True, hint="data=coco wants DIR/annotations/ and DIR/train2017/"),
             "train_split": Text(), "val_split": Text(), **CAPTION_DATA},
    "flickr": {"root": Folder(null=True, hint="data=flickr wants DIR/captions.txt and DIR/Images/"),
               "captions": Text(), "images": Text(null=True), "val_size": Whole(min=1),
               "seed": Whole(min=0), **CAPTION_DATA},
}


# The commands that load a run (multitx.sample, multitx.caption): their own keys.
LOADING = {"run_dir": Folder(hint="give run_dir=DIR, the folder python -m multitx.train wrote"),
           "checkpoint": Which(), "device": SHARED["device"], "trust_code": Flag(), "debug": Flag()}
SAMPLE = {**LOADING, "max_new_tokens": Whole(min=1), "temperature": POSITIVE, "top_k": Whole(min=0),
          "seed": Whole(min=0)}
CAPTION_COMMAND = {**LOADING, "image": File(), "beam": Whole(min=1), "length_penalty": NON_NEGATIVE}


def task_kind(cfg: DictConfig) -> str | None:
    """Which of multitx's task families a config is for (custom tasks keep their family's name)."""
    name = str(cfg.task.get("name", ""))
    return "charlm" if name == "charlm" else "caption" if name == "caption" else "vit" if name.startswith("vit") \
        else None


def rules_for(cfg: DictConfig) -> dict[str, Rule]:
    task = {"charlm": CHARLM, "vit": VIT, "caption": CAPTION}.get(task_kind(cfg), {})
    data = DATA.get(str(cfg.data.get("name")), {})
    return {**SHARED, **task, **{f"data.{key}": rule for key, rule in data.items()}}


def leaves(node, prefix: str = ""):
    """(dotted key, value) of every leaf of a config; lists are leaves."""
    for key, value in node.items():
        if isinstance(value, Mapping | DictConfig):
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def validate(cfg: DictConfig) -> None:
    """Check every value of a composed training config, then the keys that go together."""
    rules = rules_for(cfg)
    values = dict(leaves(OmegaConf.to_container(cfg, resolve=True)))
    for key, rule in rules.items():
        if key in values:
            rule.check(key, values[key])
    if str(cfg.data.get("name")) not in DATA:
        raise UserError(f"unknown dataset data.name={cfg.data.name}; choose one of: {', '.join(DATA)}")
    check_combinations(cfg, values)


def check_combinations(cfg: DictConfig, v: dict) -> None:
    """Settings that are each fine alone but not together."""
    if v["min_lr"] > v["lr"]:
        raise UserError(f"min_lr ({v['min_lr']:g}) must not exceed lr ({v['lr']:g}): the schedule decays lr to min_lr")
    for width, heads in (("model.dim", "model.heads"), ("model.encoder_dim", "model.encoder_heads")):
        if width in v and heads in v and v[width] % v[heads]:
            raise UserError(f"{width}={v[width]} is not divisible by {heads}={v[heads]}: each head gets "
                            f"{width} / {heads} channels; choose a head count that divides the width")
    for width, ratio in (("model.dim", "model.mlp_ratio"), ("model.encoder_dim", "model.encoder_mlp_ratio")):
        if width in v and ratio in v and int(v[width] * v[ratio]) < 1:
            raise UserError(f"{ratio}={v[ratio]:g} leaves the MLP no hidden units at {width}={v[width]} "
                            f"(int(width x ratio) must be at least 1)")
    if v.get("model.positions") == "rotary" and "model.heads" in v and (v["model.dim"] // v["model.heads"]) % 2:
        raise UserError(f"model.positions=rotary turns channel pairs: the width per head "
                        f"({v['model.dim']} / {v['model.heads']}) must be even")
    if "model.image_size" in v and "model.patch_size" in v:
        image, patch = as_pair(v["model.image_size"]), as_pair(v["model.patch_size"])
        if image[0] % patch[0] or image[1] % patch[1]:
            raise UserError(f"image size {image[0]}x{image[1]} is not divisible by patch size {patch[0]}x{patch[1]}"
                            f"; choose a patch size that divides it, or set model.image_size")
    if v.get("model.tokenizer.positions") == "sincos":
        width = v.get("model.encoder_dim", v.get("model.dim"))
        if width % 4:
            raise UserError(f"model.tokenizer.positions=sincos splits the width in four (rows and columns, sin and "
                            f"cos): {width} is not divisible by 4")
    if v.get("model.pool") == "cls" and v.get("model.tokenizer.cls_token") is False:
        raise UserError("model.pool=cls reads the CLS token, but model.tokenizer.cls_token=false; "
                        "set model.tokenizer.cls_token=true or model.pool=mean")
    if (v.get("augment.mixup", 0) > 0 or v.get("augment.cutmix", 0) > 0) and v["batch_size"] % 2:
        raise UserError(f"Mixup/CutMix pair each image with another: batch_size must be even, got {v['batch_size']}")
    if v.get("data.name") == "textfile" and not v.get("data.path"):
        raise UserError("data=textfile needs a file: add data.path=FILE")
    needs_root = {"imagefolder": "data=imagefolder needs a folder: add data.root=DIR with DIR/train/CLASS/*.png",
                  "coco": "data=coco needs a folder: add data.root=DIR with annotations/ and train2017/",
                  "flickr": "data=flickr needs a folder: add data.root=DIR with captions.txt and Images/"}
    if v.get("data.name") in needs_root and not v.get("data.root"):
        raise UserError(needs_root[v["data.name"]])
    if v.get("data.name") == "flickr":
        captions = Path(str(v["data.root"])).expanduser() / str(v["data.captions"])
        check_file("data.captions", captions, text=True)


def as_pair(size) -> tuple[int, int]:
    values = list(size) if isinstance(size, Sequence) and not isinstance(size, str) else [size]
    return (values[0], values[-1])
