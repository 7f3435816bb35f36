"""task=mlm, the BERT-style masked character model: what it masks, what it scores, that it reads
both ways, that it trains and fills in blanks from the command line, and that it resumes and
runs on many processes exactly as the char LM does."""

import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from multitx import fill as fill_command
from multitx import train as train_command
from multitx.cli import load_config, run_cli
from multitx.data.text.corpus import TokenWindows
from multitx.engine import checkpoint, validation
from multitx.engine.metrics import read_jsonl
from multitx.engine.trainer import train
from multitx.evaluate import evaluate
from multitx.fill import fill
from multitx.loading import load
from multitx.tasks.charlm import CharLMTask
from multitx.tasks.mlm import IGNORE, MaskedLMTask, MaskedWindows
from tests.conftest import REPO, run_here, tiny_charlm_args, write_line_corpus

pytestmark = pytest.mark.usefixtures("one_thread")

CHARS = {"vocab.json": {"kind": "char", "chars": "abcdefgh \n"}}
TINY_MODEL = ["model.trunk.layers=2", "model.trunk.heads=2", "model.trunk.dim=32", "model.context=32"]


def tiny_mlm_args(corpus: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["task=mlm", "data=textfile", f"data.path={corpus}", f"run_dir={run_dir}",
            f"data_dir={run_dir.parent / 'datasets'}", "steps=12", "eval_every=6", "eval_batches=2", "batch_size=8",
            *TINY_MODEL, "show_fills=1", "progress=false", "warmup_steps=2", "plots=false", *extra]


def outcome(main, argv: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of one in-process command; 0 when it finished."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stderr(err), redirect_stdout(out):
        try:
            run_cli(main, argv)
        except SystemExit as stop:
            return stop.code, out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(checkpoint.latest(run_dir) / "model.safetensors")


def random_tokens(n: int, characters: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, characters, n).astype(np.uint16)


# ---------------------------------------------------------------------------------------------- masking


@pytest.mark.parametrize("rate", [0.15, 0.3])
def test_the_mask_rate_of_positions_is_chosen_and_of_those_80_percent_masked_10_random_10_kept(rate):
    characters = 40
    tokens = random_tokens(20_000, characters)
    batches = MaskedWindows(tokens, 16, 64, seed=3, rate=rate, mask_id=characters)
    plain = TokenWindows(tokens, 16, 64, seed=3)  # the same windows, unmasked
    chosen = shown = changed = kept = positions = 0
    for _ in range(40):
        (inputs, targets, masked), (ids, _) = next(batches), next(plain)
        picked = targets != IGNORE
        positions += picked.numel()
        chosen += int(picked.sum())
        shown += int((inputs == characters).sum())
        changed += int((picked & (inputs != characters) & (inputs != ids)).sum())
        kept += int((picked & (inputs == ids)).sum())
        assert torch.equal(masked, inputs == characters)
        assert not (~picked & (inputs != ids)).any(), "an unchosen position's input was changed"
    assert abs(chosen / positions - rate) < 0.01
    assert abs(shown / chosen - 0.8) < 0.03
    assert abs(changed / chosen - 0.1 * (1 - 1 / characters)) < 0.02  # a random character may be the same one
    assert abs(kept / chosen - (0.1 + 0.1 / characters)) < 0.02


def test_targets_are_the_characters_exactly_where_chosen_and_the_loss_is_on_those_alone():
    torch.manual_seed(0)
    tokens = random_tokens(5_000, 10)
    inputs, targets, _ = next(MaskedWindows(tokens, 4, 32, seed=1, rate=0.15, mask_id=10))
    ids, _ = next(TokenWindows(tokens, 4, 32, seed=1))
    picked = targets != IGNORE
    assert picked.sum(dim=1).tolist() == [round(0.15 * 32)] * 4  # BERT's count of each window
    assert torch.equal(targets[picked], ids[picked])
    assert (targets[~picked] == IGNORE).all()

    settings = load_config(["task=mlm", *TINY_MODEL]).model
    model, _ = MaskedLMTask.build(settings, CHARS)
    task = MaskedLMTask.__new__(MaskedLMTask)  # loss() needs no data
    loss = task.loss(model, (inputs, targets, None))
    logits = model(inputs)[0]
    assert torch.allclose(loss, F.cross_entropy(logits[picked], ids[picked]))  # the chosen positions alone
    assert not torch.allclose(loss, F.cross_entropy(logits.flatten(0, 1), ids.flatten()))
    unchosen = tuple((~picked).nonzero()[0])
    scored = targets.clone()
    scored[unchosen] = ids[unchosen]  # were an unchosen position scored, the loss would change
    assert not torch.allclose(task.loss(model, (inputs, scored, None)), loss)


def test_a_later_character_changes_the_guess_at_an_earlier_position_which_the_causal_char_lm_cannot():
    vocab = CHARS["vocab.json"]["chars"]
    ids = torch.randint(len(vocab), (1, 16), generator=torch.Generator().manual_seed(0))
    later = ids.clone()
    later[0, 12] = (later[0, 12] + 1) % len(vocab)

    model, extras = MaskedLMTask.build(load_config(["task=mlm", *TINY_MODEL]).model, CHARS)
    assert model.config.vocab_size == len(vocab) + 1 and extras["mask_id"] == len(vocab)  # + the mask token
    assert not model.config.causal
    change = (model(later)[0][0, 3] - model(ids)[0][0, 3]).abs().max().item()
    assert change > 1e-4

    causal, _ = CharLMTask.build(load_config(["task=charlm", *TINY_MODEL]).model, CHARS)
    assert torch.allclose(causal(later)[0][0, :12], causal(ids)[0][0, :12], atol=1e-6)


def test_every_key_of_task_mlm_has_a_rule(tmp_path):
    for data in ([], ["data=textfile", f"data.path={write_line_corpus(tmp_path / 'c.txt')}"], ["data=shakespeare"]):
        cfg = load_config(["task=mlm", *data])
        rules = validation.rules_for(cfg, MaskedLMTask.rules)
        assert [key for key, _ in validation.leaves(cfg) if key not in rules] == []
        assert cfg.model.causal is False and cfg.mask_rate == 0.15


# ---------------------------------------------------------------------------------------------- a trained run


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A tiny trained mlm run and a tiny charlm run (the wrong task for the fill command)."""
    tmp = tmp_path_factory.mktemp("mlm")
    corpus = tmp / "corpus.txt"
    corpus.write_text("\n".join(f"{name}: {verb} the {thing}!" for name in ("ROMEO", "JULIET")
                                for verb in ("speak", "hold") for thing in ("sword", "rose")) * 30 + "\n")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    code, _, err = outcome(train_command.main, tiny_mlm_args(corpus, tmp / "mlm"))
    assert code == 0, err
    code, _, err = outcome(train_command.main, tiny_charlm_args(corpus, tmp / "charlm", "steps=1", "eval_every=1",
                                                                "show_tokens=0", "plots=false"))
    assert code == 0, err
    torch.set_num_threads(threads)
    return {"mlm": tmp / "mlm", "charlm": tmp / "charlm", "tmp": tmp}


def test_training_writes_val_loss_and_masked_accuracy_to_metrics_jsonl(runs):
    rows = read_jsonl(runs["mlm"] / "metrics.jsonl")
    assert [r["step"] for r in rows] == [6, 12]
    for row in rows:
        assert np.isfinite(row["val_loss"]) and 0 <= row["masked_acc"] <= 1
    assert rows[-1]["val_loss"] < np.log(len(load(runs["mlm"]).vocab.chars)) + 0.5


def test_the_fill_command_replaces_each_blank_and_leaves_every_other_character(runs):
    prompt = "ROMEO: sp_ak the sw_rd!"
    result = run_here("multitx.fill", f"run_dir={runs['mlm']}", f"prompt={prompt}", "device=cpu")
    assert result.returncode == 0, result.stderr
    filled = result.stdout.rstrip("\n")
    assert len(filled) == len(prompt) and "_" not in filled
    assert [a for a, b in zip(filled, prompt, strict=True) if b != "_"] == [b for b in prompt if b != "_"]


@pytest.mark.parametrize("order", ["confident", "once"])
def test_fill_takes_another_mask_character_and_prompts_longer_than_the_context(runs, order):
    run = load(runs["mlm"])
    prompt = "JULIET: hold the ros#!\nROMEO: speak the sword!\nJULIET: h#ld the rose!\nROMEO: sp#ak"  # > context 32
    filled = fill(run, prompt, mask_char="#", order=order)
    assert len(filled) == len(prompt) and "#" not in filled
    assert all(a == b for a, b in zip(filled, prompt, strict=True) if b != "#")
    assert fill(run.model, "ROMEO_", run.vocab) == fill(run, "ROMEO_")


@pytest.mark.parametrize("case", ["not a run folder", "a charlm run", "no blank", "no prompt", "unseen character",
                                  "two-character mask", "unknown order"])
def test_bad_input_to_the_fill_command_is_one_line_and_exit_2(runs, case):
    given = {"not a run folder": [f"run_dir={runs['tmp']}", "prompt=a_"],
             "a charlm run": [f"run_dir={runs['charlm']}", "prompt=ROMEO_"],
             "no blank": [f"run_dir={runs['mlm']}", "prompt=ROMEO"],
             "no prompt": [f"run_dir={runs['mlm']}"],
             "unseen character": [f"run_dir={runs['mlm']}", "prompt=ROMEO\N{SNOWMAN}_"],
             "two-character mask": [f"run_dir={runs['mlm']}", "prompt=ROMEO_", "mask_char=__"],
             "unknown order": [f"run_dir={runs['mlm']}", "prompt=ROMEO_", "order=random"]}[case]
    code, out, err = outcome(fill_command.main, [*given, "device=cpu"])
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    if case == "a charlm run":
        assert "charlm run" in err and "task=mlm" in err


def test_multitx_evaluate_reports_the_masked_figures_of_the_whole_val_split(runs):
    report = evaluate(runs["mlm"], "val")
    assert np.isfinite(report["loss"]) and 0 <= report["masked_acc"] <= 1 and report["masked_characters"] > 0
    assert Path(report["written_to"]).is_file()


# ---------------------------------------------------------------------------------------------- exact resume, DDP


def test_half_a_run_then_resume_auto_gives_exactly_the_weights_of_the_whole_run(tmp_path):
    """The masks go on from the data position: a constant lr (min_lr = lr, no warm-up) lets the first
    half stop at step 4 of 8 with the same schedule, and resume=auto finish it."""
    write_line_corpus(tmp_path / "corpus.txt")
    common = ["eval_every=4", "lr=3e-3", "min_lr=3e-3", "warmup_steps=0", "deterministic=true", "device=cpu",
              "model.trunk.dropout=0.1", "show_fills=0"]
    train(load_config(tiny_mlm_args(tmp_path / "corpus.txt", tmp_path / "whole", *common, "steps=8")))
    halves = tmp_path / "halves"
    train(load_config(tiny_mlm_args(tmp_path / "corpus.txt", halves, *common, "steps=4")))
    train(load_config(tiny_mlm_args(tmp_path / "corpus.txt", halves, *common, "steps=8", "resume=auto")))
    a, b = weights(tmp_path / "whole"), weights(halves)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    whole, halved = read_jsonl(tmp_path / "whole" / "steps.jsonl"), read_jsonl(halves / "steps.jsonl")
    assert [r["step"] for r in halved] == list(range(1, 9))
    assert [r["loss"] for r in whole] == [r["loss"] for r in halved]


def test_two_gloo_processes_reach_the_weights_of_one_process_with_the_same_global_batch(tmp_path):
    write_line_corpus(tmp_path / "corpus.txt")
    common = ["steps=4", "eval_every=4", "eval_batches=1", "device=cpu", "show_fills=0", "optimizer=adamw"]
    single = tmp_path / "single"
    train(load_config(tiny_mlm_args(tmp_path / "corpus.txt", single, *common, "batch_size=8")))
    ddp = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "multitx.train", *tiny_mlm_args(tmp_path / "corpus.txt", ddp, *common,
                                                                   "batch_size=4")],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = weights(single), weights(ddp)
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    assert len(read_jsonl(ddp / "metrics.jsonl")) == 1, "only rank 0 logs"
