"""task=mlm: a BERT-style masked character model, the encoder-only variant of the char LM.

The same LanguageModel as task=charlm with causal=False, so that every character sees
the whole window, on the same corpora (data=pysource, shakespeare, textfile). Of each
window a share `mask_rate` of the positions is chosen (BERT's own count: round(rate x T),
at least one), and of those, BERT's 80/10/10 rule: 80% become the mask token, 10% a
random character of the corpus, 10% stay as they are. The loss is the cross-entropy on
the chosen positions only (a target of -100 elsewhere).

The mask token is one id beyond the corpus's characters: the model's vocabulary is the
corpus's plus one, mask id = the corpus's vocabulary size, so every character of the text,
`_` included, stays an ordinary one.

Metrics at each evaluation (metrics.jsonl): val_loss, on the chosen positions of
`eval_batches` fixed val windows; masked_acc, the share of the positions that show the mask
token whose character the model's most likely guess is (the 10% kept and 10% replaced at
random are in the loss, not in the accuracy: a kept one gives its answer away).

Exact resume and DDP: the masking of a global batch is drawn from a generator seeded by
its data position (the window sampler's state before it, plus a tag of its own), for the
whole global batch, and each process keeps its rows, so a resumed run and N processes see
the masks one uninterrupted process sees; nothing comes from the global RNG.

Filling in blanks in a trained run: `python -m multitx.fill` (multitx/fill.py).
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from multitx.config.rules import Number, Whole
from multitx.config.settings import from_settings, section, setting
from multitx.data.sampler import seeded
from multitx.data.text.corpus import TokenWindows
from multitx.data.text.tokenizers import tokenizer_from_state
from multitx.engine.task import register_task
from multitx.errors import UserError
from multitx.models.language_model import LanguageModel, LanguageModelConfig
from multitx.tasks.text import TextTask

IGNORE = -100  # F.cross_entropy's ignore_index: a position that is not scored
KEEP = -1  # in draw_masks' `becomes`: the input stays as it is
MASKING = 7_919  # the masking's own tag in its seed, apart from the sampler's (ORDER, DRAW, BATCH_SEED)


def draw_masks(rows: int, length: int, rate: float, mask_id: int, generator: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's choice for `rows` windows of `length` characters 0..mask_id-1: (chosen (rows, length)
    bool, becomes (rows, length) int64). round(rate x length) positions of each row are chosen (at
    least one); a chosen one becomes mask_id (80%), a random character (10%) or stays as it is
    (10%); `becomes` is what the input turns into, KEEP (-1) where it stays."""
    count = min(length, max(1, round(rate * length)))
    order = torch.rand(rows, length, generator=generator).argsort(dim=1)  # a random order of each row's positions
    chosen = torch.zeros(rows, length, dtype=torch.bool).scatter_(1, order[:, :count], True)
    fate = torch.rand(rows, length, generator=generator)  # < 0.8: the mask token; < 0.9: a random character
    randoms = torch.randint(mask_id, (rows, length), generator=generator)
    becomes = torch.where(fate < 0.8, mask_id, torch.where(fate < 0.9, randoms, KEEP))
    return chosen, torch.where(chosen, becomes, KEEP)


