"""Checkpoints that survive crashes and never run code when loaded.

Layout: RUN_DIR/checkpoints/step_0001000/
    model.safetensors   the weights (safetensors: tensors only, nothing executable)
    ema.safetensors     with ema_decay > 0: the averaged weights (engine/ema.py), a model file like the one
                        above; evaluation and multitx.load use it, resuming needs both
    state.pt            optimizer, step, RNG states, data position, best metric;
                        tensors and plain types only, read with torch.load(weights_only=True)
    config.yaml         the run's full config, plain YAML
    vocab.json ...      what inference needs besides the weights (the task's artifacts: a
                        vocabulary, class names), so that each checkpoint folder is complete alone
    manifest.json       the sha256 of model.safetensors, state.pt, ema.safetensors (if any) and the artifacts,
                        as they were written

With strategy=fsdp, shards/ holds each process's part of the weights, the optimizer state and the
average in place of model.safetensors and ema.safetensors (engine/sharded_checkpoint.py); the manifest
covers every part, and process 0 renames the folder once every process has written its own.

Loading checks each file against the manifest first, so a file altered or cut
short after the write is named instead of half-loaded; resume=auto then falls
back to the newest intact checkpoint. (Checkpoints written before manifests
existed load without this check.) Each checkpoint is written into `step_N.tmp/`, every file flushed to disk, and the
folder renamed to `step_N/` in one atomic step. A crash or kill mid-save leaves a
`.tmp` folder, never a damaged `step_N/`, so the last good checkpoint survives.
The newest `keep` checkpoints are kept, plus the best one (named in best.txt).
"""

import json
import re
import shutil
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_model

from multitx.config.settings import leaves
from multitx.engine.migrate import migrate
from multitx.engine.trust import refuse_code
from multitx.errors import UserError
from multitx.files import atomic_write_bytes, fsync_path, sha256_file

STEP_DIR = re.compile(r"^step_(\d{7,})$")
FILES = ("model.safetensors", "state.pt", "config.yaml")
MANIFEST = "manifest.json"
SHARDS = "shards"  # a sharded checkpoint's folder of parts (strategy=fsdp), in place of model.safetensors
HASHED = ("model.safetensors", "state.pt")  # config.yaml is plain text, read with care, and may be edited
EMA = "ema.safetensors"  # only with ema_decay > 0: a checkpoint without it (averaging off, or older) loads as ever


