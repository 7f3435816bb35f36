"""python -m multitx.benchmarks.gpu: the project's GPU figures in one command. No GPU here, so these
hold its smoke run (every part's code path on the CPU), the MFU arithmetic, what a part that fails
or overruns its share leaves in the table, and the refusal without a GPU."""

import json

import pytest
import torch

from multitx import LanguageModel, LanguageModelConfig, TrunkConfig
from multitx.benchmarks import gpu, peaks
from tests.conftest import SHARED_SHAKESPEARE, run_module

PARTS = ["babygpt", "mfu", "vit", "fashion", "caption", "recompute", "sharding"]


def table_rows(markdown: str) -> list[list[str]]:
    """The cells of each row of results.md's table, its header and rule left out."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ")][1:]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines if not line.startswith("|---")]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu")
    done = run_module("multitx.benchmarks.gpu", "--smoke", f"out={tmp / 'out'}", f"data_dir={tmp / 'datasets'}",
                      cwd=tmp, env={"OMP_NUM_THREADS": "1"}, timeout=120)  # --smoke: smoke=true, as a flag
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp / "out" / "results.json").read_text(encoding="utf-8"))
    return done, results, (tmp / "out" / "results.md").read_text(encoding="utf-8")


def test_a_smoke_run_writes_a_json_and_a_table_with_a_row_per_part(smoke):
    done, results, markdown = smoke
    assert [part["part"] for part in results["parts"]] == PARTS
    assert results["smoke"] is True and results["device"] == "CPU (--smoke)"
    assert results["torch"] == torch.__version__
    rows = table_rows(markdown)
    assert [row[0] for row in rows] == PARTS
    for row in rows:  # part, what, goal, result, reached, seconds, device, date, torch
        assert len(row) == 9, row
        assert row[3].startswith("(smoke run, not a measurement)"), row
        assert row[4] == "no", "a smoke run claims no goal"
        assert float(row[5]) >= 0 and row[6:] == ["CPU (--smoke)", results["date"], torch.__version__]
    assert markdown.strip() in done.stdout, "the table is printed too"
    assert done.stdout.startswith("device: CPU (--smoke)")


def test_every_part_of_the_smoke_run_went_through_its_code_path(smoke):
    _, results, _ = smoke
    parts = {part["part"]: part for part in results["parts"]}
    for name, part in parts.items():
        if name == "babygpt" and not SHARED_SHAKESPEARE.exists():
            assert part["result"].startswith("skipped: tinyshakespeare is neither at"), part["result"]
            continue
        assert not part["result"].startswith(("error", "skipped")), (name, part["result"])
    if SHARED_SHAKESPEARE.exists():
        assert all("time_s" in row and "val_loss" in row for row in parts["babygpt"]["details"]["evaluations"])
    assert parts["mfu"]["result"].startswith("peak unknown for CPU (--smoke): no MFU;")
    assert parts["mfu"]["details"]["mfu"] is None and parts["mfu"]["details"]["tokens_per_s"] > 0
    assert set(parts["vit"]["details"]["ratio"]) == {"train", "infer"}
    assert len(parts["vit"]["details"]["rounds"]["multitx ViT"]["train"]) == 2, "medians of alternating rounds"
    assert 0 <= parts["fashion"]["details"]["test"]["test_acc"] <= 1, "the test split is scored at the end"
    assert "val_acc" in parts["fashion"]["details"]["evaluations"][-1]
    assert {"exact_match", "bleu4", "time_s"} <= set(parts["caption"]["details"]["evaluations"][-1])
    recomputed = parts["recompute"]["details"]
    assert parts["recompute"]["result"].startswith("saved for backward (no peak counter on the CPU)")
    assert 0 < recomputed["with"]["peak"] < recomputed["without"]["peak"] and recomputed["with"]["tokens_per_s"] > 0
    sharded = parts["sharding"]["details"]  # 2 gloo processes on the CPU, both strategies in one launch
    assert parts["sharding"]["result"].startswith("2 processes: ddp "), parts["sharding"]["result"]
    assert sorted((r["strategy"], r["rank"]) for r in sharded["rows"]) == [("ddp", 0), ("ddp", 1), ("fsdp", 0),
                                                                          ("fsdp", 1)]
    assert all(sharded[s]["tokens_per_s"] > 0 and sharded[s]["mfu"] is None for s in ("ddp", "fsdp"))
    assert 0.45 < sharded["params_optim_ratio"] < 0.55, "each process holds half the rows of each parameter"


def test_flops_per_token_of_gpt2_small_is_nanogpts_estimate_worked_by_hand():
    vocab, dim, layers, heads, context = 50304, 768, 12, 12, 1024
    # the embedding (tied to the head); a block: Q, K, V and the projection 4 D^2, the MLP 8 D^2, two LayerNorm
    # weights (no biases); the final LayerNorm. The 1024 x 768 position table is left out.
    n_params = vocab * dim + layers * (12 * dim * dim + 2 * dim) + dim
    assert n_params == 123_587_328
    by_hand = 6 * n_params + 12 * layers * heads * (dim // heads) * context
    assert by_hand == 854_770_176
    assert peaks.flops_per_token(n_params, layers, heads, dim // heads, context) == by_hand
    with torch.device("meta"):  # counted, never allocated
        model = LanguageModel(LanguageModelConfig(vocab_size=vocab, context=context, positions="learned",
                                                  trunk=TrunkConfig(dim=dim, layers=layers, heads=heads)))
    assert peaks.model_flops_per_token(model) == by_hand


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H100 80GB HBM3", 989e12),
    ("NVIDIA A100-SXM4-80GB", 312e12),
    ("NVIDIA H200", 989e12),
    ("NVIDIA H100 PCIe", 756e12),
    ("NVIDIA H100 NVL", 835e12),
    ("NVIDIA H200 NVL", 836e12),
    ("NVIDIA A100 80GB PCIe", 312e12),
    ("NVIDIA GeForce RTX 4090", None),
    ("NVIDIA GH200 480GB", None),
    ("CPU (--smoke)", None),
])
def test_the_peak_is_looked_up_by_device_name_and_never_guessed(name, peak):
    assert peaks.dense_bf16_peak(name) == peak


def test_mfu_is_the_flops_done_over_the_peak_and_none_without_a_peak():
    assert peaks.mfu(854_770_176, 500_000, 989e12) == pytest.approx(854_770_176 * 500_000 / 989e12)
    assert peaks.mfu(1e9, 1e5, 200e12) == pytest.approx(0.5)
    assert peaks.mfu(1e9, 1e5, None) is None


def test_a_failing_part_is_one_line_and_a_part_past_its_share_reports_what_it_had(tmp_path, monkeypatch,
                                                                                  one_thread):
    def out_of_memory(suite):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\n(the rest of torch's message)")

    monkeypatch.setitem(gpu.PARTS, "mfu", (out_of_memory, *gpu.PARTS["mfu"][1:]))
    monkeypatch.setitem(gpu.SMOKE, "caption", [*gpu.SMOKE["caption"], "steps=1000000", "eval_every=3"])
    monkeypatch.setattr(gpu, "SMOKE_SHARE", 3)
    gpu.main(["smoke=true", "only=[caption,mfu]", f"out={tmp_path / 'out'}", f"data_dir={tmp_path / 'datasets'}"])
    parts = {p["part"]: p for p in json.loads((tmp_path / "out" / "results.json").read_text())["parts"]}
    assert list(parts) == ["mfu", "caption"], "the parts run in the suite's order"
    assert parts["mfu"]["result"] == "error: RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
    caption = parts["caption"]
    assert "exact match 0.97 not reached (stopped at the end of its 3 s share)" in caption["result"]
    assert caption["details"]["evaluations"], "the evaluations before the stop are reported"
    assert caption["seconds"] < 3 + 2


def test_fashion_without_its_data_is_skipped_in_one_line(tmp_path):
    nowhere = tmp_path / "nowhere"
    suite = gpu.Suite(smoke=False, device=torch.device("cpu"), device_name="cpu", out=tmp_path / "out",
                      data_dir=tmp_path, fashion_root=nowhere)
    row = gpu.run_part("fashion", suite)
    assert row.result == f"skipped: Fashion-MNIST is not in {nowhere} (its four IDX files); give fashion_root=DIR"
    assert row.reached is False and not (tmp_path / "out").exists(), "nothing was trained"


def test_the_sharding_part_with_fewer_than_two_gpus_is_skipped_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    suite = gpu.Suite(smoke=False, device=torch.device("cpu"), device_name="cpu", out=tmp_path / "out",
                      data_dir=tmp_path, fashion_root=tmp_path)
    row = gpu.run_part("sharding", suite)
    assert row.result == "skipped: needs 2 or more GPUs to compare DDP with FSDP across them; this machine shows 1"
    assert row.reached is False and row.seconds < 1, "nothing was launched"


def test_the_shares_are_the_suites_8_minutes_and_each_part_has_one():
    assert list(gpu.SHARES) == list(gpu.PARTS) and sum(gpu.SHARES.values()) == 480


def test_without_cuda_and_without_smoke_it_refuses_in_one_line(tmp_path):
    done = run_module("multitx.benchmarks.gpu", f"out={tmp_path / 'out'}", env={"CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: no CUDA device is visible") and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists(), "nothing is written"
