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
def one_thread():
    """Tiny models run fastest on one thread, and do not fight other work for the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def small_corpus(tmp_path) -> Path:
    """A small UTF-8 text file: enough for tiny models to train on in seconds."""
    lines = [f"{name}: {verb} the {thing}, good {name.lower()}!" for name in ("ROMEO", "JULIET", "MERCUTIO")
             for verb in ("speak", "hold", "take") for thing in ("sword", "rose", "light", "night")]
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(lines * 20) + "\n", encoding="utf-8")
    return path


def write_line_corpus(path: Path) -> Path:
    """One short line of text, 40 times: a corpus for runs of a few steps in module-scoped fixtures."""
    path.write_text("To be, or not to be, that is the question.\n" * 40, encoding="utf-8")
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
            "batch_size=8", "model.trunk.layers=2", "model.trunk.heads=2", "model.trunk.dim=32", "model.context=32",
            "show_tokens=20", "progress=false", "warmup_steps=5", *extra]


def tiny_caption_args(tmp, *extra: str) -> list[str]:
    return ["task=caption", f"run_dir={tmp / 'run'}", f"data_dir={tmp / 'datasets'}", "data.num_train=120",
            "data.num_val=12", "data.num_test=12", "model.image_size=16", "model.patch_size=4", "model.decoder.dim=32",
            "model.encoder.dim=32", "model.encoder.layers=1", "model.decoder.layers=1", "model.decoder.heads=2",
            "model.encoder.heads=2", "steps=24", "eval_every=12", "eval_batches=1", "eval_images=12",
            "batch_size=8", "captions_per_image=2", "warmup_steps=4", "lr=3e-3", "show_captions=2",
            "progress=false", *extra]