def step_dirs(checkpoints: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not checkpoints.is_dir():
        return []
    found = [p for p in checkpoints.iterdir() if STEP_DIR.match(p.name) and complete(p)]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def complete(folder: Path) -> bool:
    """state.pt, config.yaml and the weights: model.safetensors, or a sharded checkpoint's shards/."""
    return all((folder / f).exists() for f in FILES[1:]) and ((folder / FILES[0]).exists()
                                                               or (folder / SHARDS).is_dir())


def latest(run_dir: Path) -> Path | None:
    found = step_dirs(Path(run_dir) / "checkpoints")
    return found[-1] if found else None


def best(run_dir: Path) -> Path | None:
    marker = Path(run_dir) / "checkpoints" / "best.txt"
    if marker.exists():
        path = marker.parent / marker.read_text().strip()
        if path.is_dir():
            return path
    return None


def resolve(run_dir: Path, which: str = "best") -> Path:
    """which: best (falls back to latest), latest, or a checkpoint folder."""
    run_dir = Path(run_dir)
    if which == "best":
        found = best(run_dir) or latest(run_dir)
    elif which == "latest":
        found = latest(run_dir)
    else:
        found = Path(which)
    if found is None or not found.is_dir():
        raise UserError(f"no checkpoint found in {run_dir}/checkpoints; train first, or give checkpoint=PATH")
    return found


def save(run_dir: Path, step: int, model: torch.nn.Module, state: dict, config_yaml: str, *,
         keep: int = 2, is_best: bool = False, artifacts: dict[str, dict] | None = None, average=None) -> Path:
    """One process writes the whole checkpoint. average: the run's WeightAverage (engine/ema.py) with
    ema_decay > 0, written as ema.safetensors."""
    final, tmp = begin(run_dir, step)

    def weights() -> tuple[str, ...]:
        save_model(model, str(tmp / "model.safetensors"))  # handles tied weights
        if average is None:
            return ("model.safetensors",)
        with average.swapped_in(model):  # the same kind of file, written from the model with the averages in it
            save_model(model, str(tmp / EMA))
        return "model.safetensors", EMA

    return seal(run_dir, final, tmp, weights, state, config_yaml, keep, is_best, artifacts)


def save_sharded(run_dir: Path, step: int, model: torch.nn.Module, optimizer, state: dict, config_yaml: str,
                 runtime, *, keep: int = 2, is_best: bool = False, artifacts: dict[str, dict] | None = None,
                 average=None) -> Path | None:
    """strategy=fsdp: every process writes its part of the weights, the optimizer state and the average into
    step_N.tmp/shards (engine/sharded_checkpoint.py; a collective, every process calls it), then process 0
    writes the rest, the manifest of every part, and renames the folder. The checkpoint on process 0, None
    elsewhere."""
    import torch.distributed as dist

    from multitx.engine.sharded_checkpoint import save_shards, shard_files

    final = Path(run_dir) / "checkpoints" / f"step_{step:07d}"
    tmp = begin(run_dir, step)[1] if runtime.is_main else final.with_name(final.name + ".tmp")
    dist.barrier()  # the folder is there for every process
    groups = save_shards(tmp, model, optimizer, average)
    dist.barrier()  # every part is written
    if not runtime.is_main:
        return None
    return seal(run_dir, final, tmp, lambda: tuple(shard_files(tmp)), {**state, "optimizer_groups": groups},
                config_yaml, keep, is_best, artifacts)


def begin(run_dir: Path, step: int) -> tuple[Path, Path]:
    """(the checkpoint folder step_N, the empty step_N.tmp it is written in first)."""
    checkpoints = Path(run_dir) / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    final = checkpoints / f"step_{step:07d}"
    tmp = checkpoints / f"step_{step:07d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return final, tmp


def seal(run_dir: Path, final: Path, tmp: Path, weights, state: dict, config_yaml: str, keep: int, is_best: bool,
         artifacts: dict[str, dict] | None) -> Path:
    """Write into tmp what one process writes (weights(): the model files it writes or finds, by name; state.pt,
    config.yaml, the artifacts), the manifest of them all, flush every file, and rename tmp to final."""
    checkpoints = final.parent
    try:
        written = weights()
        with open(tmp / "state.pt", "wb") as f:
            torch.save(state, f)
        (tmp / "config.yaml").write_text(config_yaml, encoding="utf-8")
        for name, content in (artifacts or {}).items():
            (tmp / name).write_text(json.dumps(content, ensure_ascii=False, indent=1), encoding="utf-8")
        hashed = (*written, "state.pt", *(artifacts or {}))
        manifest = {"sha256": {name: sha256_file(tmp / name) for name in hashed}}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        for name in (*hashed, "config.yaml", MANIFEST):
            fsync_path(tmp / name)
        if final.exists():  # same step saved again (e.g. final save right after an eval save)
            shutil.rmtree(final)
        tmp.rename(final)
        fsync_path(checkpoints)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        last = latest(run_dir)
        kept = f"; the last good checkpoint {last} is untouched" if last else ""
        raise UserError(f"could not write checkpoint {final} ({err.strerror or err}){kept}; "
                        f"free some disk space or choose another run_dir") from None
    if is_best:
        atomic_write_bytes(checkpoints / "best.txt", final.name.encode())
    prune(checkpoints, keep)
    return final


def prune(checkpoints: Path, keep: int) -> None:
    best_marker = checkpoints / "best.txt"
    best_name = best_marker.read_text().strip() if best_marker.exists() else None
    for old in step_dirs(checkpoints)[:-keep]:
        if old.name != best_name:
            shutil.rmtree(old)


class DamagedCheckpoint(UserError):
    """A checkpoint file that is not what was written; `what` says which, without the advice."""

    def __init__(self, what: str):
        super().__init__(f"{what}; use an earlier checkpoint")
        self.what = what


def recorded(folder: Path) -> dict[str, str] | None:
    """The manifest's {file name: sha256}; None for a checkpoint written before manifests existed."""
    folder = Path(folder)
    if not (folder / MANIFEST).exists():
        return None
    try:
        return dict(json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["sha256"])
    except (ValueError, KeyError, TypeError, OSError):
        raise DamagedCheckpoint(f"{folder / MANIFEST} is damaged") from None


def default_verified(folder: Path, recorded_here: dict[str, str]) -> tuple[str, ...]:
    """What a checkpoint is checked for by default: its weights (model.safetensors, ema.safetensors where
    recorded, or every shard of a sharded one) and state.pt."""
    parts = tuple(name for name in recorded_here if name.startswith(SHARDS + "/"))
    if parts or (Path(folder) / SHARDS).is_dir():
        return (*parts, "state.pt") if parts else (SHARDS, "state.pt")
    return (*HASHED, *((EMA,) if EMA in recorded_here else ()))


def verify(folder: Path, names=None) -> None:
    """Each of `names` in a checkpoint folder has the sha256 its manifest recorded; one line naming the file if not.
    names: by default model.safetensors, state.pt, and ema.safetensors where the manifest records it."""
    folder = Path(folder)
    recorded_here = recorded(folder)
    if recorded_here is None:
        return  # written before manifests existed
    if names is None:
        names = default_verified(folder, recorded_here)
    for name in names:
        file = folder / name
        if not file.is_file():
            raise DamagedCheckpoint(f"{file} is missing")
        if name in recorded_here and sha256_file(file) != recorded_here[name]:
            raise DamagedCheckpoint(f"{file} is truncated or corrupt: it is not the file that was written there "
                                    f"(its sha256 differs from {MANIFEST})")


def latest_intact(run_dir: Path) -> tuple[Path | None, list[str]]:
    """The newest checkpoint whose files match their manifest, and what is wrong with each newer one."""
    damaged = []
    for folder in reversed(step_dirs(Path(run_dir) / "checkpoints")):
        try:
            verify(folder)
        except DamagedCheckpoint as err:
            damaged.append(err.what)
            continue
        return folder, damaged
    return None, damaged


def load_state(path: Path) -> dict:
    """Training state, loaded without unpickling anything but tensors and plain types."""
    file = Path(path) / "state.pt"
    verify(path, ("state.pt",))
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{file} is missing; resume from a complete checkpoint folder") from None
    except Exception as err:  # noqa: BLE001 - torch raises many types here
        text = str(err)
        if "Weights only load failed" in text or "Unsupported global" in text:
            raise UserError(f"refused to load {file}: it holds Python objects that would run code when unpickled; "
                            f"only load checkpoints you trust, written by multitx") from None
        raise UserError(f"{file} is truncated or corrupt ({text.splitlines()[0][:120]}); "
                        f"resume from an earlier checkpoint with resume=PATH") from None


def has_average(folder: Path) -> bool:
    """Whether a checkpoint holds averaged weights (ema.safetensors, or a sharded checkpoint's "ema." tensors),
    or its manifest says it did."""
    if (Path(folder) / SHARDS).is_dir():
        from multitx.engine.sharded_checkpoint import holds_average

        return holds_average(folder)
    return (Path(folder) / EMA).exists() or EMA in (recorded(folder) or {})


def load_average(folder: Path) -> dict[str, torch.Tensor] | None:
    """ema.safetensors' tensors, checked against the manifest; None for a checkpoint without averaged weights."""
    if not has_average(folder):
        return None
    if (Path(folder) / SHARDS).is_dir():
        from multitx.engine.sharded_checkpoint import read_average

        verify(folder)
        return read_average(folder)
    file = Path(folder) / EMA
    verify(folder, (EMA,))
    try:
        return load_file(file)
    except (SafetensorError, OSError) as err:
        raise UserError(f"{file} is truncated or corrupt ({err}); use an earlier checkpoint") from None


def load_weights(model: torch.nn.Module, path: Path, *, averaged: bool = False) -> None:
    """Load model.safetensors (or ema.safetensors, given as a file, or with averaged=True) into `model`,
    strictly: every tensor present, every shape equal. A sharded checkpoint's parts are read alike."""
    if Path(path).is_dir() and (Path(path) / SHARDS).is_dir():
        load_sharded_weights(model, Path(path))
        if averaged:  # the averages in place of the trained parameters (buffers stay as saved)
            model.load_state_dict(load_average(Path(path)), strict=False)
        return None
    file = Path(path) / ("model.safetensors" if not averaged else EMA) if Path(path).is_dir() else Path(path)
    if file.name in ("model.safetensors", EMA):
        verify(file.parent, (file.name,))
    try:
        missing, unexpected = load_model(model, str(file), strict=False)
    except FileNotFoundError:
        raise UserError(f"{file} is missing; point to a complete checkpoint folder") from None
    except (SafetensorError, OSError) as err:
        raise UserError(f"{file} is truncated or corrupt ({err}); use an earlier checkpoint") from None
    except RuntimeError as err:
        first = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line), str(err)[:160])
        raise UserError(f"{file} was written by a different model configuration ({first}); "
                        f"use the model.* settings it was trained with") from None
    if missing or unexpected:
        names = ", ".join(list(missing)[:3] + list(unexpected)[:3])
        raise UserError(f"{file} was written by a different model configuration (tensors not matching: {names}); "
                        f"use the model.* settings it was trained with")


