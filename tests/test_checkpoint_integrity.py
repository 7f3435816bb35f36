"""A checkpoint records the sha256 of its weights and state; a file altered or cut short
after the write is named in one line, and resume=auto falls back to the newest intact one."""

import hashlib
import json
import shutil

import pytest
from safetensors.torch import load_file

from multitx import sample, train
from multitx.cli import run_cli
from multitx.engine import checkpoint
from multitx.errors import UserError
from multitx.loading import load
from tests.conftest import tiny_charlm_args, write_line_corpus

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A run with checkpoints at steps 2, 4 and 6."""
    tmp = tmp_path_factory.mktemp("integrity")
    corpus = tmp / "corpus.txt"
    write_line_corpus(corpus)
    run_dir = tmp / "run"
    run_cli(train.main, tiny_charlm_args(corpus, run_dir, "steps=6", "eval_every=2", "keep_checkpoints=3"))
    return corpus, run_dir


def altered(run_dir, tmp_path, damage):
    """A copy of the run whose newest checkpoint has been damaged by `damage(folder)`."""
    copy = shutil.copytree(run_dir, tmp_path / "run")
    newest = checkpoint.latest(copy)
    damage(newest)
    return copy, newest


def flip_a_byte(file):
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))


def test_the_manifest_holds_the_hash_of_the_weights_and_the_state(finished):
    _, run_dir = finished
    newest = checkpoint.latest(run_dir)
    recorded = json.loads((newest / "manifest.json").read_text())["sha256"]
    for name in ("model.safetensors", "state.pt"):
        assert recorded[name] == hashlib.sha256((newest / name).read_bytes()).hexdigest()


@pytest.mark.parametrize("file", ["model.safetensors", "state.pt"])
@pytest.mark.parametrize("damage", ["altered", "truncated"])
def test_a_damaged_file_is_named_when_loading(finished, tmp_path, file, damage):
    _, run_dir = finished

    def spoil(folder):
        if damage == "altered":
            flip_a_byte(folder / file)  # same length: only the hash can tell
        else:
            (folder / file).write_bytes((folder / file).read_bytes()[:-40])

    copy, newest = altered(run_dir, tmp_path, spoil)
    with pytest.raises(UserError, match=rf"{newest / file} is truncated or corrupt: .*sha256"):
        if file == "state.pt":
            checkpoint.load_state(newest)
        else:
            load(copy, "latest")


def test_sample_names_the_altered_file_in_one_line(finished, tmp_path, capsys):
    _, run_dir = finished
    copy, newest = altered(run_dir, tmp_path, lambda folder: flip_a_byte(folder / "model.safetensors"))
    with pytest.raises(SystemExit) as stop:
        run_cli(sample.main, [f"run_dir={copy}", "checkpoint=latest", "max_new_tokens=3"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1
    assert str(newest / "model.safetensors") in err


def test_resume_auto_falls_back_to_the_newest_intact_checkpoint_and_says_so(finished, tmp_path, capsys):
    corpus, run_dir = finished
    copy, newest = altered(run_dir, tmp_path, lambda folder: flip_a_byte(folder / "state.pt"))
    previous = checkpoint.step_dirs(copy / "checkpoints")[-2]
    run_cli(train.main, tiny_charlm_args(corpus, copy, "steps=8", "eval_every=2", "keep_checkpoints=3",
                                         "resume=auto"))
    out = capsys.readouterr().out
    assert f"skipping a damaged checkpoint: {newest / 'state.pt'} is truncated or corrupt" in out
    assert f"resuming from {previous}" in out
    # Steps 5 and 6 were trained again from step 4, into an intact step_6.
    assert checkpoint.load_state(checkpoint.latest(copy))["step"] == 8
    checkpoint.verify(copy / "checkpoints" / "step_0000006")
    assert load_file(copy / "checkpoints" / "step_0000006" / "model.safetensors")


def test_resume_auto_with_no_intact_checkpoint_is_one_line(finished, tmp_path, capsys):
    corpus, run_dir = finished
    copy = shutil.copytree(run_dir, tmp_path / "run")
    for folder in checkpoint.step_dirs(copy / "checkpoints"):
        (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(SystemExit) as stop:
        run_cli(train.main, tiny_charlm_args(corpus, copy, "steps=8", "resume=auto"))
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1
    assert "no intact checkpoint" in err and "model.safetensors is truncated or corrupt" in err


def test_a_checkpoint_from_before_manifests_still_loads(finished, tmp_path):
    _, run_dir = finished
    copy, newest = altered(run_dir, tmp_path, lambda folder: (folder / "manifest.json").unlink())
    found = load(copy, "latest").checkpoint
    assert found == newest
