"""Load a run, pick its input, and run the model once under multitx.trace.

One function a task family, each returning an Inspection: what went in, what came
out, and the trace of every attention layer on the way.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from multitx.data.captions.datasets import load_split
from multitx.data.images.datasets import load_images
from multitx.data.images.images import decode_image
from multitx.data.text.corpus import load_corpus
from multitx.engine import checkpoint
from multitx.engine.task import task_kind
from multitx.errors import UserError
from multitx.loading import load
from multitx.models.decoding import caption_images
from multitx.nn.trace import Trace, trace


@dataclass
class Inspection:
    task: str  # "charlm", "vit" or "caption"
    checkpoint: Path
    source: str  # where the input came from
    tokens: list[str]  # a label for each query token: characters, "CLS" and patches, or the words written
    keys: list[str]  # a label for each key token of self-attention
    output: str  # what the model made of it: text, classes with probabilities, a caption
    trace: Trace
    model: nn.Module
    image: np.ndarray | None = None  # (H, W, C) uint8: the picture the model saw
    grid: tuple[int, int] | None = None  # patch rows and columns
    prefix: int = 0  # tokens before the patch grid (CLS)
    shown_words: list[str] = field(default_factory=list)  # captioner: the words whose cross-attention is drawn


def char_label(c: str) -> str:
    return {"\n": "↵", " ": "␣", "\t": "⇥"}.get(c, c)


def kind_of(run_dir: Path, trust_code: bool):
    cfg = checkpoint.run_config(run_dir, None, "multitx.inspect", trust_code=trust_code)
    kind = task_kind(cfg)
    if kind is None:
        raise UserError(f"{run_dir} is a {cfg.task.name} run; multitx.inspect knows charlm, mlm, vit_* and caption "
                        f"runs")
    return kind, cfg


def inspect_charlm(run_dir: Path, cfg, which: str, prompt: str | None, device, trust_code: bool,
                   new_tokens: int = 48, seed: int = 1) -> Inspection:
    run = load(run_dir, which, device=device, trust_code=trust_code, tool="multitx.inspect")
    model, vocab, found = run.model, run.vocab, run.checkpoint
    context = model.config.context
    if prompt is None:  # the start of the run's own validation text, from a line's beginning
        corpus = load_corpus(cfg.data, Path(cfg.data_dir))
        if corpus.vocab.chars != vocab.chars:
            raise UserError(f"the corpus of {run_dir} has changed since training; give prompt=\"...\" instead")
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
    chars = [char_label(c) for c in vocab.decode(ids[0].tolist())]
    written = vocab.decode(ids[0, ids.shape[1] - room:].tolist()) if room else ""
    output = f"prompt: {prompt}\nwritten: {written}" if room else \
        f"prompt: {prompt}" + (" (fills the context)" if new_tokens else " (read at once, both ways)")
    return Inspection("charlm", found, source, chars, chars, output, recorded, model)


def vit_input(cfg, info: dict, image: str | None) -> tuple[np.ndarray, str]:
    """(H, W, C) uint8 at the model's size: the file given, or the first image of the run's evaluation split."""
    size, channels = tuple(info["image_size"]), int(info["channels"])
    if image:
        return decode_image(Path(image), size, channels).permute(1, 2, 0).numpy(), f"image={image}"
    _, evaluation = load_images(cfg.data, Path(cfg.data_dir), size)
    truth = evaluation.classes[int(evaluation.labels[0])]
    return evaluation.images[0].permute(1, 2, 0).numpy(), f"the first evaluation image of the run (a {truth})"


def inspect_vit(run_dir: Path, cfg, which: str, image: str | None, device, top_k: int = 5) -> Inspection:
    run = load(run_dir, which, device=device, tool="multitx.inspect")
    model, found, info = run.model, run.checkpoint, {**run.info, "classes": run.classes}
    pixels, source = vit_input(cfg, info, image)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    x = torch.from_numpy(np.array(pixels)).permute(2, 0, 1)[None].float().to(device) / 255  # (1, C, H, W)
    mean = torch.tensor(info["mean"], device=device).view(1, -1, 1, 1)
    std = torch.tensor(info["std"], device=device).view(1, -1, 1, 1)
    with torch.no_grad(), trace(model) as recorded:
        probs = model((x - mean) / std).softmax(-1)[0]  # (classes,)
    top = probs.topk(min(top_k, len(probs)))
    output = "\n".join(f"{info['classes'][i]}: {p:.1%}" for p, i in zip(top.values.tolist(), top.indices.tolist(),
                                                                       strict=True))
    tok = model.tokenizer
    h, w = tok.grid
    patches = [f"patch ({r},{c})" for r in range(h) for c in range(w)]
    keys = ["CLS"] * tok.num_prefix_tokens + patches
    return Inspection("vit", found, source, keys, keys, output, recorded, model, image=pixels, grid=tok.grid,
                      prefix=tok.num_prefix_tokens)


def inspect_caption(run_dir: Path, cfg, which: str, image: str | None, device, trust_code: bool) -> Inspection:
    run = load(run_dir, which, device=device, trust_code=trust_code, tool="multitx.inspect")
    model, vocab, found = run.model, run.vocab, run.checkpoint
    size = model.config.image_size
    if image:
        pixels, source = decode_image(Path(image), size), f"image={image}"  # (3, H, W) uint8
    else:
        split = load_split(cfg.data, "val", size, cfg.data_dir)
        pixels, source = split.images[0], f"the first validation image of the run ({split.names[0]})"
    x = pixels[None].to(device).float() / 255  # (1, 3, H, W)
    pixels = pixels.permute(1, 2, 0).numpy()  # (H, W, 3) uint8, the picture as drawn
    with torch.no_grad():
        words = caption_images(model, x, bos=vocab.bos_id, eos=vocab.eos_id, beam=1)[0]
        ids = torch.tensor([[vocab.bos_id, *words, vocab.eos_id]], device=device)  # (1, n + 2)
        with trace(model) as recorded:
            model(x, ids)  # teacher-forced over its own caption: query j writes word j + 1
    reads = ["<bos>"] + [vocab.vocab[i] for i in words]  # what the decoder reads
    writes = [vocab.vocab[i] for i in words] + ["<eos>"]  # what each position writes
    h, w = model.tokenizer.grid
    return Inspection("caption", found, source, writes, reads, vocab.decode(words), recorded, model,
                      image=pixels, grid=(h, w), prefix=model.tokenizer.num_prefix_tokens, shown_words=writes)


def inspect_run(run_dir: Path, *, which: str = "best", prompt: str | None = None, image: str | None = None,
                device="cpu", trust_code: bool = False, new_tokens: int = 48) -> Inspection:
    """The Inspection of a run folder of any task: its model on `prompt` (charlm, which writes up to
    `new_tokens` more) or `image` (ViT, captioner), or on a sample of its own validation data."""
    run_dir = Path(run_dir)
    kind, cfg = kind_of(run_dir, trust_code)
    if kind in ("charlm", "mlm"):  # the masked model reads the prompt as it is: it writes nothing after it
        if image:
            raise UserError(f"image= is for ViT and caption runs; a {kind} run takes prompt=\"...\"")
        return inspect_charlm(run_dir, cfg, which, prompt, device, trust_code, new_tokens if kind == "charlm" else 0)
    if prompt is not None:
        raise UserError(f"prompt= is for charlm runs; a {cfg.task.name} run takes image=PATH")
    if kind == "vit":
        return inspect_vit(run_dir, cfg, which, image, device)
    return inspect_caption(run_dir, cfg, which, image, device, trust_code)
