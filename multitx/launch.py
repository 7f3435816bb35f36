"""python -m multitx.launch [torchrun options] -m multitx.train KEY=VALUE ...

torchrun, with exits a shell or a scheduler can act on. Same options as torchrun
(`--standalone --nproc_per_node=2`; on many nodes `--nnodes=2 --node-rank=0
--master-addr=HOST --master-port=PORT`, or `--rdzv-backend=c10d --rdzv-endpoint=HOST:PORT
--rdzv-id=JOB`, passed through as they are); on top of it:

  - SIGTERM (or SIGINT) to this launcher: torchrun passes it to every process, they
    agree on the step to stop at, save one checkpoint and exit; the launcher then
    exits 143 (130), as a single process does, instead of torchrun's 1 and traceback.
  - A process that dies (killed, out of memory...): the others stop at once with one
    line each (multitx/engine/trainer.py), and the launcher says in one line which
    process ended and how (its global rank; on many nodes also its local rank, the
    node's rank where --node-rank gives it, and the host), instead of torchrun's
    traceback, and exits 1.
  - Nodes that never all meet (one not started, a wrong address or port, a firewall):
    instead of torchrun's traceback once the rendezvous times out or cannot connect, one
    line naming the node, the endpoint and what to check, and exit 2: nothing ran, and the
    same commands fail the same way until the set-up is fixed (as a wrong config, also 2).
    A rendezvous error after the processes started (a node gone mid-run): one line, exit 1,
    as for a process that died.
"""

import signal
import socket
import sys
import traceback
from argparse import Namespace

from torch.distributed import DistNetworkError, DistStoreError
from torch.distributed import run as torchrun
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.elastic.rendezvous import RendezvousError

# Raised by the rendezvous: c10d's RendezvousTimeoutError (a node did not come within join_timeout) or
# RendezvousConnectionError (the store at the endpoint cannot be reached); the static rendezvous's
# DistStoreError (node 0 timed out waiting for the others) or DistNetworkError (node 0 cannot be reached).
NODES_APART = (RendezvousError, DistStoreError, DistNetworkError)


def how_it_ended(exitcode: int) -> str:
    if exitcode < 0:
        return f"was killed by {signal.Signals(-exitcode).name}"
    return f"exited with status {exitcode}"


def options(argv: list[str]) -> Namespace | None:
    """torchrun's options as it read them (its PET_* environment variables included), read again once it has
    (so a wrong option is reported once, by torchrun); None if unreadable."""
    try:
        return torchrun.get_args_parser().parse_args(argv)
    except (SystemExit, Exception):
        return None


def many_nodes(args: Namespace | None) -> bool:
    return args is not None and not args.standalone and str(args.nnodes) != "1"


def endpoint(args: Namespace) -> str:
    """Where the nodes meet: --rdzv-endpoint, or --master-addr:--master-port for the static rendezvous."""
    if args.rdzv_endpoint:
        return args.rdzv_endpoint
    return f"{args.master_addr}:{args.master_port or 29500}"


def this_node(args: Namespace) -> str:
    """'node 1 (gpu-07)', or 'node gpu-07' for c10d, whose rendezvous, not --node-rank, numbers the nodes."""
    if args.rdzv_backend == "static":
        return f"node {args.node_rank} ({socket.gethostname()})"
    return f"node {socket.gethostname()}"


def reason(err: BaseException) -> str:
    """The first line of the error, or of what it was raised from (c10d wraps the store's error)."""
    while err is not None:
        text = str(err).strip().splitlines()
        if text and not text[0].startswith("The connection to the C10d store has failed"):
            return text[0].rstrip(".")
        err = err.__cause__
    return "the rendezvous timed out"


def in_rendezvous(err: BaseException) -> bool:
    """Raised while the nodes were meeting, before any process started (not by a rendezvous lost mid-run)."""
    return any(frame.f_code.co_name == "_rendezvous" for frame, _ in traceback.walk_tb(err.__traceback__))


def main(argv: list[str]) -> None:
    try:
        torchrun.main(argv)
    except SignalException as stop:  # raised once torchrun has stopped the processes
        args = options(argv)
        where = f"{this_node(args)} " if many_nodes(args) else ""
        print(f"multitx.launch: {where}stopped by {stop.sigval.name}; each process saved and exited", file=sys.stderr)
        sys.exit(128 + int(stop.sigval))
    except ChildFailedError as err:
        codes = {failure.exitcode for failure in err.failures.values()}
        if codes <= {130, 143}:  # the processes were signalled themselves, saved and stopped
            sys.exit(max(codes))
        rank, first = err.get_first_failure()
        args = options(argv)
        many = many_nodes(args)
        where = f", local rank {first.local_rank}) on {this_node(args)}" if many else ")"
        again = "the same commands on every node" if many else "the same command"
        print(f"multitx.launch: process {rank} (pid {first.pid}{where} {how_it_ended(first.exitcode)}; the others "
              f"were stopped; continue with {again} and resume=auto", file=sys.stderr)
        sys.exit(1)
    except NODES_APART as err:
        args = options(argv)
        if args is None or args.standalone:
            raise
        at = endpoint(args)
        if not in_rendezvous(err):
            print(f"multitx.launch: {this_node(args)} lost the other nodes at {at} ({reason(err)}): a node of this "
                  f"run died or its network failed; continue with the same commands on every node and resume=auto",
                  file=sys.stderr)
            sys.exit(1)
        if not many_nodes(args):
            print(f"multitx.launch: the rendezvous at {at} failed ({reason(err)}): check that {at} is this "
                  f"machine's address and a free port, or give --standalone instead", file=sys.stderr)
            sys.exit(2)
        print(f"multitx.launch: {this_node(args)}: the {args.nnodes} nodes did not meet at {at} ({reason(err)}): "
              f"start the same command on every node (the same --nnodes and endpoint, --rdzv-id for c10d, each its "
              f"own --node-rank otherwise); check that {at} is the first node's address and a free port, "
              f"reachable from every node (firewall, network interface), and that all start within the timeout "
              f"(--rdzv-conf=join_timeout=SECONDS for c10d, timeout=SECONDS otherwise; 600 by default)",
              file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
