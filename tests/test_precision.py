"""Devices and precisions (multitx/config/hardware.py, runtime.py, step.py), on the CPU.

What this machine lacks (CUDA, MPS) is tested through the pure choices and a faked torch.cuda /
torch.backends.mps; precision=fp16 with its loss scaler runs for real, since torch's CPU autocast
has float16: a few steps of the tiny char LM, the scaler's overflow skips, and an exact resume.
"""

import signal

import pytest
import torch
from omegaconf import OmegaConf

from multitx import train
from multitx.cli import run_cli
from multitx.config.hardware import choose_precision, parse_device, precision_note
from multitx.engine import checkpoint
from multitx.engine.metrics import read_jsonl
from multitx.engine.runtime import Runtime, setup_runtime
from multitx.engine.step import Stepper
from multitx.engine.validation import SHARED
from multitx.errors import UserError
from multitx.tasks.charlm import CharLMTask
from tests.conftest import tiny_charlm_args
from tests.engine_helpers import KilledAtStep
from tests.test_engine import assert_same_training, finish, start_training, train_in_process, trained_beside, weights

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------- choices, as plain values

@pytest.mark.parametrize("asked, device, capability, native, chosen", [
    ("auto", "cpu", None, None, "fp32"),
    ("auto", "mps", None, None, "fp32"),
    ("auto", "cuda", (8, 0), True, "bf16"),  # A100
    ("auto", "cuda", (9, 0), True, "bf16"),  # H100
    ("auto", "cuda", (8, 6), None, "bf16"),  # a torch that cannot say: the capability decides
    ("auto", "cuda", (7, 5), False, "fp32"),  # T4: emulated bf16 is no gain; fp16 only when asked
    ("auto", "cuda", (7, 0), None, "fp32"),  # V100
    ("auto", "cuda", (7, 0), True, "bf16"),  # torch says native (e.g. a ROCm GPU): believed
    ("fp16", "cuda", (7, 0), False, "fp16"),
    ("fp16", "cpu", None, None, "fp16"),
    ("bf16", "cpu", None, None, "bf16"),
    ("fp32", "cuda", (9, 0), True, "fp32"),
    ("bf16", "mps", None, None, "bf16"),
])
def test_choose_precision(asked, device, capability, native, chosen):
    assert choose_precision(asked, device, capability, native) == chosen


def test_precision_note_only_where_auto_left_a_gpu_in_fp32():
    assert "precision=fp16" in precision_note("auto", "fp32", "cuda")
    assert precision_note("auto", "bf16", "cuda") == precision_note("fp32", "fp32", "cuda") == ""
    assert precision_note("auto", "fp32", "cpu") == ""


def test_unknown_precision():
    with pytest.raises(UserError, match="precision must be one of auto, fp32, bf16, fp16, got 'fp8'"):
        choose_precision("fp8", "cpu")


@pytest.mark.parametrize("value, parsed", [
    ("auto", ("auto", None)), ("cpu", ("cpu", None)), ("cuda", ("cuda", None)), ("mps", ("mps", None)),
    ("cuda:0", ("cuda", 0)), ("cuda:12", ("cuda", 12)),
    ("cuda:", None), ("cuda:-1", None), ("cuda:1.5", None), ("gpu", None), ("CUDA", None), ("mps:0", None),
    (3, None), (None, None), (True, None),
])
def test_parse_device(value, parsed):
    assert parse_device(value) == parsed


def test_the_device_rule():
    for good in ("auto", "cuda:3", "mps"):
        SHARED["device"].check("device", good)
    with pytest.raises(UserError, match=r"^device must be one of auto, cpu, cuda, cuda:N, mps, got 'cuda:x'$"):
        SHARED["device"].check("device", "cuda:x")


# ---------------------------------------------------------------------- runtime.py with a faked GPU / MPS

