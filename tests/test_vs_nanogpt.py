"""python -m multitx.benchmarks.vs_nanogpt: what it reads from nanoGPT's output, what it stages for it,
the table it prints, and a clear line for a folder that is not a nanoGPT checkout. (nanoGPT itself is
not here: a user fetches it; these tests use what its train.py prints and reads.)"""

import pickle

import numpy as np
import pytest

from multitx.benchmarks import vs_nanogpt
from multitx.benchmarks.vs_nanogpt import Run, read_nanogpt_log, report, stage_nanogpt
from multitx.cli import run_cli

NANOGPT_OUTPUT = """tokens per iteration will be: 768
step 0: train loss 4.2874, val loss 4.2823
iter 0: loss 4.2613, time 5012.33ms, mfu -100.00%
iter 1: loss 3.9000, time 40.00ms, mfu 0.10%
iter 2: loss 3.7000, time 60.00ms, mfu 0.10%
step 250: train loss 2.3000, val loss 2.3500
iter 250: loss 2.3100, time 900.00ms, mfu 0.10%
iter 251: loss 2.3000, time 50.00ms, mfu 0.10%
step 500: train loss 2.0000, val loss 2.0500
iter 500: loss 2.0100, time 950.00ms, mfu 0.10%
"""


def test_nanogpt_tokens_per_s_leave_out_set_up_and_evaluation_iterations():
    tokens_per_s, final_val, iterations = read_nanogpt_log(NANOGPT_OUTPUT)
    assert iterations == 6
    assert final_val == 2.05
    assert tokens_per_s == pytest.approx(12 * 64 / 0.050)  # iterations 1, 2 and 251: 50 ms on average


def test_output_that_is_not_nanogpts_is_refused():
    with pytest.raises(RuntimeError, match="no iteration or evaluation lines"):
        read_nanogpt_log("Traceback (most recent call last):\n")


def test_the_text_is_staged_as_nanogpts_prepare_writes_it(tmp_path):
    checkout = tmp_path / "nanoGPT"
    (checkout / "config").mkdir(parents=True)
    (checkout / "configurator.py").write_text("# nanoGPT's\n")
    (checkout / "config" / "train_shakespeare_char.py").write_text("out_dir = 'x'\n")
    text = "to be, or not to be: that is the question\n" * 10
    cwd = stage_nanogpt(checkout, text, tmp_path / "work")
    data = cwd / "data" / "shakespeare_char"
    train, val = np.fromfile(data / "train.bin", dtype=np.uint16), np.fromfile(data / "val.bin", dtype=np.uint16)
    assert len(train) == int(len(text) * 0.9) and len(train) + len(val) == len(text)
    meta = pickle.loads((data / "meta.pkl").read_bytes())
    assert meta["vocab_size"] == len(set(text)) and "".join(meta["itos"][i] for i in train[:5]) == text[:5]
    assert (cwd / "configurator.py").is_file() and (cwd / "config" / "train_shakespeare_char.py").is_file()


def test_the_table_holds_each_program_against_nanogpts_best_round():
    runs = [Run("nanoGPT", 0, 100.0, 10_000, 1.886, 2001), Run("multitx", 0, 80.0, 12_500, 1.900, 2000),
            Run("recipe", 0, 45.0, 15_000, 1.680, 400, whole_val=1.690), Run("nanoGPT", 1, 90.0, 11_000, 1.880, 2001)]
    table = report(runs, peak=190e9, vocab=65, steps=2000, extra=[])
    def best_and_ratio(program: str) -> tuple[str, str]:
        cells = next(line.split() for line in table.splitlines() if line.startswith(program + " "))
        first_ratio = next(i for i, cell in enumerate(cells) if i and cell.endswith("x"))
        return cells[first_ratio - 1], cells[first_ratio]

    assert best_and_ratio("nanoGPT") == ("90.0", "1.00x")  # the better of its two rounds
    assert best_and_ratio("multitx") == ("80.0", "1.12x")  # 90 / 80
    assert best_and_ratio("recipe") == ("45.0", "2.00x")
    assert table.splitlines()[4].endswith("1.690"), "the recipe's loss over the whole val split"
    assert table.splitlines()[-1].startswith("recipe: val 1.680 in 0.50 of nanoGPT's wall time")


def test_a_folder_that_is_not_a_nanogpt_checkout_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        run_cli(vs_nanogpt.main, [f"nanogpt={tmp_path}"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: nanogpt={tmp_path} is not a nanoGPT checkout (no train.py, model.py, ")
