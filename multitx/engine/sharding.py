"""How several processes share a model: strategy=ddp (a whole copy in each) or strategy=fsdp (a slice each).

    ddp   every process holds every parameter, gradient and optimizer state; after backward the
          gradients are averaged (DistributedDataParallel). Memory per process: all of it.
    fsdp  FSDP2 (torch.distributed.fsdp.fully_shard): each trunk block, then the model as a whole,
          is one unit whose parameters are split row-wise across the processes (a DTensor each,
          Shard(0)). Before a unit runs forward or backward its parameters are all-gathered, and
          freed after; its gradients are reduce-scattered, so each process keeps the gradient and
          the optimizer state of its own rows only. Memory per process: about 1/N of the
          parameters, gradients and optimizer state, plus one unit's full parameters at a time.

Both average the gradients over the processes, so both train exactly as one process does on the
global batch (tests/test_fsdp.py). With precision=bf16 (or fp16) FSDP's mixed-precision policy
gathers the parameters in that dtype and reduces the gradients in fp32; the sharded parameters and
the optimizer stay fp32.

Rank 0 alone writes the run's logs, plots and example captions; under FSDP it does that work (and
the evaluation, whose metrics it sends to the others) with a full, unsharded copy of the model
(`Replica`), into which the processes gather the weights at each evaluation.
"""

import copy
from contextlib import contextmanager, nullcontext

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from multitx.engine.runtime import Runtime
from multitx.nn.trunk import Block

REDUCED = {"bf16": torch.bfloat16, "fp16": torch.float16}  # precision= -> the dtype FSDP gathers parameters in


def sharded(cfg, runtime: Runtime) -> bool:
    """True when this run shards its model: strategy=fsdp with more than one process."""
    return runtime.distributed and cfg.get("strategy", "ddp") == "fsdp"


def shard(model: torch.nn.Module, runtime: Runtime) -> torch.nn.Module:
    """FSDP2 in place: each trunk Block one unit, then the model (its embeddings, patch tokenizer, heads:
    whatever no block holds, a tied head with its embedding), from rank 0's weights. Returns the same module,
    now sharded."""
    with torch.no_grad():  # every process starts from rank 0's weights, as DDP makes them (each drew its own)
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor, src=0)
    mesh = init_device_mesh(runtime.device.type, (runtime.world_size,))
    reduced = REDUCED.get(runtime.precision)
    policy = MixedPrecisionPolicy(param_dtype=reduced, reduce_dtype=torch.float32) if reduced \
        else MixedPrecisionPolicy()
    for module in model.modules():
        if isinstance(module, Block):
            fully_shard(module, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def wrap(model: torch.nn.Module, cfg, runtime: Runtime) -> torch.nn.Module:
    """The module the training step calls: the model, compiled (compile=true), in DDP when several processes
    replicate it. A sharded model (FSDP) is its own wrapper."""
    forward_model = torch.compile(model) if cfg.compile else model
    if runtime.distributed and not sharded(cfg, runtime):
        forward_model = DistributedDataParallel(forward_model, device_ids=[runtime.device.index]
                                                if runtime.device.type == "cuda" else None)
    return forward_model


@contextmanager
def no_sync(forward_model: torch.nn.Module, model: torch.nn.Module):
    """Gradients kept in each process for now (an early micro-step of grad_accum): DDP's no_sync, or FSDP's
    requires_gradient_sync turned off until the block ends."""
    if isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        with forward_model.no_sync() if isinstance(forward_model, DistributedDataParallel) else nullcontext():
            yield


def local(value: torch.Tensor) -> torch.Tensor:
    """A DTensor's whole value (all-gathered: every process must call this), or a tensor as it is."""
    return value.full_tensor() if isinstance(value, DTensor) else value


class Replica:
    """Rank 0's full, unsharded copy of a model that FSDP shards, for the work rank 0 does alone (evaluation,
    examples, plots, the test split). Made before sharding; `refresh` gathers the current weights into it
    (a collective: every process calls it)."""

    def __init__(self, model: torch.nn.Module, runtime: Runtime):
        self.model = copy.deepcopy(model) if runtime.is_main else None

    def refresh(self, sharded_model: torch.nn.Module) -> torch.nn.Module | None:
        """The replica with `sharded_model`'s weights on rank 0; None elsewhere."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(sharded_model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.model is None:
            return None
        self.model.load_state_dict(full)
        self.model.train(sharded_model.training)
        return self.model


def broadcast(value):
    """Rank 0's `value` (plain data: metrics), on every process."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