def load_sharded_weights(model: torch.nn.Module, folder: Path) -> None:
    """A sharded checkpoint's weights, every process's part, into a plain `model` in this process."""
    from multitx.engine.sharded_checkpoint import read_weights

    verify(folder)
    try:
        read_weights(folder, model)
    except (RuntimeError, ValueError, KeyError) as err:  # DCP and load_state_dict: shapes or names that differ
        first = " ".join(str(err).split())[:160]
        raise UserError(f"{folder / SHARDS} was written by a different model configuration ({first}); use the "
                        f"model.* settings it was trained with") from None


def read_config(folder: Path) -> DictConfig:
    """FOLDER/config.yaml (a run's or a checkpoint's), in today's shape (engine/migrate.py)."""
    return migrate(OmegaConf.load(Path(folder) / "config.yaml"))


def read_artifacts(folder: Path, names, run_dir: Path | None = None) -> dict[str, dict]:
    """The artifact files `names` of a checkpoint folder (checked against its manifest), or of its
    run folder for checkpoints written before each checkpoint held its own."""
    out = {}
    for name in names:
        file = Path(folder) / name
        if file.is_file():
            verify(folder, (name,))
        elif run_dir is not None and (Path(run_dir) / name).is_file():
            file = Path(run_dir) / name
        else:
            raise UserError(f"{file} is missing; is {folder} a complete checkpoint of a finished or running run?")
        try:
            out[name] = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise UserError(f"{file} cannot be read ({type(err).__name__}); use another checkpoint") from None
    return out


