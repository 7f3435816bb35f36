"""multitx train task=NAME [key=value ...]        (the same as python -m multitx.train ...)

Examples:
  multitx train task=charlm                         # char GPT on the Python stdlib source
  multitx train task=charlm data=shakespeare steps=5000
  multitx train task=charlm run_dir=runs/a resume=auto
  multitx train -m task=charlm lr=3e-3,6e-3 steps=100,200 run_dir=runs/sweep   # 4 runs, then a table
  multitx train --config-dir my_configs task=mine   # my_configs/task/mine.yaml (data/, ... too)
  multitx train --cfg job task=charlm               # print the composed config, train nothing
  multitx train --help task=vit_cifar               # every key: its default and what it does

Hydra's flags work as in any Hydra app: -m/--multirun (a sweep: each run in RUN_DIR/N, then
RUN_DIR/summary.csv and summary.md; the Optuna sweeper with hydra/sweeper=optuna once
hydra-optuna-sweeper is installed), -cd/--config-dir DIR, --cfg job|hydra|all, --package,
--resolve, --info, --hydra-help, -sc/--shell-completion (eval "$(multitx train -sc install=bash)").
"""

import logging
import os
import sys

from hydra._internal.utils import _run_hydra, get_args_parser
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from multitx.cli import load_config, run_cli, settings_help
from multitx.engine.trainer import Interrupted, train
from multitx.errors import UserError

HYDRA_ONLY = ("multirun", "info", "shell_completion", "hydra_help", "config_name", "config_path",
              "experimental_rerun")


def main(argv: list[str]) -> None:
    args = hydra_arguments(argv)
    search = [f"hydra.searchpath=[file://{os.path.abspath(args.config_dir)}]"] if args.config_dir else []
    if args.config_dir and not os.path.isdir(args.config_dir):
        raise UserError(f"--config-dir {args.config_dir}: no such folder; give the folder that holds your "
                        f"task/ and data/ YAML files")
    if args.help:
        print(__doc__.strip() + "\n\n" + settings_help(args.overrides + search))
        return
    if any(getattr(args, name) for name in HYDRA_ONLY) or args.cfg in ("hydra", "all") or args.package:
        if args.multirun:
            check_every_job(args.overrides, search)
        show_hydras_lines()
        _run_hydra(args=args, args_parser=get_args_parser(), task_function=lambda _: hydra_job(search),
                   config_path="pkg://multitx.config", config_name="config")
        return
    cfg = load_config(args.overrides + search)
    if args.cfg == "job":
        print(OmegaConf.to_yaml(cfg))
        return
    run(cfg, args.overrides)


def show_hydras_lines() -> None:
    """Hydra's own lines ("Launching 4 jobs locally", "#0 : lr=0.003 ...") on stdout, configured on Hydra's
    logger alone: the root logger, and so every other library's logging, is left as the user set it."""
    log = logging.getLogger("hydra")
    if not log.handlers:
        handler = CurrentStdout()
        handler.setFormatter(logging.Formatter("[%(asctime)s][HYDRA] %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


class CurrentStdout(logging.StreamHandler):
    """A handler writing to sys.stdout as it is at each line (not as it was when the handler was made)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, _):
        pass


def hydra_arguments(argv: list[str]):
    """Hydra's own command line (its flags, then key=value overrides); a bare --cfg means --cfg job."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg in ("--cfg", "-c") and (i + 1 == len(argv) or argv[i + 1] not in ("job", "hydra", "all")):
            argv.insert(i + 1, "job")
            break
    parser = get_args_parser()
    parser.prog = "multitx train"
    parser.error = lambda message: (_ for _ in ()).throw(UserError(f"{message}; see multitx train --help"))
    args = parser.parse_intermixed_args(argv)  # flags before, between or after the key=value pairs
    if args.run and args.multirun:
        raise UserError("give -m (a sweep) or --run, not both")
    return args


def check_every_job(overrides: list[str], search: list[str]) -> None:
    """Before the first run of a sweep starts, every combination the basic sweeper will make composes and
    passes the type checks: a typo in the third value is one line now, not a failure an hour in.
    Another sweeper's syntax (hydra/sweeper=optuna: interval(...)) is checked by its own first job; that the
    sweeper (or launcher) named is installed, here."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if any(o.split("=", 1)[0] == "hydra/sweeper" for o in overrides):
        load_config([o for o in overrides if o.startswith("hydra/")] + search)
        return
    try:
        parsed = OverridesParser.create().parse_overrides([o for o in overrides if not o.startswith("hydra.")])
        jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    except Exception as err:  # Hydra's grammar errors name the override
        raise UserError(f"cannot read the sweep: {str(err).strip().splitlines()[0]}") from None
    for job in jobs:
        load_config(job + search)


def hydra_job(search: list[str]) -> float | None:
    """One run of a sweep, as Hydra's launcher calls it: composed again the one way every run is (the
    checks, the trust rules), in the folder Hydra made for it. Returns the final val loss, or the
    first number the last evaluation reported, for a sweeper that optimizes (Optuna)."""
    hydra = HydraConfig.get()
    overrides = [o for o in hydra.overrides.task if o.split("=", 1)[0] != "run_dir"]
    run_dir = os.path.relpath(hydra.runtime.output_dir)
    run_dir = hydra.runtime.output_dir if run_dir.startswith("..") else run_dir
    try:
        with outside_hydra():
            cfg = load_config([*overrides, *search, f"run_dir='{run_dir}'"])
        metrics = run(cfg, list(hydra.overrides.task))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    numbers = [v for k, v in metrics.items() if isinstance(v, float) and k != "time_s"]
    return metrics.get("val_loss", numbers[0] if numbers else None)


class outside_hydra:
    """Compose a config while Hydra's app holds the global Hydra instance (put back afterwards)."""

    def __enter__(self):
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.singleton import Singleton

        self.saved = Singleton._instances.pop(GlobalHydra, None)

    def __exit__(self, *exc):
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.singleton import Singleton

        if self.saved is not None:
            Singleton._instances[GlobalHydra] = self.saved


def run(cfg, overrides: list[str]) -> dict:
    try:
        return train(cfg, overrides=overrides)
    except Interrupted as stop:
        sys.exit(stop.code)
    except KeyboardInterrupt:  # a second Ctrl-C: out at once, without the step-boundary save
        print(f"stopped at once by a second Ctrl-C; the last complete checkpoint in {cfg.run_dir}/checkpoints "
              f"is intact: continue with resume=auto", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    run_cli(main)
