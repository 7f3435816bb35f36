"""What the text tasks (charlm, mlm) share: a corpus of characters read into memory-mapped token ids,
its vocabulary saved with every checkpoint, the loss of a LanguageModel, throughput in tokens, and
what multitx.inspect shows of them: attention between the characters of a prompt."""

from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from multitx.data.text.corpus import load_corpus
from multitx.engine.runtime import Runtime
from multitx.engine.task import Inspection, Task
from multitx.errors import UserError
from multitx.nn.trace import trace


class TextTask(Task):
    unit = "tokens"
    reads = "text"
    artifact_files = ("vocab.json",)
    no_epochs_because = "random windows of a text"
    writes = True  # inspect: the model continues the prompt (a causal LM); False: it reads it at once, both ways

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

    @classmethod
    def inspect(cls, run, *, prompt: str | None, image: str | None, new_tokens: int, device,
                seed: int = 1) -> Inspection:
        """The model on `prompt`, or on the start of the run's validation text; a causal model first writes
        up to `new_tokens` more characters, and the trace is of it reading all of them."""
        if image:
            raise UserError(f"image= is for ViT and caption runs; a {run.task} run takes prompt=\"...\"")
        model, vocab, cfg = run.model, run.vocab, run.config
        context, new_tokens = model.config.context, new_tokens if cls.writes else 0
        if prompt is None:  # the start of the run's own validation text, from a line's beginning
            corpus = load_corpus(cfg.data, Path(cfg.data_dir))
            if corpus.vocab.state() != vocab.state():
                raise UserError(f"the corpus of {run.checkpoint.parent.parent} has changed since training; "
                                f"give prompt=\"...\" instead")
            text = vocab.decode(np.asarray(corpus.val[: 4 * context]).tolist())
            start = text.find("\n") + 1 if "\n" in text[: context] else 0
            prompt, source = text[start : start + max(context // 2, 1)], "the start of the run's validation text"
        else:
            source = "prompt=" + repr(prompt)
        if not prompt:
            raise UserError("prompt= is empty; give some text, e.g. prompt=\"def \"")
        ids = torch.tensor([vocab.encode(prompt)[-context:]], device=device)  # (1, T); unknown characters: one line
        room = max(0, min(new_tokens, context - ids.shape[1]))
        generator = torch.Generator(device).manual_seed(seed)
        with torch.no_grad():
            ids = model.generate(ids, room, temperature=0.8, top_k=40, generator=generator) if room else ids
            with trace(model) as recorded:
                model(ids)
        labels = [vocab.label(token) for token in ids[0].tolist()]
        written = vocab.decode(ids[0, ids.shape[1] - room:].tolist()) if room else ""
        output = f"prompt: {prompt}\nwritten: {written}" if room else f"prompt: {prompt}" + (
            " (read at once, both ways)" if not cls.writes else " (fills the context)" if new_tokens else "")
        return Inspection("tokens", run.checkpoint, source, labels, labels, output, recorded, model, prompt=prompt)

