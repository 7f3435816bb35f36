"""Keep the CPU's tensor memory for reuse instead of handing it back to the system every step.

On the CPU a tensor's memory comes from the C library's malloc. glibc serves a large request
(from 128 KB, a threshold it raises only after frees) with a fresh mmap and unmaps it when the
tensor is freed, so every step a training run maps its big activations anew and touches each
page again: a page fault per 4 KB. In a virtual machine those are dear. Measured on the 2-core
Zen 4 of 2026-12-06 (a Firecracker VM): the ViT of `vit_vs_timm` spent 24 ms in one GELU of a
(128, 65, 768) tensor in training that takes 2 ms alone; with requests up to 32 MB served from
the heap it took 2.5-3 ms, and whole training steps ran about 10% faster (timm's as much, in
the same process); the char LM in nanoGPT's configuration 4-7%.

So, on Linux with glibc, multitx raises malloc's mmap threshold to 32 MB (the most glibc
allows on 64-bit systems) for the CPU runs it sets up, so that tensors up to that size are
carved from the heap, and its trim threshold to 512 MB, so that freed heap memory stays for the
next step instead of going back to the system (with the mmap threshold alone, a GELU backward
still took 5-15 ms). A process's resident memory then stays near its peak instead of rising
and falling with each step. Elsewhere (macOS, Windows, musl) nothing changes.
"""

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers, from glibc's malloc.h
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's ceiling for it on 64-bit systems
TRIM_THRESHOLD_BYTES = 512 * 1024 * 1024  # free heap kept at its top before any goes back

_done: bool | None = None


def reuse_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; whether they are in force (False off glibc)."""
    global _done
    if _done is None:
        _done = sys.platform.startswith("linux") and set_thresholds(MMAP_THRESHOLD_BYTES, TRIM_THRESHOLD_BYTES)
    return _done


def set_thresholds(mmap_bytes: int, trim_bytes: int) -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, mmap_bytes) == 1 and mallopt(M_TRIM_THRESHOLD, trim_bytes) == 1
