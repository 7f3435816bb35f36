import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_SHAKESPEARE = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def small_corpus(tmp_path) -> Path:
    """A small UTF-8 text file: enough for tiny models to train on in seconds."""
    lines = [f"{name}: {verb} the {thing}, good {name.lower()}!" for name in ("ROMEO", "JULIET", "MERCUTIO")
             for verb in ("speak", "hold", "take") for thing in ("sword", "rose", "light", "night")]
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(lines * 20) + "\n", encoding="utf-8")
    return path


def run_module(module: str, *args: str, cwd: Path | None = None, timeout: int = 180,
               env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m module args...` in a fresh process, as a user would run it."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def tiny_charlm_args(corpus: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["task=charlm", "data=textfile", f"data.path={corpus}", f"run_dir={run_dir}",
            f"data_dir={run_dir.parent / 'datasets'}", "steps=30", "eval_every=15", "eval_batches=2",
            "batch_size=8", "model.layers=2", "model.heads=2", "model.dim=32", "model.context=32",
            "show_tokens=20", "progress=false", "warmup_steps=5", *extra]
