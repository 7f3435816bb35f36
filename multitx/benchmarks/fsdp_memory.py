"""python -m multitx.benchmarks.fsdp_memory [processes=2] [batch=1] [tokens=64] [steps=2] [malloc=training]
       [--smoke]

The memory strategy=fsdp saves (multitx/engine/sharding.py): GPT-2 small's shape (gpt2_config of
multitx/models/from_gpt2.py: 12 blocks of 768 wide, 12 heads, the 50,257-token vocabulary, context
1,024, learned positions, biases, the head tied to the token embedding; 124.4M parameters) trained
by `processes` gloo processes on the CPU under torchrun (torch.distributed.run), once with
strategy=ddp and once with strategy=fsdp, each launch in fresh processes. Each process builds the
model (seed 0), shards it (sharding.shard: FSDP2's fully_shard on each block, then on the model) or
wraps it in DDP (sharding.wrap), builds its optimizer as training does (build_optimizer with
optimizer=adamw: fused AdamW, weight decay on the matrices), and trains `steps` steps on `batch`
random sequences of `tokens` tokens (a short batch: the activations are not what is measured).
Then each process counts, in bytes:

    parameters        its parameters: the whole model under DDP; under FSDP its own rows of each
                      parameter (the DTensor's to_local()), a tied weight once
    gradients         their gradients after the last backward (the same split), shown apart
    optimizer state   the tensors AdamW keeps for each parameter: exp_avg, exp_avg_sq (the shape of
                      the parameter's local rows) and its step count (one number)
    params + optim    parameters and optimizer state: the figure of the goal
    peak RSS growth   the process's high-water mark of resident memory at the end (VmHWM in
                      /proc/self/status) less its resident memory before the model was built
                      (torch imported, the process group joined): everything it ever held at once,
                      DDP's gradient buckets, FSDP's gathered units and the whole model FSDP is
                      built from before it is sharded included
    RSS growth        the resident memory at the end less the same baseline

The resident memory depends on what malloc does with freed memory, and setup_runtime sets that up
for a CPU run (engine/cpu_memory.py: tensors up to 32 MB from the heap, up to 512 MB of freed heap
kept). malloc=training (the default) keeps that; malloc=glibc sets glibc's own default thresholds
back (128 KiB each, fixed) in each process before the model is built. The tensors counted are the
same either way.

Rank 0 gathers every process's figures; the command prints both strategies side by side (per
process: the largest of the processes' figures) and FSDP's params + optim as a share of DDP's.

Goal (issue 28): with 2 processes, FSDP's parameters + optimizer state per process at most 55% of DDP's.

--smoke (smoke=true): 2 blocks of 64 wide, 4 heads, a vocabulary of 256, context 64, one step of 1 x 16
tokens, both strategies in one launch, one after the other: every path in seconds (no figure to keep;
the second strategy's RSS figures start from the first's).

The same worker runs the GPU suite's part `sharding` (gpu.py: `gpu_figures`): all of a machine's GPUs
under torchrun, bf16, both strategies one after the other in the same processes, reporting tokens/s,
MFU and torch.cuda.max_memory_allocated per GPU. Its entry point, which torchrun starts in each
process, is `python -m multitx.benchmarks.fsdp_memory --worker SPEC` (SPEC: the JSON of worker()'s
settings); it is not a command to type.

The figures, with their command, machine and day, are in docs/benchmarks/fsdp_memory.md.
"""

import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from multitx.benchmarks.activation_memory import memory_status
from multitx.cli import parse_args, run_cli
from multitx.config.rules import Choice, Flag, Whole
from multitx.config.settings import setting
from multitx.errors import UserError

STRATEGIES = ("ddp", "fsdp")
GPT2_SMALL = {"layers": 12, "dim": 768, "heads": 12, "vocab": 50257, "context": 1024}
SMOKE = {"layers": 2, "dim": 64, "heads": 4, "vocab": 256, "context": 64, "batch": 1, "tokens": 16, "steps": 1}
MIB = 2**20
GOAL = 0.55  # FSDP's params + optimizer state per process, as a share of DDP's, with 2 processes
FIGURES = ("params", "grads", "optim")  # the tensors counted, in bytes
GLIBC_THRESHOLD = 128 * 1024  # glibc's default mmap and trim thresholds, in bytes


