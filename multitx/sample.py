"""python -m multitx.sample run_dir=DIR [prompt="ROMEO:"] [max_new_tokens=500]
       [temperature=0.8] [top_k=40] [seed=1] [checkpoint=best|latest|PATH] [device=auto] [trust_code=false]

Writes text from a trained charlm run. Same seed, same text. A run whose config
names code to import is refused unless trust_code=true (multitx/engine/trust.py).
"""

from pathlib import Path

import torch

from multitx.cli import parse_args, run_cli
from multitx.config.schema import SAMPLE
from multitx.data.text.vocab import CharVocab
from multitx.engine import checkpoint
from multitx.engine.runtime import setup_runtime
from multitx.tasks.charlm import language_model

DEFAULTS = {"run_dir": None, "prompt": "\n", "max_new_tokens": 500, "temperature": 0.8, "top_k": 40, "seed": 1,
            "checkpoint": "best", "device": "auto", "trust_code": False, "debug": False}


def load_language_model(run_dir: Path, which: str = "best", device: str = "cpu", *, trust_code: bool = False):
    """The model, tokenizer and checkpoint path of a finished or running charlm run."""
    run_dir = Path(run_dir)
    cfg = checkpoint.run_config(run_dir, "charlm", "multitx.sample", trust_code=trust_code)
    tokenizer = CharVocab.load(run_dir / "vocab.json")
    model = language_model(cfg.model, tokenizer.vocab_size)
    found = checkpoint.resolve(run_dir, which)
    checkpoint.load_weights(model, found)
    return model.to(device).eval(), tokenizer, found


def main(argv: list[str]) -> None:
    args = parse_args(argv, DEFAULTS, SAMPLE)
    runtime = setup_runtime(args["device"], "fp32")
    model, tokenizer, _ = load_language_model(Path(str(args["run_dir"])), args["checkpoint"], runtime.device,
                                              trust_code=args["trust_code"])
    prompt = str(args["prompt"]) or "\n"
    ids = torch.tensor([tokenizer.encode(prompt)], device=runtime.device)  # (1, T)
    generator = torch.Generator(runtime.device).manual_seed(int(args["seed"]))
    out = model.generate(ids, int(args["max_new_tokens"]), temperature=float(args["temperature"]),
                         top_k=int(args["top_k"]) or None, generator=generator)
    print(tokenizer.decode(out[0].tolist()))


if __name__ == "__main__":
    run_cli(main)
