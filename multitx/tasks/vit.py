"""task=vit_cifar, task=vit_fashion: a ViT classifier trained on images.

Data (data=cifar10 | fashion_mnist | imagefolder) is decoded once into uint8
tensors; batches are augmented per image on the CPU (data/images/augment.py), then
normalised and Mixup/CutMix-ed on the device inside `loss`. A validation split is
held out of the training images (data.val_fraction, data.split_seed): each evaluation
scores it (loss, top-1, top-5) and the best val_acc is kept. The test split is scored
once, at the end of training (test_*), and by python -m multitx.evaluate.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, open_dict

from multitx.config.rules import Number, Whole
from multitx.config.settings import from_settings, plain, section, setting, settings_of
from multitx.data.images.augment import AugmentConfig, DeviceAugment, image_transform
from multitx.data.images.batches import ShuffledBatches
from multitx.data.images.datasets import ImageSet, load_images
from multitx.data.images.images import EncodedImage, decode_image, described
from multitx.data.images.splits import hold_out
from multitx.data.workers import data_workers
from multitx.engine.runtime import Runtime
from multitx.engine.task import RIGHT, WRONG, Examples, Exportable, Inspection, Task, register_task
from multitx.errors import UserError
from multitx.models.vit import ViT, ViTConfig
from multitx.nn.patches import pair
from multitx.nn.trace import trace
from multitx.tasks.scores import Scores, classify


@dataclass
class ViTSettings:
    eval_images: int = setting(0, Whole(min=0), "test images per evaluation; 0: all of them")
    eval_batch_size: int = setting(500, Whole(min=1), "images per evaluation batch")
    pretrained_lr_scale: float = setting(1.0, Number(min=0, max=1, open="min"),
                                         "with model.pretrained: the pretrained tokenizer and trunk train at lr x this")
    augment: AugmentConfig = section(AugmentConfig, "augmentation (data/images/augment.py)")
    model: dict = section(dict, "the ViT (models/vit.py)", schema=ViTConfig)


@register_task("vit")
class ViTTask(Task):
    name = "vit"
    unit = "images"
    reads = "images"
    settings = ViTSettings
    artifact_files = ("classes.json",)
    watch = ("val_acc", "max")
    called, recipe = "ViT", "task=vit_*"
    tools = ("predict", "evaluate", "inspect", "explore", "export")

    @classmethod
    def check(cls, cfg: dict) -> None:
        super().check(cfg)
        augment = cfg.get("augment", {})
        if (augment.get("mixup", 0) > 0 or augment.get("cutmix", 0) > 0) and cfg["batch_size"] % 2:
            raise UserError(f"Mixup/CutMix pair each image with another: batch_size must be even, "
                            f"got {cfg['batch_size']}")

    def __init__(self, cfg: DictConfig, runtime: Runtime):
        super().__init__(cfg, runtime)
        self.name = cfg.task.name
        if cfg.model.image_size is None:  # a timm model's own resolution, from its pretrained config (no download)
            from multitx.models.from_timm import timm_input_size

            with open_dict(cfg):
                cfg.model.image_size = list(timm_input_size(timm_name(cfg.model.get("pretrained"))))
        self.image_size = pair(cfg.model.image_size)
        train_set, self.test_set = load_images(cfg.data, Path(cfg.data_dir), self.image_size)
        # The best checkpoint is chosen on images held out of training; the test split is touched only by
        # the final test evaluation and python -m multitx.evaluate.
        self.train_set, self.val_set = hold_out(train_set, cfg.data.val_fraction, cfg.data.split_seed)
        self.classes = self.train_set.classes
        mean, std = self.normalisation()
        if len(mean) != self.train_set.channels or len(std) != self.train_set.channels:
            raise UserError(f"data.mean and data.std need {self.train_set.channels} values (one per channel of "
                            f"{cfg.data.name}), got {len(mean)} and {len(std)}")
        self.set_normalisation(mean, std)

    def set_normalisation(self, mean: list[float], std: list[float]) -> None:
        """The device-side preparation: for training (with Mixup/CutMix) and for evaluation (without)."""
        aug = self.cfg.augment
        self.mean, self.std = mean, std
        self.augment = DeviceAugment(mean, std, classes=len(self.classes), mixup=aug.mixup, cutmix=aug.cutmix,
                                     mix_prob=aug.mix_prob, switch_prob=aug.switch_prob,
                                     label_smoothing=aug.label_smoothing)

    def normalisation(self) -> tuple[list[float], list[float]]:
        """data.mean/std if given, else measured on the training images (per channel)."""
        mean, std = self.cfg.data.get("mean"), self.cfg.data.get("std")
        if mean is None or std is None:
            pixels = self.train_set.images[:10_000].float() / 255  # (n, C, H, W): a sample is plenty
            mean = pixels.mean(dim=(0, 2, 3)).tolist() if mean is None else mean
            std = pixels.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist() if std is None else std
        return [float(m) for m in mean], [float(s) for s in std]

    def artifacts(self) -> dict[str, dict]:
        """classes.json: the class names in label order, and how to prepare an image for the model."""
        return {"classes.json": {"classes": self.classes, "image_size": list(self.image_size),
                                 "channels": self.train_set.channels, "mean": self.mean, "std": self.std}}

    @classmethod
    def build(cls, settings, artifacts) -> tuple[ViT, dict]:
        info = artifacts["classes.json"]
        settings = {**plain(settings), "pretrained": None}  # the weights come from the checkpoint
        config = from_settings(ViTConfig, settings, classes=len(info["classes"]), in_channels=int(info["channels"]))
        return ViT.from_config(config), {"classes": list(info["classes"]), "image_size": tuple(info["image_size"]),
                             "channels": int(info["channels"]), "mean": info["mean"], "std": info["std"]}

    def build_model(self) -> ViT:
        spec = self.cfg.model.get("pretrained")
        if not spec:
            return self.build(self.cfg.model, self.artifacts())[0]
        model = self.pretrained_model(str(spec))
        with open_dict(self.cfg):  # config.yaml records the ViT that was built: timm's shape, not the YAML's
            self.cfg.model = settings_of(model.config)
        return model

    def pretrained_model(self, spec: str) -> ViT:
        """model.pretrained=timm:NAME: timm's pretrained weights, converted; timm's normalisation."""
        from multitx.models.from_timm import timm_pretrained

        name = timm_name(spec)
        m, channels = self.cfg.model, self.train_set.channels
        model, pretrained_cfg = timm_pretrained(name, classes=len(self.classes), image_size=self.image_size,
                                                patch_size=m.patch_size, in_channels=channels,
                                                dropout=m.trunk.dropout, drop_path=m.trunk.drop_path)
        model.config.pretrained = spec
        if len(pretrained_cfg.get("mean", ())) == channels:  # the statistics the weights were trained with
            self.set_normalisation(list(pretrained_cfg["mean"]), list(pretrained_cfg["std"]))
        return model

    def train_batches(self) -> ShuffledBatches:
        cuda = self.runtime.device.type == "cuda"
        return ShuffledBatches(self.train_set, self.cfg.batch_size,
                               transform=image_transform(self.cfg.augment, self.image_size), seed=self.cfg.seed,
                               workers=data_workers(self.cfg.data.get("workers", "auto"), cuda), pin_memory=cuda,
                               rank=self.runtime.rank, world_size=self.runtime.world_size)

    def train_items(self) -> int:
        return len(self.train_set)

    def loss(self, model, batch) -> torch.Tensor:
        images, labels = batch  # (B, C, H, W) uint8 and (B,), on the device
        x, targets = self.augment(images, labels)  # normalised; Mixup/CutMix soft targets
        return self.augment.loss(model(x), targets)

    def split(self, name: str) -> ImageSet:
        return {"val": self.val_set, "test": self.test_set}[name]

    def scores(self, model, name: str, limit: int = 0) -> Scores:
        """Scores on split `name` (its first `limit` images when > 0)."""
        data = self.split(name)
        n = len(data) if limit <= 0 else min(limit, len(data))
        return classify(model, data.images[:n], data.labels[:n], self.augment.normalize, self.cfg.eval_batch_size,
                        len(self.classes), self.runtime.device, self.runtime.autocast)

    def evaluate(self, model) -> dict[str, float]:
        """Loss, top-1 and top-5 accuracy on the validation split (its first eval_images when > 0)."""
        return self.scores(model, "val", self.cfg.eval_images).metrics("val_")

    def test(self, model) -> dict[str, float]:
        return self.scores(model, "test").metrics("test_")

    def report(self, model, name: str, out_dir: Path) -> dict:
        """Every figure of a split: loss, top-1, top-5, accuracy per class, and the confusion matrix
        (as numbers and as OUT_DIR/confusion_SPLIT.png)."""
        scores = self.scores(model, name)
        from multitx.engine.plots import confusion_figure, save

        figure = out_dir / f"confusion_{name}.png"
        save(confusion_figure(scores.confusion.numpy(), self.classes, f"{self.cfg.task.name}, {name} split"), figure)
        return {**scores.metrics(""), "images": len(self.split(name)),
                "per_class_acc": dict(zip(self.classes, scores.per_class(), strict=True)),
                "confusion": scores.confusion.tolist(), "confusion_png": str(figure)}

    @torch.no_grad()
    def examples(self, model, n: int = 16) -> Examples | None:
        """n images of the evaluated validation images, each titled "predicted / true", green when right, red
        when wrong. They are spread evenly over the split (the same ones every evaluation): an image folder lists
        its images class by class, and the first 16 would often be all of one class."""
        evaluated = len(self.val_set) if self.cfg.eval_images <= 0 else min(self.cfg.eval_images, len(self.val_set))
        if evaluated == 0:
            return None
        picked = torch.linspace(0, evaluated - 1, min(n, evaluated)).round().long().unique()  # (n,) indices
        images, labels = self.val_set.images[picked], self.val_set.labels[picked]  # (n, C, H, W) uint8, (n,)
        with self.runtime.autocast():
            logits = model(self.augment.normalize(images.to(self.runtime.device))).float()  # (n, classes)
        pairs = list(zip(logits.argmax(dim=-1).cpu().tolist(), labels.tolist(), strict=True))  # (predicted, true)
        return Examples(images=images.permute(0, 2, 3, 1).numpy(),  # (n, H, W, C)
                        titles=[f"{self.classes[p]} / {self.classes[t]}" for p, t in pairs],
                        colours=[RIGHT if p == t else WRONG for p, t in pairs], heading="predicted / true")

    @classmethod
    def inspect(cls, run, *, prompt: str | None, image: str | None, new_tokens: int, device,
                top_k: int = 5) -> Inspection:
        """The model on `image`, or on the first image of the run's evaluation split: its top classes."""
        if prompt is not None:
            raise UserError(f"prompt= is for charlm runs; a {run.task} run takes image=PATH")
        model, info = run.model, {**run.info, "classes": run.classes}
        pixels, source = input_image(run.config, info, image)
        if pixels.ndim == 2:
            pixels = pixels[..., None]
        x = torch.from_numpy(np.array(pixels)).permute(2, 0, 1)[None].float().to(device) / 255  # (1, C, H, W)
        mean = torch.tensor(info["mean"], device=device).view(1, -1, 1, 1)
        std = torch.tensor(info["std"], device=device).view(1, -1, 1, 1)
        with torch.no_grad(), trace(model) as recorded:
            probs = model((x - mean) / std).softmax(-1)[0]  # (classes,)
        top = probs.topk(min(top_k, len(probs)))
        output = "\n".join(f"{info['classes'][i]}: {p:.1%}" for p, i in zip(top.values.tolist(),
                                                                           top.indices.tolist(), strict=True))
        tok = model.tokenizer
        h, w = tok.grid
        keys = ["CLS"] * tok.num_prefix_tokens + [f"patch ({r},{c})" for r in range(h) for c in range(w)]
        return Inspection("patches", run.checkpoint, source, keys, keys, output, recorded, model, image=pixels,
                          grid=tok.grid, prefix=tok.num_prefix_tokens)

    @classmethod
    def exportable(cls, run) -> Exportable:
        """images (B, C, H, W) float32, normalised -> logits (B, classes); B dynamic."""
        channels, (height, width) = int(run.info["channels"]), tuple(run.info["image_size"])
        generator = torch.Generator().manual_seed(0)
        example = torch.randn(2, channels, height, width, generator=generator)
        about = {"input": {"name": "images", "dtype": "float32", "shape": ["batch", channels, height, width]},
                 "output": {"name": "logits", "dtype": "float32", "shape": ["batch", len(run.classes)]},
                 "classes": list(run.classes), "image_size": [height, width], "channels": channels,
                 "mean": list(run.info["mean"]), "std": list(run.info["std"]),
                 "preprocess": f"scale the image (bicubic, antialiased) until it covers {height}x{width}, keeping "
                               f"its aspect ratio, and cut out the centre; {'RGB' if channels == 3 else 'grey'} "
                               f"pixels / 255, minus mean, divided by std, per channel; (C, H, W) order",
                 "postprocess": "softmax(logits) over the classes; classes[argmax] is the prediction"}
        generator.manual_seed(1)  # two batch sizes, neither the example's
        checks = [torch.randn(b, channels, height, width, generator=generator) for b in (1, 3)]
        return Exportable(run.model, "images", example, {"images": {0: torch.export.Dim("batch", min=1)}}, about,
                          checks, "class names, image size, channels, mean, std")


def input_image(cfg, info: dict, image: str | None) -> tuple[np.ndarray, str]:
    """(H, W, C) uint8 at the model's size: the file given, or the first image of the run's evaluation split."""
    size, channels = tuple(info["image_size"]), int(info["channels"])
    if image:
        source = image if isinstance(image, EncodedImage) else Path(image)
        return decode_image(source, size, channels).permute(1, 2, 0).numpy(), described(image)
    _, evaluation = load_images(cfg.data, Path(cfg.data_dir), size)
    truth = evaluation.classes[int(evaluation.labels[0])]
    return evaluation.images[0].permute(1, 2, 0).numpy(), f"the first evaluation image of the run (a {truth})"


def timm_name(spec) -> str:
    source, _, name = str(spec).partition(":")
    if source != "timm" or not name:
        raise UserError(f"model.pretrained={spec}: write timm:MODEL_NAME, e.g. timm:vit_tiny_patch16_224 "
                        f"(model.image_size=null takes that model's own resolution)")
    return name
