"""One trainer per run folder: RUN_DIR/train.lock.

The lock is a POSIX record lock (fcntl.lockf) on that file, held for the whole run.
The kernel drops it when the process ends, however it ends, so a killed run never
leaves it stuck; and unlike flock, it is not shared with forked data workers, which
may outlive their parent by a few seconds. The file names the holder (pid, host,
start time) so that a refused trainer can say who has the folder; a clean exit
empties it, so a name still in it when the lock is free is a run that was killed.
"""

import fcntl
import os
import socket
import time
from pathlib import Path

from multitx.errors import UserError

LOCK_FILE = "train.lock"


class RunLock:
    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.fd: int | None = None
        self.made_folder = False
        self.took_over: str | None = None  # the holder a killed run left in the file, if any

    def acquire(self) -> "RunLock":
        self.made_folder = not self.run_dir.exists()
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise UserError(f"cannot use run_dir={self.run_dir} ({err.strerror or err}); choose another folder") \
                from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise UserError(f"{self.run_dir} is being trained by {holder}; wait for it to finish or stop it, "
                            f"or choose another run_dir") from None
        self.fd = fd
        self.took_over = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                  .encode(), 0)
        os.fsync(fd)
        return self

    def release(self, *, remove_empty_folder: bool = False) -> None:
        """Free the lock and empty the file; remove_empty_folder: also remove a run folder this
        lock made, when nothing else was written into it (a run that stopped on bad input)."""
        if self.fd is None:
            return
        remove = remove_empty_folder and self.made_folder and [p.name for p in self.run_dir.iterdir()] == [LOCK_FILE]
        if remove:
            self.path.unlink()  # while still holding the lock, so that no other trainer is using this file
        else:
            os.ftruncate(self.fd, 0)
        os.close(self.fd)  # closing drops the lock
        self.fd = None
        if remove:
            try:
                self.run_dir.rmdir()
            except OSError:  # another trainer has just started in it
                pass
