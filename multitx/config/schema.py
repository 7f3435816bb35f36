"""Every training key, its type and range, checked before any data or model is built.

    validate(cfg)   raises UserError ("KEY must be ..., got VALUE") for the first bad value

A rule (config/rules.py) checks one value; `rules_for(cfg, task_rules)` picks the rules
of the keys the composed config holds: the shared ones (config.yaml), the task's (its
Task class's `rules`, e.g. CHARLM below) and the dataset's (config/data/*.yaml). Every
trunk of every model is checked by the one TRUNK schema, under its own prefix. Checks
that tie keys together (heads dividing width, patches dividing images...) follow in
`check_combinations`. Keys a user adds with
+KEY=VALUE for a task of their own have no rule and are left to that task.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from multitx.config.paths import check_file
from multitx.config.rules import (
    NON_NEGATIVE,
    POSITIVE,
    PROBABILITY,
    RATE,
    Choice,
    File,
    Flag,
    Folder,
    Names,
    Number,
    Numbers,
    Resume,
    Rule,
    Size,
    Target,
    Text,
    Which,
    Whole,
    Workers,
)
from multitx.engine.hardware import PRECISIONS, Device
from multitx.errors import UserError

# ---------------------------------------------------------------------------------------------- the rules

SHARED = {
    "steps": Whole(min=1, null=True), "batch_size": Whole(min=1), "grad_accum": Whole(min=1),
    "epochs": Whole(min=1, null=True), "warmup_epochs": Whole(min=0, null=True),  # engine/length.py
    "eval_every_epochs": Whole(min=1, null=True),
    "lr": POSITIVE, "min_lr": NON_NEGATIVE, "warmup_steps": Whole(min=0, null=True), "weight_decay": NON_NEGATIVE,
    "betas": Numbers(count=2, each=RATE), "optimizer": Choice(options=("adamw", "muon")),
    "muon.lr": POSITIVE, "muon.momentum": RATE, "muon.weight_decay": NON_NEGATIVE, "muon.ns_steps": Whole(min=1),
    "grad_clip": NON_NEGATIVE, "device": Device(),  # auto, cpu, cuda, cuda:N, mps
    "precision": Choice(options=PRECISIONS), "compile": Flag(), "deterministic": Flag(),
    "dist_timeout": Number(min=0, open="min"),
    "seed": Whole(min=0), "run_dir": Folder(must_exist=False), "resume": Resume(null=True),
    "eval_every": Whole(min=1, null=True), "eval_batches": Whole(min=1), "keep_checkpoints": Whole(min=1),
    "nonfinite": Choice(options=("stop", "skip")), "max_skipped_steps": Whole(min=0), "progress": Flag(),
    "plots": Flag(), "stop_at": Target(null=True),
    "data_dir": Folder(must_exist=False), "debug": Flag(), "task.name": Text(), "task._target_": Text(),
    "data.name": Text(),
}

ACTIVATION = Choice(options=("gelu", "relu2"))
WORD_POSITIONS = Choice(options=("learned", "sinusoidal", "rotary"))
TRUNK = {  # TrunkConfig (multitx/nn/trunk.py): one schema for every trunk of every model
    "dim": Whole(min=1), "layers": Whole(min=1), "heads": Whole(min=1), "mlp_ratio": POSITIVE,
    "activation": ACTIVATION, "bias": Flag(), "dropout": RATE, "drop_path": RATE, "norm_eps": POSITIVE,
    "qk_norm": Flag(), "zero_init": Flag(),
}
PATCH_TOKENIZER = {
    "name": Text(), "_target_": Text(null=True), "module": Names(null=True),
    "positions": Choice(options=("learned", "sincos", "none")), "cls_token": Flag(null=True),
    "stem_width": Numbers(each=Whole(min=1), null=True),
}


def section(prefix: str, rules: dict[str, Rule]) -> dict[str, Rule]:
    """The rules of a nested section, e.g. section("model.trunk", TRUNK) -> {"model.trunk.dim": ...}."""
    return {f"{prefix}.{key}": rule for key, rule in rules.items()}


LANGUAGE_MODEL = {"model.context": Whole(min=1), "model.positions": WORD_POSITIONS, "model.causal": Flag(),
                  "model.tie_head": Flag(), "model.value_embeds": Flag(), "model.logit_softcap": NON_NEGATIVE,
                  **section("model.trunk", TRUNK)}
CHARLM = {"show_tokens": Whole(min=0), **LANGUAGE_MODEL}

VIT = {
    "eval_images": Whole(min=0), "eval_batch_size": Whole(min=1),
    "augment.crop_padding": Whole(min=0), "augment.flip": Flag(),
    "augment.policy": Choice(options=("none", "autoaugment", "randaugment", "trivialaugment")),
    "augment.ops": Whole(min=1), "augment.magnitude": Whole(min=0, max=30), "augment.erase": PROBABILITY,
    "augment.mixup": NON_NEGATIVE, "augment.cutmix": NON_NEGATIVE, "augment.mix_prob": PROBABILITY,
    "augment.switch_prob": PROBABILITY, "augment.label_smoothing": RATE,
    "model.image_size": Size(null=True), "model.patch_size": Size(null=True),
    "model.pool": Choice(options=("cls", "mean")),
    "pretrained_lr_scale": Number(min=0, max=1, open="min"),
    "model.pretrained": Text(prefix="timm:", null=True),
    **section("model.trunk", TRUNK), **section("model.tokenizer", PATCH_TOKENIZER),
}

CAPTION = {
    "captions_per_image": Whole(min=1), "eval_images": Whole(min=0, null=True), "eval_beam": Whole(min=1),
    "length_penalty": NON_NEGATIVE, "show_captions": Whole(min=0),
    "model.image_size": Whole(min=1), "model.patch_size": Whole(min=1),
    "model.encoder_pretrained": Text(prefix="timm:", null=True), "model.image_mean": Numbers(count=3),
    "model.image_std": Numbers(count=3, each=POSITIVE), "model.positions": WORD_POSITIONS,
    "model.max_caption_len": Whole(min=3), "model.word_dropout": RATE, "model.label_smoothing": RATE,
    **section("model.encoder", TRUNK), **section("model.decoder", TRUNK), **section("model.tokenizer", PATCH_TOKENIZER),
}

HOLD_OUT = {"val_fraction": Number(min=0, max=1, open="both"), "split_seed": Whole(min=0)}
IMAGE_DATA = {**HOLD_OUT, "download": Flag(), "mean": Numbers(null=True), "std": Numbers(each=POSITIVE, null=True),
              "workers": Workers()}
CAPTION_DATA = {**HOLD_OUT, "max_images": Whole(min=1, null=True), "min_word_count": Whole(min=1)}
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
    return name if name in ("charlm", "mlm", "caption") else "vit" if name.startswith("vit") else None


def rules_for(cfg: DictConfig, task_rules: dict[str, Rule]) -> dict[str, Rule]:
    """The rules of a composed config's keys: the shared ones, the task's (its class's `rules`), the dataset's."""
    data = DATA.get(str(cfg.data.get("name")), {})
    return {**SHARED, **task_rules, **{f"data.{key}": rule for key, rule in data.items()}}


def leaves(node, prefix: str = ""):
    """(dotted key, value) of every leaf of a config; lists are leaves."""
    for key, value in node.items():
        if isinstance(value, Mapping | DictConfig):
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def validate(cfg: DictConfig, task_rules: dict[str, Rule]) -> None:
    """Check every value of a composed training config, then the keys that go together."""
    rules = rules_for(cfg, task_rules)
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
    trunks = [p for p in ("model.trunk", "model.encoder", "model.decoder")
              if all(f"{p}.{key}" in v for key in ("dim", "heads", "mlp_ratio"))]
    for t in trunks:
        width, heads, ratio = v[f"{t}.dim"], v[f"{t}.heads"], v[f"{t}.mlp_ratio"]
        if width % heads:
            raise UserError(f"{t}.dim={width} is not divisible by {t}.heads={heads}: each head gets "
                            f"dim / heads channels; choose a head count that divides the width")
        if int(width * ratio) < 1:
            raise UserError(f"{t}.mlp_ratio={ratio:g} leaves the MLP no hidden units at {t}.dim={width} "
                            f"(int(dim x mlp_ratio) must be at least 1)")
    words = "model.decoder" if "model.decoder.dim" in v else "model.trunk"
    if v.get("model.positions") == "rotary" and words in trunks and (v[f"{words}.dim"] // v[f"{words}.heads"]) % 2:
        raise UserError(f"model.positions=rotary turns channel pairs: the width per head "
                        f"({v[f'{words}.dim']} / {v[f'{words}.heads']}) must be even")
    for key in ("model.image_size", "model.patch_size"):
        if key in v and v[key] is None and task_kind(cfg) == "vit" and not v.get("model.pretrained"):
            raise UserError(f"{key}=null means a pretrained model's own: give model.pretrained=timm:NAME too, "
                            f"or a size")
    if v.get("model.image_size") is not None and v.get("model.patch_size") is not None:
        image, patch = as_pair(v["model.image_size"]), as_pair(v["model.patch_size"])
        if image[0] % patch[0] or image[1] % patch[1]:
            raise UserError(f"image size {image[0]}x{image[1]} is not divisible by patch size {patch[0]}x{patch[1]}"
                            f"; choose a patch size that divides it, or set model.image_size")
    if v.get("model.tokenizer.positions") == "sincos":
        width = v.get("model.encoder.dim", v.get("model.trunk.dim"))
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
