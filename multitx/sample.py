"""python -m multitx.sample run_dir=DIR [prompt="ROMEO:"] [max_new_tokens=500]
       [temperature=0.8] [top_k=40] [seed=1] [checkpoint=best|latest|PATH] [device=auto] [trust_code=false]

Writes text from a trained charlm run. Same seed, same text. A run whose config
names code to import is refused unless trust_code=true (multitx/engine/trust.py).
"""

from dataclasses import dataclass
from pathlib import Path

import torch

from multitx.cli import OnDevice, RunArgs, parse_args, run_cli
from multitx.config.rules import POSITIVE, Whole
from multitx.config.settings import setting
from multitx.engine.runtime import setup_runtime
from multitx.loading import load


@dataclass
class SampleArgs(OnDevice, RunArgs):
    prompt: str = setting("\n", None, "the text to continue")
    max_new_tokens: int = setting(500, Whole(min=1), "characters to write")
    temperature: float = setting(0.8, POSITIVE, "below 1: surer choices; above: more surprising ones")
    top_k: int = setting(40, Whole(min=0), "sample among the k likeliest characters; 0: among all")
    seed: int = setting(1, Whole(min=0), "the same seed writes the same text")


def main(argv: list[str]) -> None:
    args = parse_args(argv, SampleArgs, __doc__)
    runtime = setup_runtime(args["device"], "fp32")
    run = load(Path(str(args["run_dir"])), str(args["checkpoint"]), device=runtime.device,
               trust_code=args["trust_code"], tool="multitx.sample")
    model, vocab = run.model, run.vocab
    prompt = str(args["prompt"]) or "\n"
    ids = torch.tensor([vocab.encode(prompt)], device=runtime.device)  # (1, T)
    generator = torch.Generator(runtime.device).manual_seed(int(args["seed"]))
    out = model.generate(ids, int(args["max_new_tokens"]), temperature=float(args["temperature"]),
                         top_k=int(args["top_k"]) or None, generator=generator)
    print(vocab.decode(out[0].tolist()))


if __name__ == "__main__":
    run_cli(main)