@dataclass
class FSDPMemoryArgs:
    processes: int = setting(2, Whole(min=2), "processes under torchrun, each on one thread")
    batch: int = setting(1, Whole(min=1), "sequences a step, in each process")
    tokens: int = setting(64, Whole(min=1), "tokens a sequence (at most the context, 1,024)")
    steps: int = setting(2, Whole(min=1), "training steps before the memory is counted")
    malloc: str = setting("training", Choice(options=("training", "glibc")), "training: malloc as a CPU training "
                          "run sets it (engine/cpu_memory.py); glibc: glibc's default thresholds")
    smoke: bool = setting(False, Flag(), f"{SMOKE}: every path, quickly (--smoke is the same)")
    debug: bool = setting(False, Flag(), "show full tracebacks instead of one-line errors")


def local_bytes(tensors) -> int:
    """The bytes these tensors hold in this process: a DTensor's local rows, each storage once."""
    from torch.distributed.tensor import DTensor

    seen = {}
    for tensor in tensors:
        if isinstance(tensor, torch.Tensor):
            tensor = tensor.to_local() if isinstance(tensor, DTensor) else tensor
            seen.setdefault((tensor.data_ptr(), tensor.numel()), tensor.numel() * tensor.element_size())
    return sum(seen.values())


def counted(model: torch.nn.Module, optimizer) -> dict[str, int]:
    """Bytes of this process's parameters, gradients and optimizer state (see the module's docstring)."""
    params = list(model.parameters())  # a tied weight once
    states = [value for state in optimizer.state.values() for value in state.values()]
    return {"params": local_bytes(params), "grads": local_bytes(p.grad for p in params if p.grad is not None),
            "optim": local_bytes(states)}


def build(spec: dict):
    """GPT-2 small's shape as gpt2_config builds it (biases, GELU by its tanh approximation, tied head), with
    the spec's sizes."""
    from multitx.models.from_gpt2 import gpt2_config
    from multitx.models.language_model import LanguageModel

    config = gpt2_config({"model_type": "gpt2", "n_embd": spec["dim"], "n_layer": spec["layers"],
                          "n_head": spec["heads"], "vocab_size": spec["vocab"], "n_positions": spec["context"]})
    torch.manual_seed(0)
    return LanguageModel(config)


def train_one(spec: dict, strategy: str, runtime) -> dict:
    """Build, shard or wrap, and train the model of `spec` for its warm-up and timed steps under `strategy`;
    this process's figures."""
    from omegaconf import OmegaConf

    from multitx.benchmarks.peaks import clock, dense_bf16_peak, mfu, model_flops_per_token
    from multitx.engine import sharding
    from multitx.engine.optimizers import build_optimizer

    cfg = OmegaConf.create({"strategy": strategy, "compile": False, "optimizer": "adamw", "lr": 6e-4,
                            "betas": [0.9, 0.95], "weight_decay": 0.1})
    cuda = runtime.device.type == "cuda"
    gc.collect()  # the previous strategy's model and optimizer, when several run in these processes
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(runtime.device)
    before = memory_status()
    model = build(spec).to(runtime.device).train()
    flops_per_token = model_flops_per_token(model)  # before sharding: the whole model's
    if sharding.sharded(cfg, runtime):
        sharding.shard(model, runtime)
    forward_model = sharding.wrap(model, cfg, runtime)  # DDP under strategy=ddp; the sharded model itself
    optimizer = build_optimizer(model, cfg, runtime)
    generator = torch.Generator().manual_seed(runtime.rank)  # each process its own batch
    ids = torch.randint(spec["vocab"], (spec["batch"], spec["tokens"] + 1), generator=generator).to(runtime.device)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with runtime.autocast():
            _, loss = forward_model(ids[:, :-1], ids[:, 1:])
        loss.backward()
        optimizer.step()  # the gradients stay until the next step's zero_grad: counted below
        return loss.item()

    for _ in range(spec["warmup"]):
        step()
    started = clock(runtime.device)
    for _ in range(spec["steps"]):
        loss = step()
    seconds = clock(runtime.device) - started
    after = memory_status()
    tokens_per_s = spec["batch"] * spec["tokens"] * spec["steps"] / seconds  # this process's
    peak = dense_bf16_peak(torch.cuda.get_device_name(runtime.device)) if cuda else None
    row = {"strategy": strategy, "rank": runtime.rank, **counted(model, optimizer), "loss": loss,
           "step_s": seconds / spec["steps"], "tokens_per_s": tokens_per_s, "flops_per_token": flops_per_token,
           "mfu": mfu(flops_per_token, tokens_per_s, peak), "rss_before": before["VmRSS"],
           "peak_growth": after["VmHWM"] - before["VmRSS"], "rss_growth": after["VmRSS"] - before["VmRSS"],
           "peak_rss": after["VmHWM"]}
    if cuda:
        row.update(cuda_peak=torch.cuda.max_memory_allocated(runtime.device),
                   cuda_held=torch.cuda.memory_allocated(runtime.device))
    return row  # the model and optimizer go with this function's frame (the next strategy's gc.collect)