def check_resumable(folder: Path, cfg: DictConfig) -> None:
    """Resuming continues one run: every model.* setting and the optimizer must be the
    checkpoint's. Some model changes would not show as a shape mismatch (model.activation,
    model.positions...), and optimizer state loads only into the kind that wrote it."""
    if not (Path(folder) / "config.yaml").exists():
        return
    try:
        saved = OmegaConf.to_container(read_config(folder))
    except Exception as err:  # noqa: BLE001 - yaml and omegaconf raise many kinds
        raise UserError(f"{folder}/config.yaml cannot be read ({type(err).__name__}); "
                        f"use an earlier checkpoint") from None
    then, now = dict(leaves(saved.get("model") or {})), dict(leaves(OmegaConf.to_container(cfg.model, resolve=True)))
    changed = [f"model.{key}: {then.get(key, 'unset')} in the checkpoint, {now.get(key, 'unset')} now"
               for key in sorted(set(then) | set(now)) if then.get(key, "unset") != now.get(key, "unset")]
    if changed:
        raise UserError(f"{folder} was written by a different model configuration ({'; '.join(changed[:3])}); "
                        f"use the model.* settings it was trained with, or a new run_dir")
    optimizer = saved.get("optimizer", "adamw")
    if optimizer != cfg.optimizer:
        raise UserError(f"{folder} was trained with optimizer={optimizer}, not {cfg.optimizer}; "
                        f"resume with optimizer={optimizer}, or start a new run_dir")
    if "ema_decay" in saved and saved["ema_decay"] != cfg.get("ema_decay", 0.0):  # older runs: averaging starts now
        was = saved["ema_decay"]
        raise UserError(f"{folder} was trained with ema_decay={was}, not {cfg.get('ema_decay', 0.0)}: the average of "
                        f"the weights goes on from the checkpoint's; resume with ema_decay={was}, or start a new "
                        f"run_dir")
    kept = [key for key in OPTIMIZER_GROUPS if key in saved]  # a run from before a setting existed had its default
    now = dict(leaves({key: listed(key, plain(cfg.get(key))) for key in kept}))
    then = dict(leaves({key: listed(key, saved.get(key)) for key in kept}))
    for key in sorted(set(then) | set(now)):
        if then.get(key) != now.get(key):
            was = shown(then.get(key))
            raise UserError(f"{folder} was trained with {key}={was}, not {shown(now.get(key))}: the optimizer's "
                            f"state is kept per group of parameters; resume with {key}={was}, or start a new "
                            f"run_dir")


