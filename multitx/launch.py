"""python -m multitx.launch [torchrun options] -m multitx.train KEY=VALUE ...

torchrun, with exits a shell or a scheduler can act on. Same options as torchrun
(`--standalone --nproc_per_node=2`, ...); on top of it:

  - SIGTERM (or SIGINT) to this launcher: torchrun passes it to every process, they
    agree on the step to stop at, save one checkpoint and exit; the launcher then
    exits 143 (130), as a single process does, instead of torchrun's 1 and traceback.
  - A process that dies (killed, out of memory...): the others stop at once with one
    line each (multitx/engine/trainer.py), and the launcher says in one line which
    process ended and how, instead of torchrun's traceback, and exits 1.
"""

import signal
import sys

from torch.distributed import run as torchrun
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError


def how_it_ended(exitcode: int) -> str:
    if exitcode < 0:
        return f"was killed by {signal.Signals(-exitcode).name}"
    return f"exited with status {exitcode}"


def main(argv: list[str]) -> None:
    try:
        torchrun.main(argv)
    except SignalException as stop:  # raised once torchrun has stopped the processes
        print(f"multitx.launch: stopped by {stop.sigval.name}; each process saved and exited", file=sys.stderr)
        sys.exit(128 + int(stop.sigval))
    except ChildFailedError as err:
        codes = {failure.exitcode for failure in err.failures.values()}
        if codes <= {130, 143}:  # the processes were signalled themselves, saved and stopped
            sys.exit(max(codes))
        rank, first = err.get_first_failure()
        print(f"multitx.launch: process {rank} (pid {first.pid}) {how_it_ended(first.exitcode)}; the others were "
              f"stopped; continue with the same command and resume=auto", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
