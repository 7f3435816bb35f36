"""task=lm: a GPT trained on random windows of a text, in the tokens of any text tokenizer
(data.tokenizer=bpe: subwords; char: characters, which is task=charlm, tasks/charlm.py)."""

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import open_dict
from torch import nn

from multitx.config.rules import Whole
from multitx.config.settings import from_settings, plain, section, setting, settings_of
from multitx.data.text.corpus import TokenWindows
from multitx.data.text.tokenizers import tokenizer_from_state
from multitx.engine.task import Exportable, register_task
from multitx.errors import UserError
from multitx.models.language_model import LanguageModel, LanguageModelConfig
from multitx.tasks.text import TextTask


@dataclass
class LanguageModelSettings:
    show_tokens: int = setting(200, Whole(min=0), "tokens sampled at each evaluation (0: none)")
    model: dict = section(dict, "the language model (models/language_model.py)", schema=LanguageModelConfig)


@register_task("lm")
class LanguageModelTask(TextTask):
    name = "lm"
    settings = LanguageModelSettings
    called, recipe = "language model", "task=lm"
    tools = ("sample", "evaluate", "inspect", "explore", "export")

    @classmethod
    def build(cls, settings, artifacts) -> tuple[LanguageModel, dict]:
        vocab = tokenizer_from_state(artifacts["vocab.json"])
        settings = {**plain(settings), "pretrained": None}  # the weights come from the checkpoint
        return LanguageModel(from_settings(LanguageModelConfig, settings, vocab_size=vocab.vocab_size)), \
            {"vocab": vocab}

    def build_model(self) -> LanguageModel:
        spec = self.cfg.model.get("pretrained")
        if not spec:
            return self.build(self.cfg.model, self.artifacts())[0]
        from multitx.models.from_gpt2 import gpt2_folder, gpt2_from_folder

        folder = gpt2_folder(str(spec))
        model = gpt2_from_folder(folder, where=f"model.pretrained={spec}")
        if model.config.vocab_size != self.vocab.vocab_size:
            raise UserError(f"model.pretrained={spec} has {model.config.vocab_size} tokens and the run's tokenizer "
                            f"{self.vocab.vocab_size}: give the model's own tokenizer, data.tokenizer=bpe "
                            f"data.tokenizer_file={folder / 'tokenizer.json'}")
        model.config.pretrained = str(spec)
        with open_dict(self.cfg):  # config.yaml records the model that was built: GPT-2's shape, not the recipe's
            self.cfg.model = settings_of(model.config)
        return model

    def train_batches(self) -> TokenWindows:
        return TokenWindows(self.corpus.train, self.cfg.batch_size, self.cfg.model.context, seed=self.cfg.seed,
                            rank=self.runtime.rank, world_size=self.runtime.world_size)

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        """Mean loss over `eval_batches` windows of the val split, the same windows every time."""
        windows = TokenWindows(self.corpus.val, self.cfg.batch_size, self.cfg.model.context, seed=self.cfg.seed)
        losses = []
        for _ in range(self.cfg.eval_batches):
            with self.runtime.autocast():
                losses.append(self.loss(model, self.runtime.to_device(next(windows))).float())
        return {"val_loss": torch.stack(losses).mean().item()}

    @torch.no_grad()
    def report(self, model, split: str, out_dir: Path) -> dict:
        """Loss per token and bits per character over the whole val split, read as consecutive windows of the
        context (each token predicted once; the held-out last 10% of the text is the only evaluation split).
        Bits per character (the loss summed over the tokens, in bits, over the characters they spell) compare a
        character model with a subword one on the same text."""
        if split != "val":
            raise UserError(f"a {self.cfg.task.name} run holds out one split of its text, val (the last 10%); "
                            f"give split=val")
        context, tokens = self.cfg.model.context, torch.from_numpy(self.corpus.val.astype("int64"))
        windows = (len(tokens) - 1) // context
        inputs = tokens[: windows * context].view(windows, context)  # (W, T)
        targets = tokens[1 : windows * context + 1].view(windows, context)
        total = 0.0
        for start in range(0, windows, self.cfg.batch_size):
            batch = self.runtime.to_device((inputs[start:start + self.cfg.batch_size],
                                            targets[start:start + self.cfg.batch_size]))
            with self.runtime.autocast():
                total += self.loss(model, batch).double().item() * len(batch[0])
        loss = total / max(windows, 1)
        characters = len(self.vocab.decode(targets.flatten().tolist()))
        nats = total * context  # total: the sum over windows of each window's mean loss per token
        return {"loss": loss, "bits_per_char": nats / max(characters, 1) / math.log(2), "tokens": windows * context,
                "characters": characters}

    @torch.no_grad()
    def show(self, model) -> str:
        n = self.cfg.show_tokens
        if n <= 0:
            return ""
        generator = torch.Generator(self.runtime.device).manual_seed(self.cfg.seed)
        start = torch.tensor([[first_token(self.vocab)]], device=self.runtime.device)  # (1, 1)
        with self.runtime.autocast():
            ids = model.generate(start, n, temperature=0.8, top_k=40, generator=generator)
        return self.vocab.decode(ids[0, 1:].tolist())

    @classmethod
    def save_hf(cls, run, folder: Path) -> str:
        """config.json and model.safetensors that transformers' GPT2LMHeadModel loads (and a BPE run's
        tokenizer.json beside them); read back and run against the model before it is done."""
        from multitx.models.from_gpt2 import gpt2_from_folder, save_gpt2

        save_gpt2(run.model, folder)
        holds = "config.json, model.safetensors"
        if hasattr(run.vocab, "tokenizer"):
            run.vocab.tokenizer.save(str(folder / "tokenizer.json"))
            holds += ", tokenizer.json"
        ids = torch.randint(0, run.model.config.vocab_size, (2, min(run.model.config.context, 16)),
                            generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            gap = (gpt2_from_folder(folder).eval()(ids)[0] - run.model(ids)[0]).abs().max().item()
        if not gap <= 1e-4:
            raise UserError(f"the GPT-2 folder {folder} gives logits {gap:.3g} away from the model's; it is not usable")
        return holds

    @classmethod
    def exportable(cls, run) -> Exportable:
        """ids (B, T) int64, 1 <= T <= context -> logits (B, T, vocab); B and T dynamic. The sidecar holds the
        tokenizer: a character model's characters (id i is chars[i]), a subword model's tokenizer.json."""
        context, vocab = int(run.config.model.context), run.vocab
        generator = torch.Generator().manual_seed(0)
        example = torch.randint(0, vocab.vocab_size, (2, min(context, 8)), generator=generator)
        # T dynamic up to the context (the learned position table's length); a context of 1 leaves nothing to vary
        batch = torch.export.Dim("batch", min=1)
        dims = {0: batch, 1: torch.export.Dim("tokens", min=1, max=context)} if context > 1 else {0: batch}
        tokens = "tokens" if context > 1 else 1
        about = {"input": {"name": "ids", "dtype": "int64", "shape": ["batch", tokens], "max_tokens": context},
                 "output": {"name": "logits", "dtype": "float32", "shape": ["batch", tokens, vocab.vocab_size]},
                 **tokenizer_for_export(vocab), "vocab_size": vocab.vocab_size, "context": context,
                 "postprocess": "softmax(logits[:, -1] / temperature) is the next token's distribution"}
        generator.manual_seed(1)  # two batch sizes, neither the example's: at the longest length and a shorter one
        checks = [torch.randint(0, vocab.vocab_size, (b, t), generator=generator)
                  for b, t in ((1, context), (3, max(1, context // 2)))]
        return Exportable(LogitsOnly(run.model).eval(), "ids", example, {"ids": dims}, about, checks,
                          ("chars" if "chars" in about else "the tokenizer") + " and context")


def tokenizer_for_export(vocab) -> dict:
    """What a user of an exported model needs to make its ids and read them back."""
    if hasattr(vocab, "chars"):
        return {"chars": vocab.chars, "preprocess": "id i is chars[i]; at most `context` ids at once (keep the "
                                                    "last ones)"}
    state = vocab.state()
    return {"tokenizer": state.get("tokenizer", state),
            "preprocess": "ids from the tokenizer (tokenizers.Tokenizer.from_str(json.dumps(tokenizer))); at most "
                          "`context` ids at once (keep the last ones)"}


def first_token(vocab) -> int:
    """Where a sample starts: a new line, if the tokenizer has one."""
    try:
        return vocab.encode("\n")[0]
    except (UserError, IndexError):
        return 0


class LogitsOnly(nn.Module):
    """A char LM as an exported graph takes it: ids (B, T) -> logits (B, T, vocab), no loss, no KV cache."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(ids)[0]
