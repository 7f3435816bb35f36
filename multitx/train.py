"""python -m multitx.train task=NAME [key=value ...]

Examples:
  python -m multitx.train task=charlm                       # char GPT on the Python stdlib source
  python -m multitx.train task=charlm data=shakespeare steps=5000
  python -m multitx.train task=charlm run_dir=runs/a resume=auto
  python -m multitx.train --cfg task=charlm                 # print the composed config, train nothing
  python -m multitx.train --help task=vit_cifar             # every key: its default and what it does
"""

import sys

from omegaconf import OmegaConf

from multitx.cli import load_config, run_cli, settings_help
from multitx.engine.trainer import Interrupted, train


def main(argv: list[str]) -> None:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\n" + settings_help(argv[1:]))
        return
    show_only = bool(argv) and argv[0] == "--cfg"
    cfg = load_config(argv[1:] if show_only else argv)
    if show_only:
        print(OmegaConf.to_yaml(cfg))
        return
    try:
        train(cfg)
    except Interrupted as stop:
        sys.exit(stop.code)
    except KeyboardInterrupt:  # a second Ctrl-C: out at once, without the step-boundary save
        print(f"stopped at once by a second Ctrl-C; the last complete checkpoint in {cfg.run_dir}/checkpoints "
              f"is intact: continue with resume=auto", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    run_cli(main)
