"""Where and how the maths runs: device, precision, processes, seeds."""

import gc
import os
import random
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from multitx.config.hardware import PRECISIONS, Device, choose_precision, parse_device, precision_note
from multitx.engine.cpu_memory import reuse_freed_memory
from multitx.errors import UserError


@dataclass
class Runtime:
    device: torch.device
    autocast_dtype: torch.dtype | None  # None: plain fp32
    rank: int = 0
    world_size: int = 1
    note: str = ""  # a hint about the precision chosen, printed at start

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def precision(self) -> str:
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.autocast_dtype, "fp32")

    def autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def to_device(self, batch):
        """Move a tensor, or a tuple/list/dict of them, to the device (non-blocking from pinned memory)."""
        if isinstance(batch, torch.Tensor):
            return batch.to(self.device, non_blocking=True)
        if isinstance(batch, dict):
            return {k: self.to_device(v) for k, v in batch.items()}
        if isinstance(batch, (tuple, list)):
            return type(batch)(self.to_device(v) for v in batch)
        return batch

    def describe(self) -> str:
        procs = f", {self.world_size} processes" if self.distributed else ""
        name = str(self.device) if self.device.index else self.device.type  # cuda, cuda:1, mps, cpu
        return f"{name} ({self.precision}{procs})"


def setup_runtime(device: str = "auto", precision: str = "auto", timeout_s: float = 300) -> Runtime:
    """device: auto (CUDA if visible, else the CPU), cpu, cuda (cuda:LOCAL_RANK under torchrun), cuda:N
    or mps; precision: auto, fp32, bf16 or fp16, auto as multitx/config/hardware.py's table says. A
    device this machine lacks is one clear line. Under torchrun (RANK and WORLD_SIZE set) also joins
    the process group, whose collectives give up after timeout_s seconds without their peers."""
    parsed = parse_device(device)
    if parsed is None:
        raise UserError(f"device must be {Device().describe()}, got {device!r}")
    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    kind, index = parsed
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda":
        dev = cuda_device(device, index, world_size)
    elif kind == "mps":
        if not torch.backends.mps.is_available():
            raise UserError("device=mps but MPS is not available here (it needs an Apple-silicon Mac and a PyTorch "
                            "built with MPS); use device=auto or device=cpu")
        if world_size > 1:
            raise UserError("device=mps trains in one process; run it without torchrun")
        dev = torch.device("mps")
    else:
        dev = torch.device("cpu")
        reuse_freed_memory()  # big activations from the heap, not a fresh mmap each step (engine/cpu_memory.py)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if kind == "cuda" else "gloo", timeout=timedelta(seconds=timeout_s))
    capability = torch.cuda.get_device_capability(dev) if kind == "cuda" else None
    chosen = choose_precision(precision, kind, capability, cuda_bf16_native() if kind == "cuda" else None)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[chosen]
    return Runtime(dev, dtype, rank, world_size, note=precision_note(precision, chosen, kind))


def leave_process_group(runtime: Runtime) -> None:
    """The end of a distributed run that went well: every process meets once more, then the process group is
    torn down, while Python is whole. A completed two-process FSDP run was seen, rarely (once in about 380
    runs here), to abort at exit ("terminate called without an active exception", exit -6); the likeliest
    cause is the group's objects, held by the sharded model's reference cycles (its hooks, its mesh), being
    destroyed late, during the interpreter's own exit. So: the cycles freed first (gc), all processes here
    (nobody still working: rank 0 runs the test split alone), then destroy_process_group."""
    if not (runtime.distributed and dist.is_initialized()):
        return
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


def cuda_device(asked: str, index: int | None, world_size: int) -> torch.device:
    """The CUDA device of device=cuda (this process's LOCAL_RANK) or device=cuda:N, made current."""
    if not torch.cuda.is_available():
        raise UserError(f"device={asked} but no CUDA GPU is visible; use device=auto or device=cpu")
    if index is not None:
        if world_size > 1:
            raise UserError(f"device={asked} names one GPU, but under torchrun each process takes cuda:LOCAL_RANK; "
                            f"give device=cuda (choose the GPUs with CUDA_VISIBLE_DEVICES)")
        count = torch.cuda.device_count()
        if index >= count:
            shown = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
            raise UserError(f"device={asked} but this machine shows {count} CUDA GPU{'s' if count > 1 else ''} "
                            f"({shown}); choose one of them, or device=cuda")
    else:
        index = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(index)
    torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls for whatever stays in fp32
    torch.backends.cudnn.allow_tf32 = True
    return torch.device("cuda", index)


def cuda_bf16_native() -> bool | None:
    """Whether the current CUDA GPU has bf16 in hardware (not emulated); None where torch cannot say."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # a torch without including_emulation: decide by compute capability
        return None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """The RNG states of Python, NumPy, torch, CUDA and MPS, as tensors and plain types
    (so that the checkpoint loads with torch.load(weights_only=True))."""
    version, mt_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "python": {"version": version, "state": torch.tensor(mt_state, dtype=torch.int64), "gauss": gauss},
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        **({"mps": torch.mps.get_rng_state()} if torch.backends.mps.is_available() else {}),
    }


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if state.get("mps") is not None and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state["mps"])
