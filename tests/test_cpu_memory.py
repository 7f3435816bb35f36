"""CPU runs keep freed tensor memory for the next step (multitx/engine/cpu_memory.py)."""

import sys

import pytest

from multitx.engine import cpu_memory
from multitx.engine.runtime import setup_runtime


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(cpu_memory, "_done", None)  # as in a new process


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc is Linux's")
def test_a_cpu_runtime_raises_the_malloc_thresholds_on_linux(fresh, monkeypatch):
    calls = []
    real = cpu_memory.set_thresholds
    monkeypatch.setattr(cpu_memory, "set_thresholds", lambda *sizes: calls.append(sizes) or real(*sizes))
    setup_runtime("cpu", "fp32")
    setup_runtime("cpu", "fp32")
    assert calls == [(32 * 1024 * 1024, 512 * 1024 * 1024)]  # once a process
    assert cpu_memory.reuse_freed_memory() is True  # glibc took both


def test_elsewhere_nothing_is_changed(fresh, monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(cpu_memory, "set_thresholds", lambda *sizes: pytest.fail("mallopt called off Linux"))
    assert cpu_memory.reuse_freed_memory() is False


def test_a_c_library_without_mallopt_is_no_error(fresh, monkeypatch):
    class NoMallopt:
        def __init__(self, name):
            pass

    monkeypatch.setattr(cpu_memory.ctypes, "CDLL", NoMallopt)
    assert cpu_memory.set_thresholds(1, 1) is False
