"""python -m multitx.caption run_dir=DIR image=PICTURE [beam=3] [length_penalty=0.6]
       [checkpoint=best|latest|PATH] [device=auto] [trust_code=false]

Prints a caption for any image file (PNG, JPEG, ...), scaled and centre-cropped to the
input size of the caption model trained in DIR. beam=1 is greedy decoding. A run whose
config names code to import (a tokenizer module or class of the user's) is
refused unless trust_code=true (multitx/engine/trust.py).
"""

from dataclasses import dataclass
from pathlib import Path

import torch

from multitx.cli import OnDevice, RunArgs, parse_args, run_cli
from multitx.config.rules import NON_NEGATIVE, File, Whole
from multitx.config.settings import setting
from multitx.data.captions.subwords import CaptionBPE
from multitx.data.captions.vocab import WordVocab
from multitx.data.images.images import decode_image
from multitx.engine.runtime import setup_runtime
from multitx.errors import UserError
from multitx.loading import load
from multitx.models.captioner import Captioner
from multitx.models.decoding import caption_images


@dataclass
class CaptionArgs(OnDevice, RunArgs):
    image: str | None = setting(None, File(), "the picture to caption (PNG, JPEG, ...)")
    beam: int = setting(3, Whole(min=1), "beams of the beam search; 1: greedy")
    length_penalty: float = setting(0.6, NON_NEGATIVE, "GNMT alpha: higher favours longer captions")


def caption_file(model: Captioner, vocab: WordVocab | CaptionBPE, path: Path, *, beam: int = 3,
                 length_penalty: float = 0.6) -> str:
    size = model.config.image_size
    image = decode_image(path, size)[None]  # (1, 3, H, W) uint8, scaled and centre-cropped
    images = image.to(model.embed.token.weight.device).float() / 255  # (1, 3, H, W) in [0, 1]
    ids = caption_images(model, images, bos=vocab.bos_id, eos=vocab.eos_id, beam=beam, alpha=length_penalty)
    return vocab.decode(ids[0])


def main(argv: list[str]) -> None:
    args = parse_args(argv, CaptionArgs, __doc__)
    if not args["image"]:
        raise UserError("say which picture to caption: image=PATH (a PNG, JPEG or other image file)")
    runtime = setup_runtime(args["device"], "fp32")
    run = load(Path(str(args["run_dir"])), str(args["checkpoint"]), device=runtime.device,
               trust_code=args["trust_code"], tool="multitx.caption")
    with torch.no_grad():
        print(caption_file(run.model, run.vocab, Path(str(args["image"])), beam=int(args["beam"]),
                           length_penalty=float(args["length_penalty"])))


if __name__ == "__main__":
    run_cli(main)