@pytest.fixture
def fake_cuda(monkeypatch):
    """torch.cuda as a machine with GPUs would answer; returns a function that sets count and capability."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32  # setup_runtime sets them

    def machine(count: int = 2, capability=(8, 0), native=True):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "set_device", lambda index: None)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        if native is None:  # a torch without including_emulation
            monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
        else:
            monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native)

    yield machine
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


def test_cuda_n_and_auto_precision_on_a_new_gpu(fake_cuda):
    fake_cuda(count=2, capability=(8, 0), native=True)
    runtime = setup_runtime("cuda:1", "auto")
    assert (runtime.device, runtime.precision, runtime.note) == (torch.device("cuda", 1), "bf16", "")
    assert runtime.describe() == "cuda:1 (bf16)"
    assert setup_runtime("auto", "auto").device == torch.device("cuda", 0)
    assert setup_runtime("cuda", "fp16").autocast_dtype == torch.float16


def test_an_old_gpu_stays_in_fp32_and_says_fp16_would_do(fake_cuda):
    fake_cuda(count=1, capability=(7, 0), native=None)
    runtime = setup_runtime("cuda", "auto")
    assert runtime.precision == "fp32" and "precision=fp16" in runtime.note
    assert setup_runtime("cuda:0", "fp16").precision == "fp16"


@pytest.mark.parametrize("count, message", [
    (1, "device=cuda:1 but this machine shows 1 CUDA GPU (cuda:0); choose one of them, or device=cuda"),
    (2, None),
    (3, None),
])
def test_cuda_n_beyond_the_gpus(fake_cuda, count, message):
    fake_cuda(count=count)
    if message is None:
        assert setup_runtime("cuda:1", "fp32").device.index == 1
        with pytest.raises(UserError, match=f"shows {count} CUDA GPUs \\(cuda:0 to cuda:{count - 1}\\)"):
            setup_runtime(f"cuda:{count}", "fp32")
    else:
        with pytest.raises(UserError, match=f"^{message.replace('(', '.').replace(')', '.')}$"):
            setup_runtime("cuda:1", "fp32")


def test_cuda_n_under_torchrun_is_refused(fake_cuda, monkeypatch):
    fake_cuda(count=2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="device=cuda:1 names one GPU, but under torchrun each process takes"):
        setup_runtime("cuda:1", "auto")


def test_mps_when_present(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    runtime = setup_runtime("mps", "auto")
    assert (runtime.device.type, runtime.precision, runtime.describe()) == ("mps", "fp32", "mps (fp32)")
    assert setup_runtime("mps", "fp16").precision == "fp16"
    assert setup_runtime("auto", "auto").device.type in ("cpu", "cuda"), "auto never picks MPS unasked"
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="device=mps trains in one process"):
        setup_runtime("mps", "auto")


@pytest.mark.parametrize("device, message", [
    ("cuda:1", "error: device=cuda:1 but "),
    ("mps", "error: device=mps but MPS is not available here"),
])
def test_a_device_this_machine_lacks_is_one_line(device, message, tmp_path, capsys):
    if device == "mps" and torch.backends.mps.is_available() or device == "cuda:1" and torch.cuda.device_count() > 1:
        pytest.skip(f"this machine has {device}")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("To be, or not to be.\n" * 40)
    with pytest.raises(SystemExit) as stop:
        run_cli(train.main, tiny_charlm_args(corpus, tmp_path / "run", f"device={device}"))
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith(message) and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------ step.py: the loss scaler

class Boosted:
    """A task of one linear classifier whose loss is multiplied by `boost` (to make fp16 overflow)."""

    def __init__(self, boost: float = 1.0):
        self.boost = boost

    def loss(self, model, batch) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.cross_entropy(model(x).float(), y) * self.boost

    def items_in(self, batch) -> int:
        return len(batch[0])


def stepper(precision: torch.dtype | None, boost: float = 1.0, scale: float | None = None):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    runtime = Runtime(torch.device("cpu"), precision)
    step = Stepper(Boosted(boost), model, model, optimizer, runtime, OmegaConf.create({"grad_accum": 2,
                                                                                      "grad_clip": 1.0}))
    if scale is not None:
        step.load_state_dict({"scale": scale, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                              "_growth_tracker": 0})
    batches = iter([(torch.randn(4, 8), torch.tensor([0, 1, 2, 3]))] * 4)
    before = [p.detach().clone() for p in model.parameters()]

    def changed() -> bool:
        return any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))

    return step, batches, changed


def test_an_fp16_step_updates_through_the_scaler():
    step, batches, changed = stepper(torch.float16)
    result = step(batches, stop_asked=False)
    assert (result.kind, result.scale, result.items, result.stop) == ("ok", 65536.0, 8, False)
    assert changed() and step.state_dict()["_growth_tracker"] == 1


def test_an_fp16_overflow_is_the_scalers_skip():
    step, batches, changed = stepper(torch.float16, boost=1e4)  # finite loss, scaled gradients beyond fp16
    result = step(batches, stop_asked=True)
    assert (result.kind, result.scale, result.stop) == ("overflow", 65536.0, True)
    assert not changed() and step.state_dict()["scale"] == 32768.0
    assert all(p.grad is None for p in step.model.parameters())


def test_an_fp16_overflow_below_scale_1_is_non_finite():
    step, batches, changed = stepper(torch.float16, boost=1e12, scale=0.5)  # overflows fp16 even unscaled
    assert step(batches, stop_asked=False).kind == "nonfinite" and not changed()


@pytest.mark.parametrize("precision", [torch.float16, None, torch.bfloat16])
def test_a_nan_loss_is_non_finite_in_every_precision(precision):
    step, batches, changed = stepper(precision, boost=float("nan"))
    assert step(batches, stop_asked=False).kind == "nonfinite" and not changed()


def test_without_fp16_the_scaler_is_off():
    step, batches, changed = stepper(None, boost=1e4)  # fp32 holds the large gradients
    assert step(batches, stop_asked=False).kind == "ok" and changed() and step.state_dict() == {}


# --------------------------------------------------------------------------- precision=fp16 end to end

class OverflowOnce(KilledAtStep, CharLMTask):
    """The char LM, whose training loss at this process's call `cfg.boost_at` (0: never) is multiplied by
    1e4: a finite loss whose fp16 gradients overflow at the first loss scale; and it may kill itself."""

    def loss(self, model, batch) -> torch.Tensor:
        loss = super().loss(model, batch)
        if model.training:
            self.boost_calls = getattr(self, "boost_calls", 0) + 1
            if self.boost_calls == self.cfg.boost_at:
                return loss * 1e4
        return loss


def fp16_args(corpus, run_dir, *extra):
    return tiny_charlm_args(corpus, run_dir, "precision=fp16", "device=cpu", "steps=12", "eval_every=4",
                            "show_tokens=0", "plots=false", "deterministic=true", "model.trunk.dropout=0.1",
                            "task._target_=tests.test_precision.OverflowOnce", *extra)


def test_fp16_trains_and_an_overflow_is_skipped_without_stopping(small_corpus, tmp_path):
    run_dir = tmp_path / "run"
    train_in_process(*fp16_args(small_corpus, run_dir, "steps=8", "+boost_at=2", "+kill_at=0"))
    state = checkpoint.load_state(checkpoint.latest(run_dir))  # weights_only=True: the scaler is plain numbers
    assert (state["step"], state["overflows"], state["skipped"]) == (8, 1, 0), "nonfinite=stop did not stop"
    assert state["scaler"]["scale"] == 32768.0
    losses = [r["loss"] for r in read_jsonl(run_dir / "steps.jsonl")]
    assert len(losses) == 8 and all(torch.isfinite(torch.tensor(losses)))
    assert all(torch.isfinite(t).all() for t in weights(run_dir).values())


def test_fp16_nan_loss_still_stops(small_corpus, tmp_path):
    args = tiny_charlm_args(small_corpus, tmp_path / "run", "precision=fp16", "+nan_step=3", "plots=false",
                            "task._target_=tests.engine_helpers.NaNAtStep")
    with pytest.raises(UserError, match=r"non-finite loss or gradient norm at step 3 \(loss nan, gradient norm nan\)"):
        train_in_process(*args)


def test_fp16_killed_mid_run_resumes_exactly(small_corpus, tmp_path):
    """The overflow in step 2 halves the loss scale before the checkpoint at step 4; the kill lands in
    step 7. The resumed run must go on with the checkpoint's scale and growth count."""
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    with trained_beside(*fp16_args(small_corpus, reference, "+boost_at=2", "+kill_at=0")):
        process = start_training(*fp16_args(small_corpus, killed, "+boost_at=2", "+kill_at=7"))
        process.communicate(timeout=300)
        assert process.returncode == -signal.SIGKILL
        assert checkpoint.latest(killed).name == "step_0000004"
        finish(start_training(*fp16_args(small_corpus, killed, "+boost_at=0", "+kill_at=0", "resume=auto")))
    assert_same_training(reference, killed)
    ours, theirs = (checkpoint.load_state(checkpoint.latest(run)) for run in (reference, killed))
    assert ours["scaler"] == theirs["scaler"] and ours["scaler"]["scale"] == 32768.0
    assert ours["overflows"] == theirs["overflows"] == 1
