"""Datasets by name: `data=NAME` picks one; the fields of its settings class are the `data.*` keys.

Three kinds, one base class each; a dataset is a dataclass of its settings with a classmethod
that reads it:

    TextData      text(data, data_dir) -> str                       (task=charlm, mlm)
    ImageData     images(data, data_dir, image_size) -> (train, test) ImageSets   (the ViTs)
    CaptionData   split(data, name, image_size, data_dir) -> CaptionSplit       (task=caption)

A dataset of your own is one class in your own package (tests/helpers_user_data.py is one):

    @register_dataset("stripes")
    @dataclass
    class Stripes(ImageData):
        count: int = setting(100, Whole(min=1), "images per class")

        @classmethod
        def images(cls, data, data_dir, image_size): ...    # -> (train, test) ImageSets

    python -m multitx.train task=vit_cifar_quick data.module=my_pkg data=stripes data.count=50

(`data.module` is imported before the command line is composed, so that `data=stripes` is known.)
"""

import hashlib
from dataclasses import dataclass
from typing import ClassVar

from multitx.config.compose import store_node
from multitx.config.rules import POSITIVE, Choice, File, Names, Number, Numbers, Text, Whole, Workers
from multitx.config.settings import defaults_of, setting
from multitx.errors import UserError
from multitx.registry import Registry


@dataclass
class DataSettings:
    """The keys every dataset has; a dataset's class adds its own."""

    kind: ClassVar[str] = ""  # text | images | captions: which tasks can read it
    name: str = setting("", Text(), "the dataset (data=NAME picks it)")
    module: str | list | None = setting(None, Names(null=True),
                                        "imported first, so that the datasets it registers are known")

    @classmethod
    def check(cls, data: dict) -> None:
        """Settings that must go together, or a path that must be there, before anything is read."""


@dataclass
class CorpusInputs:
    """What a text dataset is read from: sources of chunks (data/text/prepare.py: Source), validation's own
    or None (the last 10% of the text), what identifies them (the cache is prepared again when it changes) and
    the cache folder's name under DATA_DIR."""

    train: list
    val: list | None
    identity: str
    folder: str


@dataclass
class Subwords:
    """data.tokenizer=bpe's keys, for a text and for captions alike."""

    vocab_size: int = setting(2048, Whole(min=1), "bpe: tokens in the vocabulary, the 256 bytes and the special "
                              "tokens among them")
    tokenizer_file: str | None = setting(None, File(null=True), "bpe: a trained tokenizer.json (GPT-2's, yours) "
                                         "instead of training one")


@dataclass
class TextData(Subwords, DataSettings):
    kind: ClassVar[str] = "text"
    tokenizer: str = setting("char", Text(), "how the text becomes tokens: a registered text tokenizer "
                             "(data/text/tokenizers.py): char | bpe | yours")
    workers: str | int = setting("auto", Workers(), "processes that tokenise a corpus being prepared: auto (the "
                                 "CPU cores, at most 8, from 16 MB of text) or a number; 0: this process")
    special_tokens: list = setting(["<|endoftext|>"], Names(what="a token's text", empty=True),
                                   "bpe: tokens never split or merged (GPT-2's end of text)")

    @classmethod
    def text(cls, data, data_dir) -> str:
        """The whole corpus, to be split 90/10 into train and val (a corpus that fits in memory)."""
        raise NotImplementedError

    @classmethod
    def inputs(cls, data, data_dir) -> CorpusInputs:
        """What the corpus is read from: by default the one text `text` returns, identified by its sha256."""
        from multitx.data.text.prepare import text_source

        text = cls.text(data, data_dir)
        return CorpusInputs([text_source(text, data["name"])], None,
                            hashlib.sha256(text.encode("utf-8")).hexdigest(), str(data["name"]))

    @classmethod
    def prepared(cls, data, data_dir):
        """Token ids already prepared elsewhere, (train ids, val ids, tokenizer), read as they are instead of
        `text` (nanoGPT's train.bin: data/text/nanogpt.py); None: prepare them from `text`."""
        return None


@dataclass
class HeldOut:
    """A share of the training items held out to choose the best checkpoint on (the dataset's own test
    split is scored once, at the end)."""

    val_fraction: float = setting(0.1, Number(min=0, max=1, open="both"),
                                  "of the training items, held out to choose the best checkpoint on")
    split_seed: int = setting(0, Whole(min=0), "which ones: the same seed holds out the same items")


@dataclass
class ShardCached:
    """Images decoded from files once, into uint8 shards under DATA_DIR that later runs memory-map
    (data/images/shards.py), or decoded each time they are drawn."""

    cache: str = setting("auto", Choice(options=("auto", "shards", "lazy")),
                         "shards: decoded once into DATA_DIR, then memory-mapped; lazy: decoded when drawn, nothing "
                         "written; auto: shards if they fit in 90% of the free disk, else lazy")


@dataclass
class BatchWorkers:
    """data.workers of the tasks whose batches a DataLoader makes (data/workers.py): the ViTs' and the
    captioners'. (A text's data.workers is another thing: the processes that tokenise it.)"""

    workers: str | int = setting("auto", Workers(), "processes that make the training batches ahead of the step: "
                                 "they read the images (decoding them, data.cache=lazy) and augment them (the "
                                 "ViTs); auto (GPU: the CPU cores less one, CPU: 0) or a number; 0: this process")


@dataclass
class ImageData(HeldOut, BatchWorkers, DataSettings):
    """Labelled images (the ViTs): the held-out share, normalisation and the batch-making workers."""

    kind: ClassVar[str] = "images"
    mean: list | None = setting(None, Numbers(null=True), "per channel; null: measured on the training images")
    std: list | None = setting(None, Numbers(each=POSITIVE, null=True), "per channel; null: measured")

    @classmethod
    def images(cls, data, data_dir, image_size: tuple[int, int]):
        """(train, test) ImageSets, fitted to image_size (H, W) or not yet (the caller resizes)."""
        raise NotImplementedError


@dataclass
class CaptionData(DataSettings):
    kind: ClassVar[str] = "captions"
    separate_val: ClassVar[bool] = False  # a val split of its own (else val_fraction of train is held out)

    @classmethod
    def split(cls, data, split: str, image_size: int, data_dir):
        """The CaptionSplit of `split`: train | val | test."""
        raise NotImplementedError


def store_dataset(name: str, cls: type) -> None:
    """The config store learns a dataset's keys and defaults, so that data=NAME composes them."""
    store_node("data", name, {**defaults_of(cls), "name": name})


DATASETS = Registry("dataset", "data", DataSettings, "multitx.DataSettings", on_register=store_dataset)
register_dataset = DATASETS.register


def dataset(name: str, kind: str) -> type:
    """The dataset class `data=name` picks, which must be of `kind` (text, images, captions)."""
    cls = DATASETS.get(name)
    if cls.kind != kind:
        of_kind = [n for n in DATASETS if DATASETS.entries[n].kind == kind]
        raise UserError(f"data={name} holds {cls.kind or 'nothing of a known kind'}, and this task reads "
                        f"{kind}: use data={', data='.join(of_kind)}")
    return cls
