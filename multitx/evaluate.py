"""python -m multitx.evaluate run_dir=DIR [split=test|val] [checkpoint=best|latest|PATH] [device=auto]
       [trust_code=false]

Scores a trained run of any task on one of its splits and writes what it found to
RUN_DIR/eval/SPLIT_STEP.json (and its pictures beside it):

  charlm   loss and bits per character over the whole val split (the only split it holds out)
  vit_*    loss, top-1, top-5, accuracy per class, and the confusion matrix (confusion_SPLIT.png)
  caption  BLEU-4, CIDEr, exact match, and eight images with their captions (captions_SPLIT.png)

The model comes from multitx.load; the data from the run's own config, the validation
split held out exactly as in training (data.val_fraction, data.split_seed). The test
split is what results are reported on: training chose its best checkpoint on val.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from multitx.cli import OnDevice, RunArgs, parse_args, run_cli
from multitx.config.rules import Choice
from multitx.config.settings import setting
from multitx.engine.runtime import setup_runtime
from multitx.errors import UserError
from multitx.files import atomic_write_bytes
from multitx.loading import load, task_class


@dataclass
class EvaluateArgs(OnDevice, RunArgs):
    split: str = setting("test", Choice(options=("val", "test")), "the split to score: val or test")


def evaluate(run_dir: Path, split: str = "test", which: str = "best", *, device: str = "cpu",
             trust_code: bool = False) -> dict:
    """The task's report on `split` of a run, as written to RUN_DIR/eval/SPLIT_STEP.json."""
    runtime = setup_runtime(device, "fp32")
    run = load(run_dir, which, device=runtime.device, trust_code=trust_code, tool="multitx.evaluate")
    cfg = OmegaConf.merge(run.config, {"resume": None, "device": device})
    task = task_class(cfg, trust_code)(cfg, runtime)
    if run.vocab is not None:
        task.vocab = run.vocab  # the vocabulary the weights were trained with
    if run.classes is not None:
        if list(task.classes) != run.classes:
            raise UserError(f"the dataset of {run_dir} now has the classes {task.classes[:5]}, not the "
                            f"{run.classes[:5]} it was trained on; point data.root at the data it was trained on")
        task.set_normalisation(list(run.info["mean"]), list(run.info["std"]))
    out_dir = run.checkpoint.parent.parent / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        report = task.report(run.model, split, out_dir)
    report = {"task": run.task, "split": split, "checkpoint": str(run.checkpoint), **report}
    path = out_dir / f"{split}_{run.checkpoint.name}.json"
    atomic_write_bytes(path, json.dumps(report, indent=1).encode("utf-8"))
    return {**report, "written_to": str(path)}


def main(argv: list[str]) -> None:
    args = parse_args(argv, EvaluateArgs, __doc__)
    report = evaluate(Path(str(args["run_dir"])), str(args["split"]), str(args["checkpoint"]),
                      device=str(args["device"]), trust_code=args["trust_code"])
    for key, value in report.items():
        if isinstance(value, float):
            print(f"{key}: {value:.4f}")
        elif isinstance(value, (int, str)) and key not in ("task", "split"):
            print(f"{key}: {value}")
    print(f"{report['task']}, {report['split']} split: all figures in {report['written_to']}")


if __name__ == "__main__":
    run_cli(main)
