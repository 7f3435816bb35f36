"""One command: `multitx` (and `python -m multitx`) lists every tool and benchmark, runs each as its own
module would run, and every one of them answers --help."""

import subprocess
import sys
from pathlib import Path

import pytest

from multitx import commands
from tests.conftest import run_module


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        commands.main(argv)
        code = 0
    except SystemExit as stop:
        code = stop.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_python_dash_m_multitx_lists_every_tool_and_benchmark():
    result = run_module("multitx")
    assert result.returncode == 0, result.stderr
    for name in [*commands.TOOLS, *(f"bench {b}" for b in commands.benchmarks())]:
        assert f"\n  {name} " in result.stdout
    assert "bench gpu" in result.stdout and "bench budget" not in result.stdout  # a helper, not a benchmark


@pytest.mark.parametrize("tool", sorted(set(commands.TOOLS) - {"launch"}))
def test_every_tool_answers_help_with_its_keys(tool, capsys):
    code, out, err = run([tool, "--help"], capsys)
    assert code == 0, err
    assert "keys" in out and "=" in out


def test_launch_answers_help_with_torchruns_options(capsys):
    code, out, _ = run(["launch", "--help"], capsys)
    assert code == 0 and "--nproc_per_node" in out


@pytest.mark.parametrize("bench", sorted(commands.benchmarks()))
def test_every_benchmark_answers_help_through_the_one_command(bench, capsys):
    code, out, err = run(["bench", bench, "--help"], capsys)
    assert code == 0, err
    assert "keys (key=value):" in out


def test_a_command_runs_as_its_module_does(capsys):
    code, out, _ = run(["train", "--cfg", "job", "task=charlm", "steps=7"], capsys)
    assert code == 0 and "steps: 7\n" in out


@pytest.mark.parametrize("argv, message", [
    (["trian"], "error: unknown command 'trian'; the commands are: train, sample,"),
    (["bench", "nope"], "error: unknown benchmark 'nope'; the benchmarks are: "),
    (["bench"], "error: say which benchmark: multitx bench NAME"),
    (["sample", "colour=red"], "error: unknown argument 'colour=red'; the keys are: "),
])
def test_a_wrong_command_is_one_line_and_exit_2(argv, message, capsys):
    code, _, err = run(argv, capsys)
    assert code == 2 and err.startswith(message) and err.count("\n") == 1


def test_the_console_script_is_installed_beside_python():
    script = Path(sys.executable).parent / "multitx"
    if not script.exists():
        pytest.skip("multitx is not installed in this interpreter's environment (pip install -e .)")
    result = subprocess.run([str(script), "train", "--cfg", "job", "steps=3"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and "steps: 3\n" in result.stdout, result.stderr
