"""Many nodes, on one machine: two `python -m multitx.launch` started as two nodes of one process each (gloo
over 127.0.0.1, torchrun's c10d rendezvous: --rdzv-backend=c10d --rdzv-endpoint --rdzv-id) train as one process
with the same global batch; a node started alone, with that rendezvous or the static one (--node-rank
--master-addr --master-port), ends in one line naming what to check, and exit 2, once the rendezvous times out.
Two nodes through the static rendezvous train as through c10d (checked by hand; left out to keep this file short:
a run of two nodes takes 15-30 s on 2 cores)."""

import os
import socket
import subprocess
import sys

import pytest

from multitx.engine import checkpoint
from multitx.engine.metrics import read_jsonl
from tests.conftest import REPO, tiny_charlm_args
from tests.test_engine import train_in_process, weights

COMMON = ["steps=6", "eval_every=6", "device=cpu", "show_tokens=0", "optimizer=adamw"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def node(*options: str, train: list[str]) -> subprocess.Popen:
    """One node: python -m multitx.launch OPTIONS --nproc-per-node=1 -m multitx.train TRAIN."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "multitx.launch", "--nproc-per-node=1", *options, "-m",
                             "multitx.train", *train], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(*nodes: subprocess.Popen, timeout: float = 180) -> list[tuple[str, str]]:
    """Each node's (stdout, stderr) once it exits; a node still running after `timeout` seconds fails the test,
    stopped (SIGTERM, passed on to its processes) rather than left to block the rest."""
    try:
        return [process.communicate(timeout=timeout) for process in nodes]
    except subprocess.TimeoutExpired:
        for process in nodes:
            process.terminate()
        for process in nodes:
            try:
                process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
        pytest.fail(f"the nodes did not end within {timeout} s")


RENDEZVOUS = {
    "static": lambda port, rank: ["--nnodes=2", f"--node-rank={rank}", "--master-addr=127.0.0.1",
                                  f"--master-port={port}"],
    "c10d": lambda port, rank: ["--nnodes=2", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
                                "--rdzv-id=test"],
}


def test_two_nodes_reach_the_weights_of_one_process_with_the_same_global_batch(tmp_path, small_corpus):
    port, run_dir = free_port(), tmp_path / "nodes"
    nodes = [node(*RENDEZVOUS["c10d"](port, rank),
                  train=tiny_charlm_args(small_corpus, run_dir, *COMMON, "batch_size=4")) for rank in (0, 1)]
    single = tmp_path / "single"
    train_in_process(*tiny_charlm_args(small_corpus, single, *COMMON, "batch_size=8"))  # while the nodes start
    ended = finish(*nodes)
    for process, (_, err) in zip(nodes, ended, strict=True):
        assert process.returncode == 0, err[-3000:]
    assert "2 processes" in "".join(out for out, _ in ended)
    assert sum(out.count("step 6: ") for out, _ in ended) == 1, "rank 0 alone reports"
    assert len(read_jsonl(run_dir / "metrics.jsonl")) == 1, "rank 0 alone logs"
    assert checkpoint.latest(run_dir).name == "step_0000006"
    a, b = weights(single), weights(run_dir)
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6


def test_a_node_alone_ends_in_one_line_once_the_rendezvous_times_out(tmp_path, small_corpus):
    """One node of two, with each rendezvous (started together: each mostly waits): torchrun raises c10d's
    RendezvousTimeoutError, or the static rendezvous's DistStoreError ('1/2 clients joined')."""
    ports = {"c10d": free_port(), "static": free_port()}
    alone = {name: node(*RENDEZVOUS[name](port, 0), f"--rdzv-conf={'join_' if name == 'c10d' else ''}timeout=2",
                        train=tiny_charlm_args(small_corpus, tmp_path / name, *COMMON))
             for name, port in ports.items()}
    for (name, process), (_, err) in zip(alone.items(), finish(*alone.values(), timeout=120), strict=True):
        assert process.returncode == 2, err[-3000:]
        lines = [line for line in err.splitlines() if line.startswith("multitx.launch: ")]
        assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
        assert f": the 2 nodes did not meet at 127.0.0.1:{ports[name]} (" in lines[0]
        assert "start the same command on every node" in lines[0] and "firewall" in lines[0]
        assert not (tmp_path / name / "steps.jsonl").exists(), "nothing ran"


STATIC_NODE_1 = ["--nnodes=2", "--node-rank=1", "--master-addr=10.0.0.1", "--master-port=29500", "--nproc-per-node=8",
                 "-m", "multitx.train"]


def launched(monkeypatch, capsys, argv: list[str], raised: BaseException) -> tuple[int, str]:
    """multitx.launch's exit code and stderr when torchrun raises `raised`: what the launcher makes of it."""
    from multitx import launch

    def torchrun_main(_argv):
        raise raised
    monkeypatch.setattr(launch.torchrun, "main", torchrun_main)
    with pytest.raises(SystemExit) as stop:
        launch.main(argv)
    return stop.value.code, capsys.readouterr().err


def test_a_failed_process_is_named_with_its_node(monkeypatch, capsys, tmp_path):
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    failure = ProcessFailure(local_rank=1, pid=4242, exitcode=-9, error_file=str(tmp_path / "none.json"))
    code, err = launched(monkeypatch, capsys, STATIC_NODE_1, ChildFailedError("multitx.train", {9: failure}))
    assert code == 1
    assert err == (f"multitx.launch: process 9 (pid 4242, local rank 1) on node 1 ({socket.gethostname()}) was "
                   f"killed by SIGKILL; the others were stopped; continue with the same commands on every node and "
                   f"resume=auto\n")


def test_a_rendezvous_lost_in_the_run_is_not_taken_for_nodes_that_never_met(monkeypatch, capsys):
    """A rendezvous error from torchrun's monitoring, after the processes started (the store's node gone): exit 1,
    continue with resume=auto, not exit 2 and 'check the set-up'."""
    from torch.distributed.elastic.rendezvous import RendezvousConnectionError

    code, err = launched(monkeypatch, capsys, STATIC_NODE_1, RendezvousConnectionError("store unreachable"))
    assert code == 1
    assert err.startswith(f"multitx.launch: node 1 ({socket.gethostname()}) lost the other nodes at 10.0.0.1:29500 "
                          f"(store unreachable): ")
    assert err.endswith("continue with the same commands on every node and resume=auto\n")
