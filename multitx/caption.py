"""python -m multitx.caption run_dir=DIR image=PICTURE [beam=3] [length_penalty=0.6]
       [checkpoint=best|latest|PATH] [device=auto] [trust_code=false]

Prints a caption for any image file (PNG, JPEG, ...), resized to the input
size of the caption model trained in DIR. beam=1 is greedy decoding. A run whose
config names code to import (a tokenizer module or class of the user's) is
refused unless trust_code=true (multitx/engine/trust.py).
"""

from pathlib import Path

import numpy as np
import torch

from multitx.cli import parse_args, run_cli
from multitx.config.schema import CAPTION_COMMAND
from multitx.data.captions.datasets import images_to_tensor, load_image
from multitx.data.captions.vocab import WordVocab
from multitx.engine import checkpoint
from multitx.engine.runtime import setup_runtime
from multitx.errors import UserError
from multitx.models.captioner import Captioner, captioner_config
from multitx.models.decoding import caption_images

DEFAULTS = {"run_dir": None, "image": None, "beam": 3, "length_penalty": 0.6, "checkpoint": "best",
            "device": "auto", "trust_code": False, "debug": False}


def load_captioner(run_dir: Path, which: str = "best", device="cpu", *, trust_code: bool = False):
    """The model, tokenizer and checkpoint path of a finished or running caption run."""
    run_dir = Path(run_dir)
    cfg = checkpoint.run_config(run_dir, "caption", "multitx.caption", trust_code=trust_code)
    tokenizer = WordVocab.load(run_dir / "vocab.json")
    model = Captioner(captioner_config(cfg.model, tokenizer.vocab_size, tokenizer.pad_id, tokenizer.unk_id))
    found = checkpoint.resolve(run_dir, which)
    checkpoint.load_weights(model, found)  # the checkpoint holds every weight, pretrained encoder included
    return model.to(device).eval(), tokenizer, found


def caption_file(model: Captioner, tokenizer: WordVocab, path: Path, *, beam: int = 3,
                 length_penalty: float = 0.6) -> str:
    size = model.config.image_size
    image = load_image(path, size)[None]  # (1, H, W, 3) uint8
    images = images_to_tensor(np.asarray(image)).to(model.embed.token.weight.device).float() / 255  # (1, 3, H, W)
    ids = caption_images(model, images, bos=tokenizer.bos_id, eos=tokenizer.eos_id, beam=beam, alpha=length_penalty)
    return tokenizer.decode(ids[0])


def main(argv: list[str]) -> None:
    args = parse_args(argv, DEFAULTS, CAPTION_COMMAND)
    if not args["image"]:
        raise UserError("say which picture to caption: image=PATH (a PNG, JPEG or other image file)")
    runtime = setup_runtime(args["device"], "fp32")
    model, tokenizer, _ = load_captioner(Path(str(args["run_dir"])), str(args["checkpoint"]), runtime.device,
                                         trust_code=args["trust_code"])
    with torch.no_grad():
        print(caption_file(model, tokenizer, Path(str(args["image"])), beam=int(args["beam"]),
                           length_penalty=float(args["length_penalty"])))


if __name__ == "__main__":
    run_cli(main)
