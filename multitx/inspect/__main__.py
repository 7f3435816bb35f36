"""python -m multitx.inspect run_dir=DIR [prompt="..." max_new_tokens=48] [image=PATH] [checkpoint=best|latest|PATH]
       [out=DIR/inspect] [device=auto] [trust_code=false]

Looks inside a trained run of any task: runs its model once on your input (a
prompt for charlm, an image for a ViT or the captioner; without one, a sample of
the run's own validation data), traces every attention layer, and writes to out=:

  shapes.txt    each stage of attention with its tensor's shape (also printed)
  *.png         the attention maps: per layer and head for the char LM; CLS over
                the patches and the rollout for a ViT; for each word of a caption,
                where it looked in the image, beside the decoder's self-attention
                (with model.fusion=prefix one self-attention over the image's tokens
                and the words: its image part over the picture, its words part beside)
  index.html    all of it on one page, with layer, head and word selectors
"""

import io
import re
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from multitx.cli import OnDevice, RunArgs, parse_args, run_cli
from multitx.config.rules import File, Folder, Whole
from multitx.config.settings import setting
from multitx.engine.runtime import setup_runtime
from multitx.engine.task import Inspection
from multitx.errors import UserError
from multitx.inspect import maps
from multitx.inspect.page import Gallery, page
from multitx.inspect.runs import inspect_run
from multitx.inspect.shape_trace import shape_trace


@dataclass
class InspectArgs(OnDevice, RunArgs):
    prompt: str = setting("", None, "text models: what the model reads (and continues)")
    max_new_tokens: int = setting(48, Whole(min=0), "charlm: characters written after the prompt")
    image: str | None = setting(None, File(), "image models: the picture to look at")
    out: str | None = setting(None, Folder(must_exist=False), "where the pictures and the page go; "
                              "null: RUN_DIR/inspect/")


def png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def heads_of(record) -> list[str]:
    return ["mean"] + [str(h) for h in range(record.weights.shape[1])]


def head_weights(record, head: str):
    """(T, S) weights of one head, or their mean over heads."""
    w = record.weights[0]
    return (w.mean(0) if head == "mean" else w[int(head)]).cpu().numpy()


def self_attention_gallery(records, queries, keys, title: str, files: dict, prefix: str) -> Gallery:
    gallery = Gallery(title, [("layer", [str(r.layer) for r in records]), ("head", heads_of(records[0]))],
                      note="Row i: how the token asking at position i spreads its attention over the tokens it sees.")
    for r in records:
        for head in heads_of(r):
            name = f"{prefix}_L{r.layer}_H{head}.png"
            files[name] = png(maps.heatmap(head_weights(r, head), queries[: r.weights.shape[2]], keys,
                                           f"{r.name}, head {head}"))
            gallery.pictures[gallery.key(r.layer, head)] = files[name]
    return gallery


def vit_galleries(ins: Inspection, files: dict) -> tuple[list[Gallery], list]:
    records = ins.trace.layers("self")
    gallery = Gallery("CLS attention over the patches", [("layer", [str(r.layer) for r in records]),
                                                          ("head", heads_of(records[0]))],
                      note="How much the CLS token, the one the classifier reads, takes from each patch.")
    for r in records:
        files[f"cls_L{r.layer}.png"] = png(maps.cls_maps(r, ins.image, ins.prefix, ins.grid,
                                                         f"{r.name}: CLS attention, each head"))
        for head in heads_of(r):
            attention = maps.patch_attention(r.weights[0], 0, ins.prefix, ins.grid)  # (H, h, w)
            fig = Figure(figsize=(3.2, 3.4))
            maps.overlay(fig.add_subplot(), ins.image, attention.mean(0) if head == "mean" else attention[int(head)],
                         f"layer {r.layer}, head {head}")
            gallery.pictures[gallery.key(r.layer, head)] = png(fig)
    files["rollout.png"] = png(maps.rollout_figure(records, ins.image, ins.prefix, ins.grid))
    return [gallery], [("Attention rollout (Abnar & Zuidema, 2020) over all layers", files["rollout.png"])]


