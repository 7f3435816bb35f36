"""Corpora larger than memory: data=textfile takes a file, a folder or a glob of .txt, .txt.gz, .jsonl and
.jsonl.gz files, prepared as a stream (multitx/data/text/prepare.py): memory that does not grow with the corpus,
a kill that leaves nothing taken for complete, and a second run that starts at once."""

import gzip
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from multitx.data.text import prepare
from multitx.data.text.corpus import load_corpus
from multitx.errors import UserError
from tests.conftest import REPO

LINE = "To be, or not to be, that is the question: whether 'tis nobler in the mind — naïve café\n"


def write_mixed_folder(folder):
    """Four kinds of file (and one that is not text); returns the text they hold, in the order they are read."""
    folder.mkdir()
    (folder / "a.txt").write_text(LINE * 30, encoding="utf-8")
    with gzip.open(folder / "b.txt.gz", "wt", encoding="utf-8") as f:
        f.write(LINE.upper() * 30)
    docs = [{"text": f"document {i}: {LINE.strip()}"} for i in range(20)]
    (folder / "c.jsonl").write_text("\n".join(json.dumps(d, ensure_ascii=False) for d in docs) + "\n")
    with gzip.open(folder / "d.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps({"text": "the last document"}) + "\n")
    (folder / "notes.md").write_text("not read")
    return (LINE * 30 + LINE.upper() * 30 + "".join(d["text"] + "\n\n" for d in docs)
            + "the last document\n\n")


def settings(path, **more) -> dict:
    return {"name": "textfile", "path": str(path), "tokenizer": "char", **more}


def test_a_folder_of_text_gzip_and_jsonl_files_is_one_corpus_in_file_order(tmp_path):
    expected = write_mixed_folder(tmp_path / "corpus")
    corpus = load_corpus(settings(tmp_path / "corpus"), tmp_path / "data")
    assert corpus.vocab.decode(np.concatenate([corpus.train, corpus.val]).tolist()) == expected
    assert 0.8 < len(corpus.train) / (len(corpus.train) + len(corpus.val)) < 0.95, "about the last 10% validates"


def test_a_glob_picks_files_and_val_path_gives_validation_its_own(tmp_path):
    write_mixed_folder(tmp_path / "corpus")
    (tmp_path / "held.txt").write_text("held out text\n" * 5)
    corpus = load_corpus(settings(tmp_path / "corpus" / "*.txt*", val_path=str(tmp_path / "held.txt")),
                         tmp_path / "data")
    assert corpus.vocab.decode(corpus.train.tolist()) == LINE * 30 + LINE.upper() * 30
    assert corpus.vocab.decode(corpus.val.tolist()) == "held out text\n" * 5


@pytest.mark.parametrize("case, said", [
    ("latin-1 among good files", "bad.txt is not UTF-8 text (byte 3 cannot be decoded)"),
    ("no text files", "holds no text files (.txt, .txt.gz, .jsonl, .jsonl.gz)"),
    ("cut-off gzip", "b.txt.gz cannot be read to its end"),
    ("jsonl without text", "c.jsonl, line 2: not a JSON object with a \"text\" string"),
])
def test_bad_files_are_one_line_naming_the_file_and_nothing_is_left_complete(tmp_path, case, said):
    folder = tmp_path / "corpus"
    write_mixed_folder(folder)
    if case == "latin-1 among good files":
        (folder / "bad.txt").write_bytes(b"abc" + "é".encode("latin-1"))
    elif case == "no text files":
        for f in folder.iterdir():
            f.unlink()
    elif case == "cut-off gzip":
        (folder / "b.txt.gz").write_bytes((folder / "b.txt.gz").read_bytes()[:40])
    else:
        (folder / "c.jsonl").write_text('{"text": "fine"}\n{"title": "no text"}\n')
    with pytest.raises(UserError, match=said.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        load_corpus(settings(folder), tmp_path / "data")
    assert not list((tmp_path / "data").glob("*/stamp")) and not list((tmp_path / "data").glob("*/train.bin"))


def test_a_second_run_reuses_the_tokens_without_reading_the_text(tmp_path, monkeypatch):
    write_mixed_folder(tmp_path / "corpus")
    first = load_corpus(settings(tmp_path / "corpus"), tmp_path / "data")

    def no_reading(*args, **kwargs):
        raise AssertionError("the prepared corpus must be reused as it is")

    monkeypatch.setattr(prepare, "split_parts", no_reading)
    again = load_corpus(settings(tmp_path / "corpus"), tmp_path / "data")
    assert np.array_equal(first.train, again.train)
    (tmp_path / "corpus" / "a.txt").write_text(LINE * 31, encoding="utf-8")  # a changed file is prepared anew
    monkeypatch.undo()
    changed = load_corpus(settings(tmp_path / "corpus"), tmp_path / "data")
    assert len(changed.train) + len(changed.val) == len(first.train) + len(first.val) + len(LINE)


def big_corpus(folder, megabytes: int) -> int:
    """`megabytes` of ASCII text in eight .txt files; returns its size in bytes."""
    folder.mkdir()
    block = "".join(f"{i:08d} to be or not to be, that is the question\n" for i in range(2000)).encode()
    size = 0
    for n in range(8):
        with open(folder / f"part{n}.txt", "wb") as f:
            for _ in range(megabytes * (1 << 20) // 8 // len(block)):
                f.write(block)
                size += len(block)
    return size


PEAK_SCRIPT = """
import json, sys
from pathlib import Path
from multitx.data.text.corpus import load_corpus

def peak_mb():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024

load_corpus({"name": "textfile", "path": "%(corpus)s", "tokenizer": "char", "workers": 0}, Path("%(warm)s"))
before = peak_mb()  # everything imported and run once on a small corpus
corpus = load_corpus({"name": "textfile", "path": "%(big)s", "tokenizer": "char", "workers": 0}, Path("%(data)s"))
print(json.dumps({"before": before, "after": peak_mb(), "tokens": len(corpus.train) + len(corpus.val)}))
"""


def test_preparing_a_corpus_ten_times_the_memory_budget_stays_within_it(tmp_path):
    budget_mb = 8  # the transient arrays of a few chunks in flight (6 MB on 2026-12-06), whatever the size
    size = big_corpus(tmp_path / "big", 10 * budget_mb)
    small = tmp_path / "small.txt"
    small.write_text(LINE * 200, encoding="utf-8")
    script = PEAK_SCRIPT % {"corpus": small, "warm": tmp_path / "warm", "big": tmp_path / "big",
                            "data": tmp_path / "data"}
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-2000:]
    peaks = json.loads(result.stdout.strip().splitlines()[-1])
    assert peaks["tokens"] == size  # ASCII: one token a byte
    assert peaks["after"] - peaks["before"] < budget_mb, peaks
    print(f"peak resident memory {peaks['before']:.0f} MB -> {peaks['after']:.0f} MB over {size / 2**20:.0f} MB")


KILL_SCRIPT = """
from pathlib import Path
from multitx.data.text.corpus import load_corpus
load_corpus({"name": "textfile", "path": "%(big)s", "tokenizer": "char", "workers": 2}, Path("%(data)s"))
"""


def test_a_killed_preparation_leaves_nothing_a_later_run_takes_for_complete(tmp_path):
    big_corpus(tmp_path / "big", 96)
    script = KILL_SCRIPT % {"big": tmp_path / "big", "data": tmp_path / "data"}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env, start_new_session=True)
    deadline = time.time() + 120
    while not list((tmp_path / "data").glob("*/train.bin.part")) or \
            list((tmp_path / "data").glob("*/train.bin.part"))[0].stat().st_size < 1 << 20:
        assert time.time() < deadline and process.poll() is None, "the preparation should still be writing"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # the preparation and its workers, mid-write
    process.wait()
    (folder,) = [p for p in (tmp_path / "data").iterdir() if p.is_dir()]
    assert not (folder / "stamp").exists() and not (folder / "train.bin").exists()
    corpus = load_corpus(settings(tmp_path / "big", workers=2), tmp_path / "data")  # prepared again, whole
    clean = load_corpus(settings(tmp_path / "big", workers=0), tmp_path / "clean")
    assert np.array_equal(corpus.train, clean.train) and np.array_equal(corpus.val, clean.val)
    assert (folder / "stamp").exists() and not list(folder.glob("*.part"))


def test_a_full_disk_while_writing_the_token_files_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    write_mixed_folder(tmp_path / "corpus")
    real = prepare.encoded

    def fills_the_disk(*args, **kwargs):
        for i, item in enumerate(real(*args, **kwargs)):
            if i == 1:
                raise OSError(28, "No space left on device", str(tmp_path / "data" / "x" / "train.bin.part"))
            yield item

    monkeypatch.setattr(prepare, "encoded", fills_the_disk)
    with pytest.raises(UserError, match=r"the disk filled up while preparing .*; free some space or give "
                                        r"data_dir=ANOTHER_FOLDER; nothing half-written was kept"):
        load_corpus(settings(tmp_path / "corpus"), tmp_path / "data")
    (folder,) = [p for p in (tmp_path / "data").iterdir() if p.is_dir()]
    assert sorted(p.name for p in folder.iterdir()) == ["prepare.lock"]
