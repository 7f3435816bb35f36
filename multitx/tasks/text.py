"""What the text tasks (charlm, mlm) share: a corpus of characters read into memory-mapped token ids,
its vocabulary saved with every checkpoint, the loss of a LanguageModel, throughput in tokens."""

from pathlib import Path

import torch
from omegaconf import DictConfig

from multitx.data.text.corpus import load_corpus
from multitx.engine.runtime import Runtime
from multitx.engine.task import Task


class TextTask(Task):
    unit = "tokens"
    reads = "text"
    artifact_files = ("vocab.json",)
    no_epochs_because = "random windows of a text"

    def __init__(self, cfg: DictConfig, runtime: Runtime):
        super().__init__(cfg, runtime)
        self.corpus = load_corpus(cfg.data, Path(cfg.data_dir))
        self.vocab = self.corpus.vocab

    def artifacts(self) -> dict[str, dict]:
        return {"vocab.json": self.vocab.state()}

    def loss(self, model, batch) -> torch.Tensor:
        inputs, targets = batch[0], batch[1]
        return model(inputs, targets)[1]

    def items_in(self, batch) -> int:
        return batch[0].numel()
