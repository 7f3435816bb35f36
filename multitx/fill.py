"""python -m multitx.fill: a trained task=mlm run fills in the blanks of a prompt.

    python -m multitx.fill run_dir=DIR prompt="To b_ or not t_ be" [mask_char=_]
           [order=confident|once] [checkpoint=best|latest|PATH] [device=auto] [trust_code=false]

prints the prompt with each `_` (mask_char) replaced by the model's most likely character.
order=confident (the default) fills one blank at a time, the one the model is surest of
first, reading the prompt again with it filled; order=once fills them all from one pass.
A prompt longer than the model's context is read, for each blank, through the window of
`context` characters around it.
"""

from dataclasses import dataclass
from pathlib import Path

import torch

from multitx.cli import OnDevice, RunArgs, parse_args, run_cli
from multitx.config.rules import Choice, Text
from multitx.config.settings import setting
from multitx.data.text.vocab import CharVocab
from multitx.engine.runtime import setup_runtime
from multitx.errors import UserError
from multitx.loading import Loaded, load
from multitx.models.language_model import LanguageModel

TOOL = "python -m multitx.fill"


def blanks_in(prompt: str, mask_char: str) -> list[int]:
    """Where the prompt's blanks are; one clear line when there are none or mask_char is not one character."""
    if len(mask_char) != 1:
        raise UserError(f"mask_char must be one character, got {mask_char!r}")
    blanks = [i for i, c in enumerate(prompt) if c == mask_char]
    if not blanks:
        raise UserError(f"the prompt has no {mask_char} to fill in; write {mask_char} for each missing character, "
                        f"e.g. prompt=\"To b{mask_char} or not t{mask_char} be\"")
    return blanks


@torch.no_grad()
def fill(model: LanguageModel | Loaded, prompt: str, vocab: CharVocab | None = None, *, mask_char: str = "_",
         order: str = "confident") -> str:
    """The prompt with each mask_char replaced by the model's most likely character (never the mask token).
    model: a trained mlm's LanguageModel and its vocab, or a multitx.load() result (vocab from it).
    order: "confident", one blank at a time, the one whose best guess is the most probable first,
    the prompt read again with it filled; "once", every blank from one reading of the prompt.
    Each blank is read through the window of the model's context around it."""
    if isinstance(model, Loaded):
        model, vocab = model.model, model.vocab
    if order not in ("confident", "once"):
        raise UserError(f"order must be confident or once, got {order!r}")
    blanks = blanks_in(prompt, mask_char)
    if not isinstance(vocab, CharVocab):
        raise UserError(f"multitx.fill fills blanks of one character each, and this model reads {vocab.kind} tokens; "
                        f"a masked model on data.tokenizer={vocab.kind} is scored by multitx.evaluate")
    mask_id = vocab.vocab_size
    if model.config.vocab_size != mask_id + 1:
        raise UserError(f"this model reads {model.config.vocab_size} tokens, not the {mask_id} characters of its "
                        f"vocabulary and a mask token: it is not a task=mlm model")
    known = iter(vocab.encode("".join(c for c in prompt if c != mask_char)))  # one clear line for an unknown one
    device = next(model.parameters()).device
    ids = torch.tensor([mask_id if c == mask_char else next(known) for c in prompt], device=device)  # (L,)
    width = min(len(prompt), model.config.context)
    todo = torch.tensor(blanks, device=device)  # (K,) positions still to fill
    while len(todo):
        starts = (todo - width // 2).clamp(0, len(prompt) - width)  # (K,) each blank's window
        windows = ids[starts[:, None] + torch.arange(width, device=device)]  # (K, W)
        logits = model(windows)[0][torch.arange(len(todo), device=device), todo - starts, :mask_id]  # (K, V)
        surest, best = logits.float().softmax(-1).max(-1)  # (K,), (K,)
        if order == "once":
            ids[todo] = best
            break
        k = int(surest.argmax())
        ids[todo[k]] = best[k]
        todo = torch.cat([todo[:k], todo[k + 1:]])
    return vocab.decode(ids.tolist())


@dataclass
class FillArgs(OnDevice, RunArgs):
    prompt: str = setting("", Text(), "the text with a mask_char for each character to fill in")
    mask_char: str = setting("_", Text(), "the blank")
    order: str = setting("confident", Choice(options=("confident", "once")),
                         "confident: the surest blank first, read again; once: all from one reading")


def main(argv: list[str]) -> None:
    args = parse_args(argv, FillArgs, __doc__)
    prompt, mask_char = str(args["prompt"]), str(args["mask_char"])
    if not prompt:
        raise UserError(f"say what to fill in: prompt=\"To b{mask_char} or not t{mask_char} be\", "
                        f"{mask_char} for each missing character")
    blanks_in(prompt, mask_char)  # before anything is loaded
    runtime = setup_runtime(str(args["device"]), "fp32")
    run = load(Path(str(args["run_dir"])), str(args["checkpoint"]), device=runtime.device,
               trust_code=args["trust_code"], tool=TOOL)
    print(fill(run, prompt, mask_char=mask_char, order=str(args["order"])))


if __name__ == "__main__":
    run_cli(main)
