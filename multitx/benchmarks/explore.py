"""python -m multitx.benchmarks.explore [requests=50] [concurrent=20] [threads=0] [run_dir=DIR] [--smoke]

How fast the live explorer (python -m multitx.explore) answers, measured as a learner's browser
meets it: the server on 127.0.0.1 in this process, a bounded HTTP client (httpx, at most
`concurrent` connections) beside it. For two runs, each trained one step with its task's
default model (their weights do not change the time):

  charlm      task=charlm, a 64-character prompt (the whole context)
  vit_cifar   task=vit_cifar's model (9 layers of 192, 12 heads), one 32x32 PNG image

it sends `concurrent` different requests at once (all must be answered, each with its own
input's answer), then `requests` one after another, and prints the median and 95th-percentile
latency of one recompute (POST /api/attention: the model traced, every layer's weights packed,
the answer sent and read) and the answer's size. Goal: 95th percentile under 200 ms on a 2-core
CPU. --smoke: tiny models and 5 requests, to check the benchmark itself runs.

The current figures, with their command, machine and day, are in docs/benchmarks/explore.md.
"""

import asyncio
import base64
import io
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from multitx.cli import load_config, parse_args, run_cli
from multitx.config.rules import Flag, Folder, Whole
from multitx.config.settings import setting
from multitx.engine.trainer import train
from multitx.errors import UserError
from multitx.explore.analysis import Explorer
from multitx.explore.app import build_app
from multitx.explore.server import background
from multitx.imports import installed

GOAL_P95_MS = 200.0
SMOKE = ["model.trunk.layers=1", "model.trunk.dim=32", "model.trunk.heads=2"]


@dataclass
class ExploreArgs:
    requests: int = setting(50, Whole(min=1), "requests timed one after another, per run")
    concurrent: int = setting(20, Whole(min=1), "requests sent at once first; all must be answered")
    threads: int = setting(0, Whole(min=0), "CPU threads for the model; 0: torch's default")
    run_dir: str = setting("", Folder(must_exist=False), "where the two runs are trained; empty: a temporary folder")
    smoke: bool = setting(False, Flag(), "tiny models, 5 requests: check that the benchmark runs")
    debug: bool = setting(False, Flag(), "show full tracebacks instead of one-line errors")


def png(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_folder(root: Path, size: int = 32) -> Path:
    """Two classes of four random RGB images each, in train/ and val/: enough for a one-step ViT run."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("noise", "stripes"):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(4):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")
    return root


def trained(folder: Path, smoke: bool) -> dict[str, Path]:
    """The two runs, one step each, with the tasks' default models (tiny ones for --smoke)."""
    small = SMOKE if smoke else []
    common = ["steps=1", "eval_every=1", "eval_batches=1", "progress=false", "device=cpu"]
    train(load_config(["task=charlm", f"run_dir={folder / 'charlm'}", f"data_dir={folder / 'datasets'}",
                       "show_tokens=0", "batch_size=2", *common, *small]))
    images = image_folder(folder / "images")
    train(load_config(["task=vit_cifar", "data=imagefolder", f"data.root={images}", f"run_dir={folder / 'vit'}",
                       f"data_dir={folder / 'datasets'}", "batch_size=4", "data.workers=0", *common, *small]))
    return {"charlm": folder / "charlm", "vit_cifar": folder / "vit"}


def inputs(task: str, n: int, explorer: Explorer) -> list[dict]:
    """n different inputs: 64-character windows of the run's own text, or random 32x32 images."""
    if task == "charlm":
        vocab = explorer.model(explorer.default).vocab
        text = "".join(vocab.decode([i % vocab.vocab_size]) for i in range(7 * n + 64))
        example = explorer.example.prompt if explorer.example else ""
        text = (example * (64 // max(len(example), 1) + 2) + text) if example else text
        return [{"prompt": text[i * 7: i * 7 + 64]} for i in range(n)]
    rng = np.random.default_rng(1)
    return [{"image": png(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)), "name": f"{i}.png"} for i in range(n)]


async def measure(url: str, bodies: list[dict], requests: int, concurrent: int) -> dict:
    import httpx

    limits = httpx.Limits(max_connections=concurrent, max_keepalive_connections=concurrent)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        async def ask(body: dict) -> tuple[float, httpx.Response]:
            start = time.perf_counter()
            response = await client.post("/api/attention", json=body)
            return (time.perf_counter() - start) * 1000, response

        await ask(bodies[0])  # the first request warms the path up
        start = time.perf_counter()
        together = await asyncio.gather(*(ask(b) for b in bodies[:concurrent]))
        burst = time.perf_counter() - start
        answered = sum(r.status_code == 200 for _, r in together)
        own = sum(r.status_code == 200 and r.json()["source"] == (f"the uploaded file {b['name']}" if "image" in b
                                                                   else f"prompt={b['prompt']!r}")
                  for (_, r), b in zip(together, bodies[:concurrent], strict=True))
        times, size = [], 0
        for i in range(requests):
            ms, response = await ask(bodies[i % len(bodies)])
            if response.status_code != 200:
                raise UserError(f"the explorer answered {response.status_code}: {response.text[:200]}")
            times.append(ms)
            size = len(response.content)
    times.sort()
    return {"concurrent": concurrent, "answered": answered, "own_answers": own, "burst_s": round(burst, 3),
            "requests": requests, "median_ms": round(statistics.median(times), 1),
            "p95_ms": round(times[min(len(times) - 1, int(0.95 * len(times)))], 1),
            "answer_kb": round(size / 1024, 1)}


def main(argv: list[str]) -> None:
    args = parse_args(argv, ExploreArgs, __doc__)
    if not installed("httpx"):
        raise UserError("this benchmark's client is httpx, not installed: pip install httpx")
    if args["threads"]:
        torch.set_num_threads(int(args["threads"]))
    smoke = bool(args["smoke"])
    requests, concurrent = (5, min(5, int(args["concurrent"]))) if smoke else (int(args["requests"]),
                                                                                int(args["concurrent"]))
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(str(args["run_dir"])) if args["run_dir"] else Path(scratch)
        runs = trained(folder, smoke)
        figures = {}
        for task, run_dir in runs.items():
            explorer = Explorer(run_dir)
            bodies = inputs(task, max(concurrent, 8), explorer)
            with background(build_app(explorer)) as url:
                figures[task] = asyncio.run(measure(url, bodies, requests, concurrent))
            model = explorer.model(explorer.default).model
            figures[task]["parameters_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
    print(f"explorer latency, torch threads {torch.get_num_threads()}:")
    for task, f in figures.items():
        verdict = "meets" if f["p95_ms"] < GOAL_P95_MS else "misses"
        print(f"  {task:<10} ({f['parameters_m']}M parameters) {f['answered']}/{f['concurrent']} concurrent "
              f"answered ({f['own_answers']} with their own input's answer, in {f['burst_s']} s); {f['requests']} "
              f"in turn: median {f['median_ms']} ms, p95 {f['p95_ms']} ms ({verdict} the {GOAL_P95_MS:.0f} ms "
              f"goal); answer {f['answer_kb']} KB")
    print(json.dumps(figures))


if __name__ == "__main__":
    run_cli(main)