def caption_galleries(ins: Inspection, files: dict) -> list[Gallery]:
    if ins.fused_grid is not None:
        return prefix_caption_galleries(ins, files)
    cross = ins.trace.layers("cross")
    decoder_self = [r for r in ins.trace.layers("self") if r.name.startswith("decoder")]
    words = [f"{i}: {w}" for i, w in enumerate(ins.shown_words)]
    by_word = Gallery("Where each written word looked in the image", [("word", words),
                                                                       ("layer", [str(r.layer) for r in cross])],
                      note="Cross-attention of the query that wrote the word, over the image's patches, beside "
                           "its self-attention over the words before it (same layer).")
    for c, s in zip(cross, decoder_self, strict=True):
        for i, word in enumerate(ins.shown_words):
            name = word_file(i, word, c.layer)
            files[name] = png(maps.word_maps(c, s, i, ins.image, ins.prefix, ins.grid, ins.keys, word))
            by_word.pictures[by_word.key(words[i], c.layer)] = files[name]
    words_self = self_attention_gallery(decoder_self, ins.tokens, ins.keys, "Decoder self-attention over the words",
                                        files, "self")
    return [by_word, words_self]


def word_file(i: int, word: str, layer: int) -> str:
    return f"word_{i:02d}_{re.sub(r'[^A-Za-z0-9]+', '', word) or 'token'}_L{layer}.png"


def prefix_caption_galleries(ins: Inspection, files: dict) -> list[Gallery]:
    """Prefix fusion: the decoder's one self-attention, whose keys are the image's N tokens, then the words."""
    decoder_self = [r for r in ins.trace.layers("self") if r.name.startswith("decoder")]
    words = [f"{i}: {w}" for i, w in enumerate(ins.shown_words)]
    by_word = Gallery("Where each written word looked: the image's tokens and the words before it",
                      [("word", words), ("layer", [str(r.layer) for r in decoder_self])],
                      note="One self-attention row of the query that wrote the word, summing to 1 over the "
                           "image's tokens (laid over the picture) and the words before it (the bars).")
    for r in decoder_self:
        for i, word in enumerate(ins.shown_words):
            name = word_file(i, word, r.layer)
            files[name] = png(maps.prefix_word_maps(r, i, ins.image, ins.fused_grid, ins.keys, word))
            by_word.pictures[by_word.key(words[i], r.layer)] = files[name]
    image = maps.image_token_labels(ins.grid, ins.fused_grid)
    one_map = self_attention_gallery(decoder_self, image + ins.tokens, image + ins.keys,
                                     "The decoder's one self-attention: the image's tokens, then the words",
                                     files, "self")
    return [by_word, one_map]


def write(ins: Inspection, out: Path, run_dir: Path) -> list[str]:
    shapes = shape_trace(ins)
    files: dict[str, bytes] = {}
    pictures = []
    if ins.view == "tokens":
        galleries = [self_attention_gallery(ins.trace.layers("self"), ins.tokens, ins.keys,
                                            "Self-attention between the tokens", files, "attn")]
    elif ins.view == "patches":
        galleries, pictures = vit_galleries(ins, files)
    else:  # "caption"
        galleries = caption_galleries(ins, files)
    if ins.image is not None:
        fig = Figure(figsize=(2.4, 2.4))
        ax = fig.add_subplot()
        ax.imshow(ins.image.squeeze(-1) if ins.image.shape[-1] == 1 else ins.image,
                  cmap="gray" if ins.image.shape[-1] == 1 else None)
        ax.axis("off")
        files["input.png"] = png(fig)
        pictures.insert(0, ("The input, as the model sees it", files["input.png"]))
    facts = [("run", str(run_dir)), ("checkpoint", str(ins.checkpoint)), ("task", ins.task), ("input", ins.source)]
    html_text = page(f"Inside {run_dir.name}", facts, ins.output, shapes, galleries, pictures)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "shapes.txt").write_text(shapes, encoding="utf-8")
        for name, data in files.items():
            (out / name).write_bytes(data)
        (out / "index.html").write_text(html_text, encoding="utf-8")
    except OSError as err:
        raise UserError(f"cannot write to out={out} ({err.strerror or err}); choose another folder") from None
    print(shapes)
    return sorted(files) + ["shapes.txt", "index.html"]


def main(argv: list[str]) -> None:
    args = parse_args(argv, InspectArgs, __doc__)
    run_dir = Path(str(args["run_dir"]))
    runtime = setup_runtime(args["device"], "fp32")
    ins = inspect_run(run_dir, which=str(args["checkpoint"]), prompt=str(args["prompt"]) or None,
                      image=str(args["image"]) if args["image"] else None, device=runtime.device,
                      trust_code=args["trust_code"], new_tokens=args["max_new_tokens"])
    out = Path(str(args["out"])) if args["out"] else run_dir / "inspect"
    written = write(ins, out, run_dir)
    print(f"output: {ins.output}")
    print(f"wrote {len(written)} files to {out}: open {out / 'index.html'}")


if __name__ == "__main__":
    run_cli(main)
