"""Subword text: byte-level BPE as a setting of the text tasks (data.tokenizer=bpe), the general language-model
task (task=lm) that takes any tokenizer, and the tools speaking its tokens."""

import json
import math

import pytest
import torch

import multitx
from multitx.data.text.bpe import BytePairTokenizer
from multitx.data.text.corpus import load_corpus
from multitx.errors import UserError
from tests.conftest import REPO, run_here, torch_threads
from tests.test_engine import (
    assert_same_training,
    killed_then_resumed,
    train_in_two_processes,
    trained_beside,
    weights,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread each, no fight for the cores
NON_ASCII = "naïve café — Grüße, 日本語のテキスト, emoji 🙂🚀, tabs\tand\nnew lines; Ελληνικά"


def lm_args(corpus, run_dir, *extra: str) -> list[str]:
    return ["task=lm", "data=textfile", f"data.path={corpus}", "data.vocab_size=300", f"run_dir={run_dir}",
            f"data_dir={run_dir.parent / 'datasets'}", "steps=12", "eval_every=6", "eval_batches=2", "batch_size=8",
            "model.trunk.layers=2", "model.trunk.heads=2", "model.trunk.dim=32", "model.context=16",
            "show_tokens=8", "progress=false", "warmup_steps=2", "plots=false", "device=cpu", *extra]


def write_corpus(path):
    lines = [f"{name}: {verb} the {thing}, good {name.lower()}!" for name in ("ROMEO", "JULIET", "MERCUTIO")
             for verb in ("speak", "hold", "take") for thing in ("sword", "rose", "light", "night")]
    path.write_text("\n".join(lines * 20) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    corpus = write_corpus(root / "corpus.txt")
    with torch_threads(1):
        result = run_here("multitx.train", *lm_args(corpus, root / "run"))
    assert result.returncode == 0, result.stderr[-2000:]
    return root / "run"


def test_bpe_round_trips_any_text_and_keeps_special_tokens_whole():
    tokenizer = BytePairTokenizer.train(write_text_sample(), {"vocab_size": 400, "special_tokens": ["<|endoftext|>"]})
    assert 256 < tokenizer.vocab_size <= 400, "the bytes, then merges until the size or the pairs run out"
    for text in (NON_ASCII, "ROMEO: speak the sword", "", " leading and trailing spaces  "):
        assert tokenizer.decode(tokenizer.encode(text)) == text
    words = tokenizer.encode("ROMEO: speak the sword")
    assert len(words) < len("ROMEO: speak the sword"), "merges make tokens of several characters"
    assert len(tokenizer.encode("<|endoftext|>")) == 1
    again = BytePairTokenizer.from_state(json.loads(json.dumps(tokenizer.state())))
    assert again.encode(NON_ASCII) == tokenizer.encode(NON_ASCII)


def write_text_sample() -> str:
    return ("ROMEO: speak the sword, good romeo!\nJULIET: hold the rose, good juliet!\n" * 50) + NON_ASCII


def test_bpe_learns_its_merges_from_the_training_split_only(tmp_path):
    text = "the cat sat on the mat\n" * 1000 + "zqzqzqzq\n" * 100
    (tmp_path / "c.txt").write_text(text, encoding="utf-8")  # zqzq... only in the last 4%: inside the val split
    corpus = load_corpus({"name": "textfile", "path": str(tmp_path / "c.txt"), "tokenizer": "bpe",
                          "vocab_size": 300, "special_tokens": []}, tmp_path / "data")
    merged = set(corpus.vocab.tokenizer.get_vocab())
    assert "Ġcat" in merged or "cat" in merged
    assert not any("zq" in token for token in merged)
    assert corpus.vocab.decode(corpus.val.tolist()).endswith("zqzqzqzq\n"), "val is still encoded, byte by byte"


def test_a_vocabulary_too_small_for_byte_level_bpe_is_one_line():
    with pytest.raises(UserError, match=r"data.vocab_size=100 is too small for byte-level BPE: the 256 bytes"):
        BytePairTokenizer.train("some text", {"vocab_size": 100, "special_tokens": []})


@pytest.mark.parametrize(("override", "said"), [
    ("data.tokenizer_file={bad}", "is not a Hugging Face tokenizer.json"),
    ("data.vocab_size=10", "data.vocab_size=10 is too small for byte-level BPE"),
])
def test_bad_tokenizer_settings_end_in_one_line_and_exit_2(tmp_path, override, said):
    corpus = write_corpus(tmp_path / "corpus.txt")
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"version": "1.0", "model": {"type": "Nonsense"}}', encoding="utf-8")
    result = run_here("multitx.train", *lm_args(corpus, tmp_path / "run"), override.format(bad=bad))
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and said in lines[0] and "Traceback" not in result.stderr
    assert not list((tmp_path / "datasets").glob("*/train.bin")), "nothing half-prepared is left"


def test_a_users_tokenizer_json_is_used_as_it_is(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    trained = BytePairTokenizer.train(corpus.read_text(), {"vocab_size": 280, "special_tokens": []})
    trained.tokenizer.save(str(tmp_path / "tokenizer.json"))
    result = run_here("multitx.train", *lm_args(corpus, tmp_path / "run", "steps=2", "eval_every=2",
                                                f"data.tokenizer_file={tmp_path / 'tokenizer.json'}"))
    assert result.returncode == 0, result.stderr[-2000:]
    saved = json.loads((tmp_path / "run" / "vocab.json").read_text())
    assert saved["kind"] == "bpe" and saved["tokenizer"] == trained.state()["tokenizer"]
    assert multitx.load(tmp_path / "run").model.config.vocab_size == 280


def test_task_lm_trains_on_bpe_and_saves_its_tokenizer_with_every_checkpoint(lm_run):
    vocab = json.loads((lm_run / "vocab.json").read_text())
    assert vocab["kind"] == "bpe" and vocab["tokenizer"]["model"]["type"] == "BPE"
    best = multitx.load(lm_run)
    assert json.loads((best.checkpoint / "vocab.json").read_text()) == vocab
    assert "vocab.json" in json.loads((best.checkpoint / "manifest.json").read_text())["sha256"]
    assert best.model.config.vocab_size == 300 and best.vocab.vocab_size == 300


def test_sample_writes_subword_text_after_the_prompt(lm_run):
    result = run_here("multitx.sample", f"run_dir={lm_run}", "prompt=ROMEO: ", "max_new_tokens=10", "device=cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("ROMEO: ") and len(result.stdout) > len("ROMEO: ") + 10, "tokens of characters"


def test_inspect_labels_the_attention_maps_with_subword_tokens(lm_run, tmp_path):
    from multitx.inspect.runs import inspect_run

    inspection = inspect_run(lm_run, prompt="JULIET: hold the rose", new_tokens=0)
    assert any(len(label) > 1 for label in inspection.tokens), "a label is a subword, not one character"
    assert "".join(inspection.tokens).replace("␣", " ") == "JULIET: hold the rose"
    result = run_here("multitx.inspect", f"run_dir={lm_run}", "prompt=ROMEO: speak", f"out={tmp_path / 'i'}",
                      "device=cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "i" / "index.html").is_file() and list((tmp_path / "i").glob("attn_L0_H*.png"))


def test_evaluate_reports_bits_per_character_beside_the_loss_per_token(lm_run):
    from multitx.evaluate import evaluate

    report = evaluate(lm_run, "val")
    assert report["characters"] > report["tokens"], "a subword token spells several characters"
    assert report["bits_per_char"] == pytest.approx(report["loss"] * report["tokens"] / report["characters"]
                                                    / math.log(2), rel=1e-9)


def test_charlm_reads_characters_only():
    result = run_here("multitx.train", "task=charlm", "data.tokenizer=bpe", "steps=1", cwd=REPO)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: task=charlm reads characters; for data.tokenizer=bpe use task=lm (the same model on any "
        "tokenizer's tokens)"]


def test_the_prepared_tokens_are_reused_and_another_vocabulary_size_is_prepared_apart(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    data = {"name": "textfile", "path": str(corpus), "tokenizer": "bpe", "vocab_size": 300, "special_tokens": []}
    first = load_corpus(data, tmp_path / "data")
    folder = next((tmp_path / "data").iterdir())
    stamp = (folder / "train.bin").stat().st_mtime_ns
    again = load_corpus(data, tmp_path / "data")
    assert (folder / "train.bin").stat().st_mtime_ns == stamp and again.vocab.state() == first.vocab.state()
    other = load_corpus({**data, "vocab_size": 320}, tmp_path / "data")
    assert other.vocab.vocab_size == 320 and len(list((tmp_path / "data").iterdir())) == 2


def test_lm_killed_then_resumed_gives_exactly_the_uninterrupted_run(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")

    def argv(run_dir):
        return lm_args(corpus, run_dir, "steps=16", "eval_every=5", "deterministic=true", "show_tokens=0",
                       "model.trunk.dropout=0.1", "task._target_=tests.engine_helpers.KilledLM")

    with trained_beside(*argv(tmp_path / "reference"), "+kill_at=0"):
        killed_then_resumed(argv(tmp_path / "killed"), kill_at=8)
    assert_same_training(tmp_path / "reference", tmp_path / "killed")


def test_two_gloo_processes_reach_the_weights_of_one_process_on_subword_tokens(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    common = ["steps=6", "eval_every=6", "show_tokens=0", "optimizer=adamw"]
    single = tmp_path / "single"
    result = run_here("multitx.train", *lm_args(corpus, single, *common, "batch_size=8"))
    assert result.returncode == 0, result.stderr[-2000:]
    ddp = tmp_path / "ddp"
    train_in_two_processes(*lm_args(corpus, ddp, *common, "batch_size=4"))
    a, b = weights(single), weights(ddp)
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6


def test_export_keeps_the_tokenizer_beside_the_model(lm_run, tmp_path):
    from tokenizers import Tokenizer

    result = run_here("multitx.export", f"run_dir={lm_run}", "format=pt2", f"out={tmp_path / 'lm.pt2'}")
    assert result.returncode == 0, result.stderr[-2000:]
    about = json.loads((tmp_path / "lm.pt2.json").read_text(encoding="utf-8"))
    tokenizer = Tokenizer.from_str(json.dumps(about["tokenizer"]))  # what a user without multitx does
    ids = torch.tensor([tokenizer.encode("ROMEO: speak").ids])
    program = torch.export.load(tmp_path / "lm.pt2").module()
    assert program(ids).shape == (1, ids.shape[1], about["vocab_size"])


def test_a_decoding_request_beyond_the_machines_memory_is_refused_before_anything_is_allocated(lm_run):
    result = run_here("multitx.sample", f"run_dir={lm_run}", "max_new_tokens=1000000000000", "device=cpu")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: max_new_tokens=1000000000000 needs about 7450.6 GB for "
                                                    "its tensors alone, more than half of the"), result.stderr


def test_a_prompt_a_users_tokenizer_cannot_encode_is_one_line():
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = Tokenizer(models.WordLevel({"hello": 0, "world": 1, "[UNK]": 2}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = BytePairTokenizer.from_json(words.to_str(), "tokenizer.json")
    assert tokenizer.encode("hello world") == [0, 1]
    with pytest.raises(UserError, match=r"cannot encode \('there' would become \[UNK\]\); use words from its "
                                        r"vocabulary of 3"):
        tokenizer.encode("hello there")


def test_the_masked_model_masks_subword_tokens_and_fill_says_it_fills_characters(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    args = ["task=mlm" if a == "task=lm" else a for a in lm_args(corpus, tmp_path / "run", "steps=2", "eval_every=2")]
    args = [a for a in args if not a.startswith("show_tokens")] + ["data.tokenizer=bpe", "show_fills=0"]
    result = run_here("multitx.train", *args)
    assert result.returncode == 0, result.stderr[-2000:]
    run = multitx.load(tmp_path / "run")
    assert run.vocab.kind == "bpe" and run.model.config.vocab_size == run.vocab.vocab_size + 1  # + the mask token
    refused = run_here("multitx.fill", f"run_dir={tmp_path / 'run'}", "prompt=ROMEO: sp_ak", "device=cpu")
    assert refused.returncode == 2
    assert "multitx.fill fills blanks of one character each, and this model reads bpe tokens" in refused.stderr
