"""multitx.load: a run folder or a checkpoint folder -> a ready model, and what it needs to be used.

    run = multitx.load("runs/charlm/2026-12-02_10-00-00")            # its best checkpoint
    run = multitx.load("runs/vit_fashion/.../checkpoints/step_0005000", device="cuda")
    run.model           the model, in eval mode, on `device`
    run.vocab           a CharVocab (charlm, mlm) or WordVocab (caption); None for a ViT
    run.classes         the class names in label order (ViT); None otherwise
    run.info            the rest of what the run saved for inference (a ViT's image size, mean and std), and
                        which weights the model holds: info["weights"] is "trained" or "averaged (ema_decay=...)"
    run.config          the run's config (in today's shape: older runs are migrated)
    run.provenance      where it came from: each start and resume (command, overrides, versions, git
                        commit, host, device, times) and how each ended (RUN_DIR/provenance.jsonl)

Every command that reads a run (sample, caption, inspect, the mlm's fill) goes through
here. The model is built the one way training builds it, the task's `build(settings,
artifacts)`; the weights come from model.safetensors, or from ema.safetensors, the averaged weights,
where the run kept them (ema_decay > 0; weights="trained" asks for the trained ones all the same), and
a command says so on stderr. Nothing a run's files name is imported unless trust_code=True
(multitx/engine/trust.py), and nothing is downloaded.
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig

import multitx.tasks  # noqa: F401 - the built-in tasks register: a tool's refusal names those it reads
from multitx.engine import checkpoint, provenance
from multitx.engine.task import Task, task_for_tool
from multitx.engine.trust import is_built_in
from multitx.errors import UserError
from multitx.imports import named_class
from multitx.registry import import_modules


@dataclass
class Loaded:
    model: torch.nn.Module
    task: str  # the run's task.name: charlm, mlm, vit_fashion, caption, ...
    config: DictConfig
    checkpoint: Path
    vocab: object | None = None
    classes: list[str] | None = None
    info: dict = field(default_factory=dict)
    provenance: list[dict] = field(default_factory=list)


def locate(path: Path, which: str) -> tuple[Path, Path, Path]:
    """(run folder, checkpoint folder, the folder whose config.yaml describes the model) for a run folder
    and best|latest|PATH, or for a checkpoint folder given itself (complete alone: its own config)."""
    path = Path(path)
    if (path / "model.safetensors").is_file() and (path / "config.yaml").is_file():  # RUN_DIR/checkpoints/step_N
        return path.parent.parent, path, path
    if not path.is_dir() or not (path / "config.yaml").is_file():
        raise UserError(f"{path} is not a multitx run folder (no config.yaml); give run_dir=DIR, the folder "
                        f"python -m multitx.train wrote, or one of its checkpoints/step_N folders")
    return path, checkpoint.resolve(path, which), path


def task_class(cfg: DictConfig, trust_code: bool) -> type[Task]:
    target = str(cfg.task.get("_target_", ""))
    if not (is_built_in(target) or trust_code):  # checkpoint.run_config has already refused it; kept for safety
        raise UserError(f"task._target_={target} is not a multitx task; add trust_code=true if you trust it")
    return named_class(target, "task._target_", Task)


WEIGHTS = ("averaged", "trained")


def load(path, which: str = "best", *, device="cpu", trust_code: bool = False, task: str | None = None,
         tool: str = "multitx.load", weights: str = "averaged") -> Loaded:
    """The model of a run (its best checkpoint; which="latest" or a folder for another) or of one
    checkpoint folder, ready to use.
    task: refuse a run of any other task (e.g. "charlm"); tool: the command asking (e.g. "multitx.sample"),
    which refuses a run whose task does not list it among its `tools`, in one line.
    weights: "averaged" (ema.safetensors where the run kept an average, ema_decay > 0; the trained weights
    otherwise) or "trained" (model.safetensors always); info["weights"] says which the model holds."""
    if weights not in WEIGHTS:
        raise UserError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    run_dir, folder, source = locate(Path(path), which)
    cfg = checkpoint.run_config(source, task, tool, trust_code=trust_code)  # refuses code unless trusted
    cls = task_class(cfg, trust_code)
    if isinstance(cfg.get("data"), DictConfig):  # what the user's package registers: a tokenizer, say
        import_modules(cfg.data.get("module"), "data.module")
    if tool != "multitx.load":
        task_for_tool(cfg, tool, run_dir, cls=cls)
    artifacts = checkpoint.read_artifacts(folder, cls.artifact_files, run_dir)
    try:
        model, extras = cls.build(cfg.model, artifacts)
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{source}/config.yaml does not describe a model multitx can build ({type(err).__name__}: "
                        f"{err}); is it a run of this multitx version or an older one?") from None
    averaged = weights == "averaged" and checkpoint.has_average(folder)
    checkpoint.load_weights(model, folder, averaged=averaged)
    extras = dict(extras)
    extras["weights"] = f"averaged (ema_decay={cfg.get('ema_decay', 0.0):g})" if averaged else "trained"
    if averaged and tool != "multitx.load":  # a command's output is the average's: it says so, apart from it
        print(f"using the averaged weights (ema_decay={cfg.get('ema_decay', 0.0):g}) of {folder}", file=sys.stderr)
    return Loaded(model=model.to(device).eval(), task=str(cfg.task.name), config=cfg, checkpoint=folder,
                  vocab=extras.pop("vocab", None), classes=extras.pop("classes", None), info=extras,
                  provenance=provenance.read(run_dir))
