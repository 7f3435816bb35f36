"""Older run folders' config.yaml in today's shape, so that they load, sample and resume.

multitx 0.1 wrote each model's trunk settings flat beside the model's own
(`model.dim`, `model.heads`; the captioner's `model.encoder_dim` and
`model.decoder_layers`); since 0.2 every trunk is one nested section with the
fields of TrunkConfig (`model.trunk`, `model.encoder`, `model.decoder`).

    migrate(cfg)   the same config, in the nested shape (a config already in it is returned as it is)

The values a 0.1 run had without writing them (its code's fixed choices and
defaults) are filled in, so that the rebuilt model is the one that was trained.
"""

from omegaconf import DictConfig, OmegaConf

from multitx.config.compose import FLAT_TRUNK_KEYS
from multitx.config.settings import added_later
from multitx.models.language_model import LanguageModelConfig
from multitx.nn.trunk import TrunkConfig

# What the 0.1 code used for trunk settings its config did not hold (and the trunk settings added since,
# each as the runs before it had it: `before=` on its TrunkConfig field).
ADDED_IN_0_2 = added_later(TrunkConfig)
LANGUAGE_MODEL_TRUNK = {"mlp_ratio": 4.0, "activation": "gelu", "bias": False, "dropout": 0.0, "drop_path": 0.0,
                        "norm_eps": 1e-5, **ADDED_IN_0_2}
VIT_TRUNK = {"mlp_ratio": 2.0, "activation": "gelu", "bias": True, "dropout": 0.0, "drop_path": 0.0,
             "norm_eps": 1e-6, **ADDED_IN_0_2}
CAPTION_TRUNK = {"mlp_ratio": 4.0, "activation": "gelu", "bias": False, "dropout": 0.0, "drop_path": 0.0,
                 "norm_eps": 1e-5, **ADDED_IN_0_2}
# A language model's options from the speedruns, which runs written before them did not use.
LANGUAGE_MODEL_OPTIONS = {"tie_head": True, "value_embeds": False, "logit_softcap": 0.0,
                          **added_later(LanguageModelConfig)}
HOLDS_OUT = {"cifar10": 0.1, "fashion_mnist": 0.1, "imagefolder": 0.1, "coco": 0.05, "flickr": 0.05}


def is_flat(model: dict) -> bool:
    return "dim" in model and not any(k in model for k in ("trunk", "encoder", "decoder"))


def take(model: dict, names: dict[str, str], defaults: dict) -> dict:
    """A trunk section from the flat keys `names` (trunk field -> 0.1 key), removed from `model`."""
    trunk = dict(defaults)
    for field, old in names.items():
        if old in model:
            trunk[field] = model.pop(old)
    return trunk


def migrate_model(model: dict, task_name: str) -> dict:
    model = dict(model)
    if task_name == "caption":
        shared_dropout = model.pop("dropout", 0.0)
        encoder = take(model, {k: f"encoder_{k}" for k in FLAT_TRUNK_KEYS},
                       {**CAPTION_TRUNK, "dropout": shared_dropout})
        decoder = take(model, {"dim": "dim", "layers": "decoder_layers", "heads": "heads", "mlp_ratio": "mlp_ratio",
                               "bias": "bias"}, {**CAPTION_TRUNK, "dropout": shared_dropout})
        return {**model, "encoder": encoder, "decoder": decoder}
    defaults = VIT_TRUNK if task_name.startswith("vit") else LANGUAGE_MODEL_TRUNK
    trunk = take(model, {k: k for k in FLAT_TRUNK_KEYS}, defaults)
    if not task_name.startswith("vit"):
        model.setdefault("causal", True)
    return {**model, "trunk": trunk}


def fill_trunks(model: dict, task_name: str) -> dict:
    """Trunk settings a run's sections lack (added after it was written) get the value that run had."""
    defaults = CAPTION_TRUNK if task_name == "caption" else VIT_TRUNK if task_name.startswith("vit") \
        else LANGUAGE_MODEL_TRUNK
    for name in ("trunk", "encoder", "decoder"):
        if isinstance(model.get(name), dict):
            model[name] = {**defaults, **model[name]}
    if task_name in ("charlm", "mlm"):
        model = {**LANGUAGE_MODEL_OPTIONS, **model}
    return model


def migrate(cfg: DictConfig) -> DictConfig:
    """A run's config in today's shape; one already in it comes back with the same values."""
    model = cfg.get("model")
    if not isinstance(model, DictConfig):
        return cfg
    task = cfg.get("task")
    name = str(task.get("name", "")) if isinstance(task, DictConfig) else ""
    plain = OmegaConf.to_container(model)
    out = OmegaConf.to_container(cfg)
    out["model"] = fill_trunks(migrate_model(plain, name) if is_flat(plain) else plain, name)
    out.setdefault("optimizer", "adamw")  # runs from before optimizer=muon existed trained with AdamW
    data = out.get("data")
    if isinstance(data, dict) and data.get("name") in HOLDS_OUT:  # added with the validation split (0.2)
        data.setdefault("val_fraction", HOLDS_OUT[data["name"]])
        data.setdefault("split_seed", 0)
    return OmegaConf.create(out)
