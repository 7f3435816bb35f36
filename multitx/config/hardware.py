"""What a run asks of the machine, as plain values: which device (`device=`), which precision (`precision=`).

Pure functions, no torch, so that the choices made for hardware this machine lacks (CUDA, MPS)
are tested on any CPU; multitx/engine/runtime.py asks torch what the machine has and calls them.

    device=    auto (CUDA if visible, else the CPU; never MPS unasked) | cpu | cuda | cuda:N | mps
    precision= auto | fp32 | bf16 | fp16 (with a loss scaler: multitx/engine/step.py)

    precision=auto picks    CPU       fp32  (bf16 autocast on a CPU is many times slower)
                            MPS       fp32
                            CUDA with native bf16 (compute capability >= 8.0: A100, RTX 30xx and later)   bf16
                            older CUDA (V100, T4, RTX 20xx)   fp32: auto never picks a precision that needs
                                                              a loss scaler; ask for precision=fp16 there
"""

import re
from dataclasses import dataclass

from multitx.config.rules import Choice
from multitx.errors import UserError

DEVICES = ("auto", "cpu", "cuda", "mps")
DEVICE_HELP = "auto (CUDA if visible, else cpu) | cpu | cuda | cuda:N | mps"  # device= of training and every tool
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
INDEXED = re.compile(r"cuda:(\d+)")


def parse_device(value) -> tuple[str, int | None] | None:
    """("cuda", 1) for "cuda:1", ("cpu", None) for "cpu"...; None for what is no device name."""
    if not isinstance(value, str):
        return None
    if value in DEVICES:
        return value, None
    found = INDEXED.fullmatch(value)
    return ("cuda", int(found.group(1))) if found else None


@dataclass(frozen=True)
class Device(Choice):
    """device=: auto, cpu, cuda, cuda:N or mps (whether this machine has it is runtime.py's check)."""

    options: tuple = DEVICES

    def accepts(self, value) -> bool:
        return parse_device(value) is not None

    def describe(self) -> str:
        return "one of auto, cpu, cuda, cuda:N, mps"


def choose_precision(asked: str, device_type: str, capability: tuple[int, int] | None = None,
                     bf16_native: bool | None = None) -> str:
    """The precision a run computes in: `asked` unless it is auto (see the table in the module doc).
    capability: the CUDA GPU's compute capability; bf16_native: whether it has bf16 in hardware
    (torch.cuda.is_bf16_supported(including_emulation=False)), None where torch cannot say."""
    if asked not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {asked!r}")
    if asked != "auto":
        return asked
    if device_type != "cuda":
        return "fp32"
    native = bf16_native if bf16_native is not None else capability is not None and tuple(capability) >= (8, 0)
    return "bf16" if native else "fp32"


def precision_note(asked: str, chosen: str, device_type: str) -> str:
    """A hint printed at start where precision=auto left a CUDA GPU in fp32."""
    if asked == "auto" and device_type == "cuda" and chosen == "fp32":
        return "this GPU has no native bf16: precision=fp16 (with a loss scaler) would use its tensor cores"
    return ""