def worker(spec: dict) -> None:
    """One process under torchrun: train under each of spec["strategies"] in turn; rank 0 writes every
    process's figures to spec["out"] (a JSON list of rows) and prints its table."""
    import torch.distributed as dist

    from multitx.engine.runtime import leave_process_group, setup_runtime

    runtime = setup_runtime(spec["device"], spec["precision"])
    if spec.get("malloc") == "glibc":  # undo what setup_runtime set for the CPU (engine/cpu_memory.py)
        from multitx.engine.cpu_memory import set_thresholds

        set_thresholds(GLIBC_THRESHOLD, GLIBC_THRESHOLD)
    rows = []
    for strategy in spec["strategies"]:
        mine = train_one(spec, strategy, runtime)
        everyone = [None] * runtime.world_size
        dist.all_gather_object(everyone, mine)
        rows += everyone
    if runtime.is_main:
        Path(spec["out"]).write_text(json.dumps(rows), encoding="utf-8")
        print(process_table(rows), flush=True)
    leave_process_group(runtime)


def launch(spec: dict, processes: int, threads: int | None = 1) -> subprocess.Popen:
    """torchrun with `processes` workers of `spec` (its "out" set to a fresh file here), each on `threads`
    threads (None: torch's own choice), stdout and stderr captured."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "PYTHONUNBUFFERED": "1",
           **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             f"--nproc_per_node={processes}", "-m", "multitx.benchmarks.fsdp_memory", "--worker",
                             json.dumps(spec)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(process: subprocess.Popen, spec: dict) -> tuple[list[dict], str]:
    """The rows a launch wrote, and what its rank 0 printed. If anything stops the wait (the GPU suite's
    share running out, Ctrl-C), torchrun is told to stop its workers (SIGTERM), then killed."""
    try:
        out, err = process.communicate()
    except BaseException:
        process.terminate()  # torchrun passes it on to each worker's process group
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        raise
    if process.returncode != 0:
        last = [line for line in err.strip().splitlines() if line.strip()][-1:] or ["no error message"]
        raise UserError(f"the torchrun launch of {', '.join(spec['strategies'])} failed (exit "
                        f"{process.returncode}): {last[0]}\n{err[-3000:]}")
    return json.loads(Path(spec["out"]).read_text(encoding="utf-8")), out


def run(spec: dict, processes: int, threads: int | None = 1) -> list[dict]:
    """Every process's rows of one launch."""
    with tempfile.TemporaryDirectory() as folder:
        spec = {**spec, "out": str(Path(folder) / "rows.json")}
        return finish(launch(spec, processes, threads), spec)[0]


def cpu_spec(shape: dict, batch: int, tokens: int, steps: int, strategy: str, malloc: str = "training") -> dict:
    return {**shape, "device": "cpu", "precision": "fp32", "strategies": [strategy], "batch": batch,
            "tokens": tokens, "warmup": 0, "steps": steps, "malloc": malloc}


