"""How a run stops: on a signal, at a step boundary and after a checkpoint; or at once
when another process of a distributed run is gone."""

import signal
from pathlib import Path

import torch.distributed as dist


class Interrupted(Exception):
    """Training stopped on a signal after saving; `code` is the exit status (130 or 143)."""

    def __init__(self, code: int, saved: Path | None):
        super().__init__(f"stopped by signal, checkpoint {saved}")
        self.code, self.saved = code, saved


def is_collective_failure(err: RuntimeError) -> bool:
    text = str(err)
    return isinstance(err, dist.DistError) or any(word in text for word in ("gloo", "NCCL", "Connection", "Timed out"))


def collective_reason(err: RuntimeError) -> str:
    """The first sentence of a gloo/NCCL error, without its source location: 'Read error ...: Connection reset'."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return first.split("] ", 1)[-1].split(". ", 1)[0][:160]


class StopSignals:
    """SIGTERM or a first Ctrl-C asks for a stop at the next step boundary (after a
    checkpoint); a second Ctrl-C stops at once. The last complete checkpoint stays
    intact either way, since checkpoints are only ever renamed into place."""

    def __init__(self):
        self.signum = None
        self.previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self.previous[sig] = signal.signal(sig, self.handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def handle(self, signum, frame):
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
