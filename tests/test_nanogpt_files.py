"""nanoGPT's data files, both ways: data=bin reads the train.bin / val.bin / meta.pkl that nanoGPT's prepare.py
writes (meta.pkl through an unpickler that builds plain data only), and multitx's own prepared corpora are in
that layout, read here exactly as nanoGPT's train.py reads them."""

import os
import pickle

import numpy as np
import pytest

import multitx
from multitx.data.text.corpus import load_corpus
from tests.conftest import run_here

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread each, no fight for the cores
TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 40


def nanogpt_char_prepare(folder, text: str = TEXT):
    """What nanoGPT's data/shakespeare_char/prepare.py writes, step for step."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = sorted(set(text))
    stoi, itos = {ch: i for i, ch in enumerate(chars)}, dict(enumerate(chars))
    n = len(text)
    train_ids = [stoi[c] for c in text[: int(n * 0.9)]]
    val_ids = [stoi[c] for c in text[int(n * 0.9):]]
    np.array(train_ids, dtype=np.uint16).tofile(folder / "train.bin")
    np.array(val_ids, dtype=np.uint16).tofile(folder / "val.bin")
    with open(folder / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": itos, "stoi": stoi}, f)
    return folder


def train_args(run_dir, *extra):
    return ["task=charlm", "data=bin", f"run_dir={run_dir}", f"data_dir={run_dir.parent / 'datasets'}", "steps=2",
            "eval_every=2", "eval_batches=1", "batch_size=4", "model.trunk.layers=1", "model.trunk.heads=2",
            "model.trunk.dim=16", "model.context=16", "show_tokens=0", "progress=false", "plots=false",
            "device=cpu", *extra]


class RunsCode:
    """A pickle that would run a shell command when loaded."""

    def __reduce__(self):
        return os.system, ("touch PWNED",)


def test_nanogpts_char_files_train_with_their_own_vocabulary(tmp_path):
    folder = nanogpt_char_prepare(tmp_path / "shakespeare_char")
    result = run_here("multitx.train", *train_args(tmp_path / "run", f"data.root={folder}"))
    assert result.returncode == 0, result.stderr[-2000:]
    run = multitx.load(tmp_path / "run")
    assert run.vocab.chars == "".join(sorted(set(TEXT)))
    val = np.fromfile(folder / "val.bin", dtype=np.uint16)
    assert run.vocab.decode(val.tolist()) == TEXT[int(len(TEXT) * 0.9):]


@pytest.mark.parametrize("case, said", [
    ("code", "meta.pkl is refused: it names posix.system"),
    ("no itos", "has no meta.pkl with the characters (itos); give the tokenizer its ids came from"),
    ("id beyond", "val.bin holds token id 70, beyond the vocabulary of"),
    ("odd bytes", "train.bin has an odd number of bytes"),
    ("no val", "has no val.bin"),
])
def test_bad_nanogpt_files_end_in_one_line_and_run_nothing(tmp_path, case, said):
    folder = nanogpt_char_prepare(tmp_path / "data")
    if case == "code":
        (folder / "meta.pkl").write_bytes(pickle.dumps(RunsCode()))
    elif case == "no itos":
        (folder / "meta.pkl").write_bytes(pickle.dumps({"vocab_size": 50304}))
    elif case == "id beyond":
        np.array([1, 2, 70], dtype=np.uint16).tofile(folder / "val.bin")
    elif case == "odd bytes":
        (folder / "train.bin").write_bytes((folder / "train.bin").read_bytes()[:-1])
    else:
        (folder / "val.bin").unlink()
    result = run_here("multitx.train", *train_args(tmp_path / "run", f"data.root={folder}"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and said in lines[0] and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "PWNED").exists(), "nothing in meta.pkl ran"


def test_multitx_prepared_folders_are_what_nanogpt_train_py_reads(tmp_path):
    """nanoGPT's train.py: np.memmap(data_dir/'train.bin', dtype=np.uint16, mode='r'), and meta.pkl's vocab_size
    (sample.py: its stoi and itos) when the file is there."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    for tokenizer in ("char", "bpe"):
        prepared = load_corpus({"name": "textfile", "path": str(corpus), "tokenizer": tokenizer, "vocab_size": 300,
                                "special_tokens": []}, tmp_path / tokenizer)
        (folder,) = (tmp_path / tokenizer).iterdir()
        train = np.memmap(folder / "train.bin", dtype=np.uint16, mode="r")
        val = np.memmap(folder / "val.bin", dtype=np.uint16, mode="r")
        with open(folder / "meta.pkl", "rb") as f:
            meta = pickle.load(f)  # as nanoGPT loads it
        assert meta["vocab_size"] == prepared.vocab.vocab_size
        assert np.array_equal(train, prepared.train) and np.array_equal(val, prepared.val)
        text = prepared.vocab.decode(np.concatenate([train, val]).tolist())
        assert text == TEXT
        if tokenizer == "char":
            assert "".join(meta["itos"][i] for i in train[:40]) == TEXT[:40]
            assert [meta["stoi"][c] for c in TEXT[:40]] == train[:40].tolist()


def test_a_multitx_prepared_folder_trains_again_as_nanogpt_data(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    prepared = load_corpus({"name": "textfile", "path": str(corpus)}, tmp_path / "prep")
    folder = next((tmp_path / "prep").iterdir())
    result = run_here("multitx.train", *train_args(tmp_path / "run", f"data.root={folder}"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert multitx.load(tmp_path / "run").vocab.chars == prepared.vocab.chars
