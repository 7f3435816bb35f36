"""Sharded checkpoints (strategy=fsdp): each process writes its own rows of the weights and of the optimizer
state, with torch.distributed.checkpoint (DCP), into RUN_DIR/checkpoints/step_N/shards/:

    shards/shard-0000R-model-00001-of-00001.safetensors   process R's part: its DTensor shards of every
                                                          parameter ("model.NAME") and optimizer state
                                                          ("optimizer.state.NAME.exp_avg", ...), each with
                                                          the offsets of its rows in the safetensors header

safetensors holds tensors only, and the offsets are JSON, so nothing in a sharded checkpoint is unpickled
when it is read (DCP's own default format pickles its metadata; its Hugging Face storage does not). What
is not a tensor (the optimizer's learning rates and betas per parameter) goes into state.pt with the rest
of the run's state, as plain numbers. The folder is otherwise a checkpoint like any (engine/checkpoint.py):
state.pt, config.yaml, the artifacts and manifest.json, whose sha256 covers every shard file, written by
process 0 once every process has written its part, and the folder renamed from step_N.tmp in one step.

Reading works for any number of processes and either strategy, DCP assembling each tensor from whichever
shards hold its rows: a run resumes into a plain (unsharded) model and optimizer, each process reading every
row (engine/trainer.py then shards them anew, for FSDP); `multitx.load` and the tools read the weights in
one process.
"""

import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import HuggingFaceStorageReader, HuggingFaceStorageWriter
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

SHARDS = "shards"
FLAT = StateDictOptions(flatten_optimizer_state_dict=True)  # "state.NAME.exp_avg": tensor, "param_groups.NAME.lr"


def optimizers_of(optimizer) -> list[torch.optim.Optimizer]:
    """The torch optimizers behind multitx's (a Chained pair under optimizer=muon)."""
    return list(getattr(optimizer, "optimizers", [optimizer]))


def is_sharded(folder: Path) -> bool:
    return (Path(folder) / SHARDS).is_dir()


def shard_files(folder: Path) -> list[str]:
    """The shard files of a checkpoint folder, as names relative to it (for its manifest)."""
    return sorted(f"{SHARDS}/{p.name}" for p in (Path(folder) / SHARDS).glob("*.safetensors"))


def untied(weights: dict) -> dict:
    """The weights without the second name of a tied tensor (a head tied to its embedding): safetensors keeps
    each tensor once, and loading the first fills both, since they are one tensor."""
    seen, kept = set(), {}
    for name, tensor in weights.items():
        mine = tensor.to_local() if hasattr(tensor, "to_local") else tensor  # this process's rows
        key = mine.untyped_storage().data_ptr() or name  # an empty shard holds no storage: its own name
        if key not in seen:
            seen.add(key)
            kept[name] = tensor
    return kept


def save_shards(folder: Path, model: torch.nn.Module, optimizer, average=None) -> dict:
    """Every process writes its part of the weights, of the optimizer state and of the averaged weights
    (ema_decay > 0: "ema.NAME") into folder/shards (a collective: all processes call it). Returns what of the
    optimizer state is not a tensor, for state.pt."""
    weights = untied(get_model_state_dict(model))  # NAME -> DTensor (this process's rows)
    state = get_optimizer_state_dict(model, optimizers_of(optimizer), options=FLAT)
    tensors = {f"model.{name}": t for name, t in weights.items()}
    tensors.update({f"optimizer.{key}": v for key, v in state.items() if isinstance(v, torch.Tensor)})
    if average is not None:
        tensors.update({f"ema.{name}": t for name, t in average.state_dict().items()})
    dcp.save(tensors, storage_writer=HuggingFaceStorageWriter(str(Path(folder) / SHARDS), save_distributed=True))
    return {key: v for key, v in state.items() if not isinstance(v, torch.Tensor)}


def read(tensors: dict, folder: Path) -> None:
    """Fill `tensors` (name -> a tensor of its whole shape) from a sharded checkpoint's parts, in this process alone."""
    with warnings.catch_warnings():  # DCP's note that it reads in one process: what is meant here
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(tensors, storage_reader=HuggingFaceStorageReader(str(Path(folder) / SHARDS)), no_dist=True)


def read_weights(folder: Path, model: torch.nn.Module) -> None:
    """The weights of a sharded checkpoint into a plain `model`, in this process alone."""
    weights = {f"model.{name}": t for name, t in untied(model.state_dict()).items()}
    read(weights, folder)
    model.load_state_dict({name.removeprefix("model."): t for name, t in weights.items()}, strict=False)


def saved(folder: Path) -> dict:
    """Name -> (global shape, dtype) of every tensor in a sharded checkpoint, from its safetensors headers."""
    found = HuggingFaceStorageReader(str(Path(folder) / SHARDS)).read_metadata().state_dict_metadata
    return {name: (tuple(meta.size), meta.properties.dtype) for name, meta in found.items()}


def holds_average(folder: Path) -> bool:
    return any(name.startswith("ema.") for name in saved(folder))


def read_average(folder: Path) -> dict[str, torch.Tensor]:
    """The averaged weights of a sharded checkpoint, whole, by parameter name."""
    tensors = {name: torch.empty(shape, dtype=dtype) for name, (shape, dtype) in saved(folder).items()
               if name.startswith("ema.")}
    read(tensors, folder)
    return {name.removeprefix("ema."): t for name, t in tensors.items()}


def read_training(folder: Path, model: torch.nn.Module, optimizer, plain_state: dict) -> None:
    """Weights and optimizer state of a sharded checkpoint into a plain model and its optimizer, in this process
    alone (every process reads every row); plain_state: what save_shards returned, from state.pt."""
    read_weights(folder, model)
    optimizers = optimizers_of(optimizer)
    state = get_optimizer_state_dict(model, optimizers, options=FLAT)  # every tensor there, at its full size
    tensors = {f"optimizer.{key}": v for key, v in state.items() if isinstance(v, torch.Tensor)}
    read(tensors, folder)
    state.update({key.removeprefix("optimizer."): v for key, v in tensors.items()})
    state.update(plain_state)
    set_optimizer_state_dict(model, optimizers, state, options=FLAT)


def full_optimizer_state(model: torch.nn.Module, optimizer) -> dict:
    """A plain model's optimizer state by parameter name, whole tensors: what `move_optimizer_state` gives to the
    optimizer of the same model once sharded."""
    return get_optimizer_state_dict(model, optimizers_of(optimizer), options=StateDictOptions(full_state_dict=True))


def move_optimizer_state(model: torch.nn.Module, optimizer, state: dict) -> None:
    """`state` (full_optimizer_state of the model before it was sharded) into the optimizer of the sharded model:
    each process keeps its rows."""
    set_optimizer_state_dict(model, optimizers_of(optimizer), state, options=StateDictOptions(full_state_dict=True))


def set_weights(model: torch.nn.Module, weights: dict) -> None:
    """Full weights by name into a sharded model (each process keeps its rows)."""
    set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True))
