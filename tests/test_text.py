"""Characters in, ids out, and corpora that are cached, split and checked."""

import urllib.request

import numpy as np
import pytest

from multitx.data.text import corpus
from multitx.data.text.corpus import TokenWindows, load_corpus
from multitx.data.text.vocab import CharVocab
from multitx.errors import UserError


def test_tokenizer_round_trip(tmp_path):
    text = "First Citizen:\nBefore we proceed any further, hear me speak. Ünïcødé too!"
    tokenizer = CharVocab.from_text(text)
    assert tokenizer.decode(tokenizer.encode(text)) == text
    tokenizer.save(tmp_path / "vocab.json")
    assert CharVocab.load(tmp_path / "vocab.json").encode(text) == tokenizer.encode(text)


def test_unknown_prompt_character_is_a_clear_error():
    tokenizer = CharVocab.from_text("abc")
    with pytest.raises(UserError, match=r"never saw.*'z'"):
        tokenizer.encode("abz")


def test_textfile_corpus_is_split_90_10_and_memory_mapped(tmp_path, small_corpus):
    data = load_corpus("textfile", tmp_path, str(small_corpus))
    n = len(small_corpus.read_text(encoding="utf-8"))
    assert len(data.train) == int(n * 0.9) and len(data.train) + len(data.val) == n
    assert isinstance(data.train, np.memmap)
    assert data.vocab.decode(data.train[:10].tolist()) == small_corpus.read_text(encoding="utf-8")[:10]


def test_pysource_corpus_needs_no_download(tmp_path):
    data = load_corpus("pysource", tmp_path)
    assert len(data.train) > 1_000_000
    assert "def " in data.vocab.decode(data.train[:5000].tolist())


def test_shakespeare_is_used_offline_when_present(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("must not download when the file is in place")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    target = tmp_path / "shakespeare" / "input.txt"
    target.parent.mkdir()
    fake = b"not shakespeare"
    monkeypatch.setattr(corpus, "SHAKESPEARE_SHA256", __import__("hashlib").sha256(fake).hexdigest())
    target.write_bytes(fake)
    assert corpus.shakespeare_path(tmp_path) == target


def test_missing_shakespeare_without_network_says_where_to_put_it(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(UserError, match=r"could not be downloaded.*copy input\.txt"):
        corpus.shakespeare_path(tmp_path)


@pytest.mark.parametrize("content, message", [(b"", "is empty"), (b"\xff\xfe\x00bad", "not UTF-8")])
def test_bad_text_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        load_corpus("textfile", tmp_path, str(path))


def test_windows_are_targets_shifted_by_one_and_resume_exactly(tmp_path, small_corpus):
    data = load_corpus("textfile", tmp_path, str(small_corpus))
    windows = TokenWindows(data.train, batch_size=4, context=16, seed=0)
    x, y = next(windows)
    assert x.shape == y.shape == (4, 16)
    assert np.array_equal(x[:, 1:].numpy(), y[:, :-1].numpy())
    state = windows.state_dict()
    expected = [next(windows)[0] for _ in range(3)]
    again = TokenWindows(data.train, batch_size=4, context=16, seed=123)
    again.load_state_dict(state)
    assert all(np.array_equal(a, b) for a, b in zip(expected, [next(again)[0] for _ in range(3)], strict=True))
