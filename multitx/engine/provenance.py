"""Where a run came from: RUN_DIR/provenance.jsonl, one JSON line per start and one per end.

    {"event": "start", "time": "2026-12-07T10:00:00+00:00", "command": "multitx train task=charlm steps=100",
     "overrides": ["task=charlm", "steps=100"], "resumed_from": null, "multitx": "0.2.0",
     "git": {"commit": "f627fd4...", "dirty": false}, "python": "3.11.2", "torch": "2.14.1", "cuda": null,
     "timm": "1.0.22", "host": "box", "device": "cpu (fp32)", "processes": 1, "config": {...}}
    {"event": "end", "time": "...", "outcome": "completed", "step": 100, "seconds": 61.2}

`cuda` is the CUDA version torch was built with (null for a CPU build); `device` says what the run used.
A resume appends a start record of its own (its command, its config), so the history of a run
is never overwritten; config.yaml holds the config of the latest start. `git` is there when multitx
runs from a checkout (dirty: tracked files differ from the commit). A run killed outright has a
start without an end. Reading it back (`read`) parses JSON only: nothing in it is imported or run.
"""

import json
import os
import platform
import shlex
import socket
import subprocess
import sys
from datetime import datetime
from importlib import metadata
from pathlib import Path

import torch

FILE = "provenance.jsonl"


def now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def version_of(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def git_state(folder: Path) -> dict | None:
    """The commit of the checkout `folder` is in, and whether tracked files differ from it; None outside one."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):  # no git, not a checkout (an installed wheel), or too slow
        return None
    return {"commit": commit, "dirty": dirty}


def command_line() -> str:
    """The command as typed, as far as Python can tell: `python -m multitx.train ...` or `multitx train ...`."""
    argv = list(getattr(sys, "orig_argv", sys.argv))
    if argv and Path(argv[0]).name.startswith("python") and len(argv) > 1 and Path(argv[1]).name == "multitx":
        argv = argv[1:]  # a console script run by its interpreter: show the script
    if argv and Path(argv[0]).name == "multitx":
        argv[0] = "multitx"
    return shlex.join(argv)


def start_record(config: dict, overrides: list[str] | None, device: str, processes: int,
                 resumed_from: str | None) -> dict:
    package = Path(__file__).resolve().parents[1]  # multitx/
    return {
        "event": "resume" if resumed_from else "start", "time": now(), "command": command_line(),
        "overrides": list(overrides) if overrides is not None else None, "resumed_from": resumed_from,
        "multitx": version_of("multitx"), "git": git_state(package),
        "python": platform.python_version(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "timm": version_of("timm"), "host": socket.gethostname(),
        "device": device, "processes": processes, "sweep": sweep_job(), "config": config,
    }


def sweep_job() -> dict | None:
    """The sweep folder and job number when Hydra's --multirun launched this run; None otherwise."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    hydra = HydraConfig.get()
    return {"dir": str(hydra.sweep.dir), "job": int(hydra.job.num)}


def append(run_dir: Path, record: dict) -> None:
    """One line, flushed to the disk: a crash right after still leaves the record."""
    with open(Path(run_dir) / FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def end_record(outcome: str, step: int, seconds: float) -> dict:
    return {"event": "end", "time": now(), "outcome": outcome, "step": step, "seconds": round(seconds, 1)}


def read(run_dir: Path) -> list[dict]:
    """Every record of a run, oldest first; [] for a run from before records were kept. A line cut short
    by a kill is skipped."""
    path = Path(run_dir) / FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