OPTIMIZER_GROUPS = ("freeze", "lr_scale", "pretrained_lr_scale")  # settings that decide what trains at which lr


def plain(value):
    """A setting as plain data, for comparing a checkpoint's with the command line's."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def listed(key: str, value):
    """freeze=decoder is freeze=[decoder]."""
    return [value] if key == "freeze" and isinstance(value, str) else value


def shown(value) -> str:
    """A setting as the command line writes it: [a,b] for a list."""
    return "[" + ",".join(map(str, value)) + "]" if isinstance(value, list) else str(value)


def run_config(run_dir: Path, task: str | None, tool: str, *, trust_code: bool = False) -> DictConfig:
    """RUN_DIR/config.yaml of a run of `task`, for `tool` (the command reading it); one clear line otherwise.
    A config that names code to import (a module, a class) is refused unless trust_code (see trust.py)."""
    if not Path(run_dir).is_dir() or not (Path(run_dir) / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not a multitx run folder (no config.yaml); give run_dir=DIR, the folder "
                        f"python -m multitx.train wrote")
    try:
        cfg = read_config(run_dir)
    except Exception as err:  # noqa: BLE001 - yaml and omegaconf raise many kinds
        raise UserError(f"{run_dir}/config.yaml cannot be read ({type(err).__name__}); is it a multitx run "
                        f"folder?") from None
    refuse_code(cfg, Path(run_dir) / "config.yaml", trust_code)
    if not isinstance(cfg.get("task"), DictConfig) or not isinstance(cfg.get("model"), DictConfig):
        raise UserError(f"{run_dir}/config.yaml has no task or model section; is it a multitx run folder?")
    if task is not None and cfg.task.name != task:
        raise UserError(f"{run_dir} is a {cfg.task.name} run; {tool} needs a task={task} run")
    return cfg