def apply_masks(ids: torch.Tensor, chosen: torch.Tensor, becomes: torch.Tensor, mask_id: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Windows ids (B, T) with their masks -> (inputs (B, T), targets (B, T): the character where
    chosen, IGNORE elsewhere, shown (B, T) bool: where the input is the mask token)."""
    return torch.where(becomes == KEEP, ids, becomes), torch.where(chosen, ids, IGNORE), becomes == mask_id


def mask_windows(ids: torch.Tensor, rate: float, mask_id: int, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """draw_masks for windows ids (B, T), applied to them: (inputs, targets, shown)."""
    return apply_masks(ids, *draw_masks(*ids.shape, rate, mask_id, generator), mask_id)


class MaskedWindows:
    """TokenWindows' windows (their inputs, T characters each), masked BERT's way: batches of
    (inputs (B, T), targets (B, T), shown (B, T)). The masks of each global batch are drawn for
    all its B x world_size rows from a generator seeded by the batch's data position, and this
    process keeps its rows: the state is the windows' own, nothing more."""

    def __init__(self, tokens: np.ndarray, batch_size: int, context: int, seed: int, *, rate: float, mask_id: int,
                 rank: int = 0, world_size: int = 1):
        self.windows = TokenWindows(tokens, batch_size, context, seed=seed, rank=rank, world_size=world_size)
        self.rate, self.mask_id = rate, mask_id
        self.rows, self.first = batch_size * world_size, rank * batch_size

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        at = self.windows.state_dict()  # {seed, epoch, position}: where this batch is drawn from
        generator = seeded(at["seed"], MASKING, at["epoch"], at["position"])
        ids, _ = next(self.windows)  # (B, T) this process's rows; the targets one further on are the char LM's
        chosen, becomes = draw_masks(self.rows, ids.shape[1], self.rate, self.mask_id, generator)  # the global batch's
        mine = slice(self.first, self.first + len(ids))
        return apply_masks(ids, chosen[mine], becomes[mine], self.mask_id)

    def state_dict(self) -> dict:
        return self.windows.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.windows.load_state_dict(state)


@dataclass
class MaskedLMSettings:
    mask_rate: float = setting(0.15, Number(min=0, max=1, open="both"),
                               "share of each window's characters chosen for the loss (BERT: 0.15)")
    show_fills: int = setting(2, Whole(min=0), "val windows shown filled in at each evaluation (0: none)")
    model: dict = section(dict, "the language model (models/language_model.py), with causal=false",
                          schema=LanguageModelConfig, causal=False)


@register_task("mlm")
class MaskedLMTask(TextTask):
    name = "mlm"
    settings = MaskedLMSettings
    called, recipe = "masked LM", "task=mlm"
    tools = ("fill", "evaluate", "inspect", "explore")
    writes = False  # inspect: it reads the prompt at once, both ways, and writes nothing after it

    @property
    def mask_id(self) -> int:
        return self.vocab.vocab_size  # one beyond the corpus's characters

    @classmethod
    def build(cls, settings, artifacts) -> tuple[LanguageModel, dict]:
        vocab = tokenizer_from_state(artifacts["vocab.json"])
        config = from_settings(LanguageModelConfig, settings, vocab_size=vocab.vocab_size + 1)  # + the mask token
        return LanguageModel(config), {"vocab": vocab, "mask_id": vocab.vocab_size}

    def windows(self, tokens: np.ndarray, batch_size: int, *, rank: int = 0, world_size: int = 1) -> MaskedWindows:
        return MaskedWindows(tokens, batch_size, self.cfg.model.context, self.cfg.seed, rate=self.cfg.mask_rate,
                             mask_id=self.mask_id, rank=rank, world_size=world_size)

    def train_batches(self) -> MaskedWindows:
        return self.windows(self.corpus.train, self.cfg.batch_size, rank=self.runtime.rank,
                            world_size=self.runtime.world_size)

    def scores(self, model, batches) -> dict[str, float]:
        """Loss on the chosen positions, and the accuracy on those shown as the mask token, over `batches`."""
        loss_sum, chosen, right, shown = 0.0, 0, 0, 0
        for batch in batches:
            inputs, targets, masked = self.runtime.to_device(batch)
            with self.runtime.autocast():
                logits, loss = model(inputs, targets)
            n = int((targets != IGNORE).sum())
            loss_sum += loss.double().item() * n
            chosen += n
            guesses = logits[..., :self.mask_id].argmax(-1)  # (B, T): never the mask token itself
            right += int(((guesses == targets) & masked).sum())
            shown += int(masked.sum())
        return {"loss": loss_sum / max(chosen, 1), "masked_acc": right / max(shown, 1), "masked": shown}

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        """val_loss and masked_acc over `eval_batches` batches of the val split, the same windows and masks
        every time."""
        windows = self.windows(self.corpus.val, self.cfg.batch_size)
        found = self.scores(model, (next(windows) for _ in range(self.cfg.eval_batches)))
        return {"val_loss": found["loss"], "masked_acc": found["masked_acc"]}

    @torch.no_grad()
    def report(self, model, split: str, out_dir: Path) -> dict:
        """The same figures over the whole val split, read as consecutive windows of the context, each masked
        from its own seed (the held-out last 10% of the text is the only split an mlm run has)."""
        if split != "val":
            raise UserError("an mlm run holds out one split of its text, val (the last 10%); give split=val")
        context, tokens = self.cfg.model.context, torch.from_numpy(self.corpus.val.astype("int64"))
        ids = tokens[: len(tokens) // context * context].view(-1, context)  # (W, T)
        generator = seeded(self.cfg.seed, MASKING, -1)
        masked = mask_windows(ids, self.cfg.mask_rate, self.mask_id, generator)
        size = self.cfg.batch_size
        found = self.scores(model, (tuple(t[i:i + size] for t in masked) for i in range(0, len(ids), size)))
        return {"loss": found["loss"], "bits_per_masked_char": found["loss"] / math.log(2),
                "masked_acc": found["masked_acc"], "masked_characters": found["masked"]}

    @torch.no_grad()
    def show(self, model) -> str:
        """`show_fills` val windows with their masked characters as █, and the model's one-pass guesses."""
        if self.cfg.show_fills <= 0:
            return ""
        inputs, targets, masked = next(self.windows(self.corpus.val, self.cfg.show_fills))
        with self.runtime.autocast():
            logits, _ = model(self.runtime.to_device(inputs))
        guesses = logits[..., :self.mask_id].argmax(-1).cpu()
        lines = []
        for row in range(len(inputs)):
            m = masked[row]
            seen = "".join("█" if m[i] else self.vocab.decode([t]) for i, t in enumerate(inputs[row].tolist()))
            filled = torch.where(m, guesses[row], torch.where(targets[row] != IGNORE, targets[row], inputs[row]))
            right = int((guesses[row] == targets[row])[m].sum())
            lines += [f"masked: {printable(seen)}",
                      f"filled: {printable(self.vocab.decode(filled.tolist()))}   ({right}/{int(m.sum())} right)"]
        return "\n".join(lines)


def printable(text: str) -> str:
    return text.replace("\n", "⏎").replace("\t", "⇥")