def measure(shape: dict, processes: int, batch: int, tokens: int, steps: int, malloc: str = "training",
            together: bool = False) -> list[dict]:
    """Every process's rows of both strategies, each in a launch of its own (fresh processes: their own
    high-water marks); together: one launch, the strategies one after the other in the same processes."""
    specs = [cpu_spec(shape, batch, tokens, steps, strategy, malloc) for strategy in STRATEGIES]
    if together:
        return run({**specs[0], "strategies": list(STRATEGIES)}, processes)
    return [row for spec in specs for row in run(spec, processes)]


def mib(nbytes: float) -> str:
    return f"{nbytes / MIB:,.1f} MiB" if abs(nbytes) >= MIB else f"{nbytes / 1024:,.1f} KiB"


def process_table(rows: list[dict]) -> str:
    """A row a process and strategy: what it holds."""
    lines = ["| strategy | rank | parameters | gradients | optimizer state | params + optim | peak RSS growth "
             "| RSS growth | s a step |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['strategy']} | {r['rank']} | {mib(r['params'])} | {mib(r['grads'])} | {mib(r['optim'])} "
                     f"| {mib(r['params'] + r['optim'])} | {mib(r['peak_growth'])} | {mib(r['rss_growth'])} "
                     f"| {r['step_s']:.2f} |")
    return "\n".join(lines)


def per_process(rows: list[dict], strategy: str) -> dict:
    """The largest figure of any process under `strategy` (memory: the process that needs the most)."""
    mine = [r for r in rows if r["strategy"] == strategy]
    keys = [*FIGURES, "peak_growth", "rss_growth", "step_s"]
    figures = {key: max(r[key] for r in mine) for key in keys}
    figures["params_optim"] = max(r["params"] + r["optim"] for r in mine)
    return figures


def comparison(rows: list[dict]) -> tuple[str, float]:
    """DDP and FSDP side by side, and FSDP's params + optim over DDP's."""
    ddp, fsdp = (per_process(rows, strategy) for strategy in STRATEGIES)
    names = {"params": "parameters", "grads": "gradients", "optim": "optimizer state",
             "params_optim": "**parameters + optimizer state**", "peak_growth": "peak RSS growth",
             "rss_growth": "RSS growth at the end", "step_s": "seconds a step"}
    lines = ["| per process (the largest) | ddp | fsdp | fsdp / ddp |", "|---|---|---|---|"]
    for key, name in names.items():
        shown = (lambda v: f"{v:.2f}") if key == "step_s" else mib
        lines.append(f"| {name} | {shown(ddp[key])} | {shown(fsdp[key])} | {fsdp[key] / ddp[key]:.3f} |")
    return "\n".join(lines), fsdp["params_optim"] / ddp["params_optim"]


def main(argv: list[str]) -> None:
    args = parse_args(argv, FSDPMemoryArgs, __doc__)
    smoke = bool(args["smoke"])
    shape = {key: SMOKE[key] for key in GPT2_SMALL} if smoke else dict(GPT2_SMALL)
    batch, tokens, steps = (SMOKE[key] if smoke else int(args[key]) for key in ("batch", "tokens", "steps"))
    processes = int(args["processes"])
    if tokens > shape["context"]:
        raise UserError(f"tokens={tokens} is more than the context, {shape['context']}")
    print(f"{os.cpu_count()} CPUs, torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
          f"{processes} gloo processes, {shape}, {batch} x {tokens} tokens a step, {steps} steps, "
          f"malloc={args['malloc']}"
          + ("; --smoke: not a measurement" if smoke else ""), flush=True)
    started = time.perf_counter()
    rows = measure(shape, processes, batch, tokens, steps, args["malloc"], together=smoke)
    print(json.dumps(rows), flush=True)
    print("\n" + process_table(rows) + "\n")
    side_by_side, ratio = comparison(rows)
    print(side_by_side)
    goal = f"goal with 2 processes: at most {GOAL:.0%}: {'met' if ratio <= GOAL else 'MISSED'}" if processes == 2 \
        else f"1/{processes} is {1 / processes:.1%}"
    print(f"\nFSDP's parameters + optimizer state per process: {ratio:.1%} of DDP's ({goal}); "
          f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:  # a process torchrun started: not a command to type
        worker(json.loads(sys.argv[2]))
    else:
        run_cli(main)
