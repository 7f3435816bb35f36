"""A run folder says where it came from: RUN_DIR/provenance.jsonl, a record per start and per end, a
resume adding its own; multitx.load returns them."""

import json
import platform
import subprocess
from pathlib import Path

import pytest
import torch

import multitx
from multitx.engine import provenance
from tests.conftest import run_module, tiny_charlm_args, write_line_corpus

FAST = ["steps=2", "eval_every=2", "eval_batches=1", "show_tokens=0"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("provenance")
    corpus = write_line_corpus(tmp / "corpus.txt")
    args = tiny_charlm_args(corpus, tmp / "run", *FAST)
    result = run_module("multitx.train", *args)
    assert result.returncode == 0, result.stderr
    return tmp / "run", args


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "provenance.jsonl").read_text(encoding="utf-8").splitlines()]


def test_a_run_records_its_command_overrides_versions_host_device_and_times(run):
    run_dir, args = run
    start, end = records(run_dir)
    assert start["event"] == "start" and start["overrides"] == args
    assert start["command"].split()[-len(args):] == args and "multitx.train" in start["command"]
    assert start["multitx"] == multitx.__version__ and start["python"] == platform.python_version()
    assert start["torch"] == torch.__version__ and start["timm"] and start["host"]
    assert start["device"].startswith("cpu") and start["processes"] == 1
    assert start["config"]["steps"] == 2 and start["config"]["run_dir"] == str(run_dir)
    assert end["event"] == "end" and end["outcome"] == "completed" and end["step"] == 2
    assert start["time"] <= end["time"]


def test_from_a_checkout_it_records_the_commit_and_whether_files_differ_from_it(run):
    repo = Path(multitx.__file__).parent.parent
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("multitx is not running from a git checkout")
    git = records(run[0])[0]["git"]
    assert git["commit"] == head.stdout.strip() and isinstance(git["dirty"], bool)


def test_a_resume_appends_its_own_record_and_keeps_the_first(run, tmp_path):
    from multitx.cli import run_cli
    from multitx.train import main

    run_dir, args = run
    copy = tmp_path / "run"
    subprocess.run(["cp", "-r", str(run_dir), str(copy)], check=True)
    resumed = [a for a in args if not a.startswith(("run_dir=", "steps="))] + [f"run_dir={copy}", "steps=4",
                                                                               "resume=auto"]
    run_cli(main, resumed)
    history = records(copy)
    assert [r["event"] for r in history] == ["start", "end", "resume", "end"]
    assert history[0]["config"]["steps"] == 2 and history[2]["config"]["steps"] == 4
    assert history[2]["resumed_from"].endswith("step_0000002") and history[3]["step"] == 4
    assert multitx.load(copy).provenance == history


def test_a_line_cut_short_by_a_kill_is_skipped_when_read(tmp_path):
    provenance.append(tmp_path, {"event": "start", "time": "t"})
    with open(tmp_path / provenance.FILE, "a", encoding="utf-8") as f:
        f.write('{"event": "end", "ti')
    assert provenance.read(tmp_path) == [{"event": "start", "time": "t"}]
    assert provenance.read(tmp_path / "elsewhere") == []


def test_a_failed_run_records_why(tmp_path):
    from multitx.engine.stopping import Interrupted
    from multitx.engine.trainer import outcome_of

    assert outcome_of(None) == "completed"
    assert outcome_of(Interrupted(143, None)) == "interrupted"
    assert outcome_of(RuntimeError("CUDA out of memory")) == "failed: RuntimeError: CUDA out of memory"
