"""Bad input ends in one line that names the problem and what to do, a non-zero
exit, no traceback, and the last good checkpoint untouched."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from multitx import train
from multitx.cli import run_cli
from multitx.engine import checkpoint
from tests.conftest import tiny_charlm_args, write_line_corpus
from tests.helpers_vision import write_imagefolder
from tests.test_engine import RunsCode


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    """A finished tiny run, plus damaged copies of its checkpoint."""
    tmp = tmp_path_factory.mktemp("bad_inputs")
    corpus = tmp / "corpus.txt"
    write_line_corpus(corpus)
    run_dir = tmp / "run"
    run_cli(train.main, tiny_charlm_args(corpus, run_dir, "steps=4", "eval_every=2"))
    good = checkpoint.latest(run_dir)

    def damaged(name: str, damage) -> Path:
        copy = tmp / "damaged" / name / good.name
        shutil.copytree(good, copy)
        damage(copy)
        return copy

    def truncate(file: str):
        return lambda folder: (folder / file).write_bytes((folder / file).read_bytes()[:100])

    def without_activation(folder: Path):  # as written before model.trunk.activation existed
        config = folder / "config.yaml"
        config.write_text("".join(line for line in config.read_text().splitlines(keepends=True)
                                  if not line.strip().startswith("activation:")))

    def malicious(folder: Path):  # written by someone who also rewrote the manifest to match
        torch.save({"step": 1, "x": RunsCode(tmp / "pwned")}, folder / "state.pt")
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["sha256"]["state.pt"] = hashlib.sha256((folder / "state.pt").read_bytes()).hexdigest()
        (folder / "manifest.json").write_text(json.dumps(manifest))

    files = {
        "corpus": corpus,
        "empty": tmp / "empty.txt",
        "latin1": tmp / "latin1.txt",
        "truncated_state": damaged("truncated_state", truncate("state.pt")),
        "truncated_weights": damaged("truncated_weights", truncate("model.safetensors")),
        "malicious": damaged("malicious", malicious),
        "before_activation": damaged("before_activation", without_activation),
        "broken_config": damaged("broken_config", lambda folder: (folder / "config.yaml").write_text("model: [1,")),
        "tiny": tmp / "tiny.txt",
    }
    files["empty"].write_text("")
    files["latin1"].write_bytes("Ça coûte cher, élève!".encode("latin-1"))
    files["tiny"].write_text("too short")
    return run_dir, files, tmp


def fingerprint(run_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((run_dir / "checkpoints").rglob("*")) if p.is_file()}


CASES = [
    # (extra arguments: {corpus}, {empty}, ... are files from the fixture;  expected words in the message)
    (["model.layerz=3"], "unknown config key 'model.layerz'"),
    (["steps=abc"], "steps must be a whole number, got 'abc'"),
    (["compile=maybe"], "compile must be true or false"),
    (["lr=fast"], "lr must be a number, got 'fast'"),
    (["task=nope"], "unknown task 'nope'; choose one of"),
    (["data=nope"], "unknown data 'nope'; choose one of"),
    (["steps=0"], "steps must be at least 1"),
    (["batch_size=-4"], "batch_size must be at least 1"),
    (["eval_every=0"], "eval_every must be at least 1"),
    (["lr=-0.1"], "lr must be positive"),
    (["device=tpu"], "device must be one of auto, cpu, cuda, cuda:N, mps, got 'tpu'"),
    (["precision=fp8"], "precision must be one of auto, fp32, bf16, fp16, got 'fp8'"),
    (["nonfinite=ignore"], "nonfinite must be one of stop, skip, got 'ignore'"),
    (["optimizer=sgd"], "optimizer must be one of adamw, muon, got 'sgd'"),
    (["muon.lr=0"], "muon.lr must be positive"),
    (["data.path={empty}"], "is empty; a corpus needs text"),
    (["data.path={latin1}"], "is not UTF-8 text"),
    (["data.path={missing}"], "does not exist; give an existing UTF-8 file"),
    (["data.path=null"], "data=textfile needs a file"),
    (["data.path={tiny}"], "fewer than context"),
    (["model.trunk.heads=3"], "model.trunk.dim=32 is not divisible by model.trunk.heads=3"),
    (["model.positions=absolute"], "model.positions must be one of learned, sinusoidal, rotary"),
    (["model.trunk.activation=swish"], "model.trunk.activation must be one of gelu, gelu_tanh, relu2"),
    (["resume={missing}"], "no such checkpoint folder"),
    (["resume={truncated_state}"], "state.pt is truncated or corrupt"),
    (["resume={truncated_weights}"], "model.safetensors is truncated or corrupt"),
    (["resume={malicious}"], "would run code when unpickled"),
    (["resume=auto", "model.trunk.dim=64"],
     "different model configuration (model.trunk.dim: 32 in the checkpoint, 64 now)"),
    (["resume=auto", "model.trunk.activation=gelu"], "model.trunk.activation: relu2 in the checkpoint, gelu now"),
    (["resume={before_activation}"], "model.trunk.activation: gelu in the checkpoint, relu2 now"),
    (["resume=auto", "optimizer=adamw"], "was trained with optimizer=muon, not adamw; resume with optimizer=muon"),
    (["resume={broken_config}"], "config.yaml cannot be read (ParserError); use an earlier checkpoint"),
    ([], "already has checkpoints; continue it with resume=auto"),
    (["device=cuda"], "device=cuda but no CUDA GPU is visible"),
]


@pytest.mark.parametrize("extra, message", CASES, ids=[" ".join(c[0]) or "no-resume" for c in CASES])
def test_bad_input_is_one_line_and_keeps_the_last_checkpoint(good_run, extra, message, capsys):
    if "device=cuda" in extra and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    run_dir, files, tmp = good_run
    paths = {name: str(path) for name, path in files.items()} | {"missing": str(tmp / "missing")}
    before = fingerprint(run_dir)
    extra = [arg.format(**paths) for arg in extra]
    if extra and not any(arg.startswith("resume=") for arg in extra):
        extra.append("resume=auto")  # get past "already has checkpoints" to the input under test
    argv = tiny_charlm_args(files["corpus"], run_dir, *extra)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(train.main, argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert "Traceback" not in err
    assert fingerprint(run_dir) == before
    assert not (tmp / "pwned").exists()


def test_debug_true_shows_the_traceback_instead(good_run):
    run_dir, files, _ = good_run
    with pytest.raises(Exception, match="steps must be at least 1"):
        run_cli(train.main, tiny_charlm_args(files["corpus"], run_dir, "steps=0", "debug=true"))


# --------------------------------------------------------------------------------- images and captions

@pytest.fixture(scope="module")
def good_image_run(tmp_path_factory):
    """A finished tiny ViT run on a user's image folder, plus broken datasets."""
    tmp = tmp_path_factory.mktemp("bad_image_inputs")
    images = write_imagefolder(tmp / "images", per_class=4)
    run_dir = tmp / "run"
    run_cli(train.main, image_args(images, run_dir))
    corrupt = shutil.copytree(images, tmp / "corrupt")
    (corrupt / "train" / "square" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)  # a PNG cut short
    (tmp / "empty").mkdir()
    files = {"images": images, "corrupt": corrupt, "empty": tmp / "empty", "missing": tmp / "missing"}
    return run_dir, {name: str(path) for name, path in files.items()}


def image_args(images: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["task=vit_cifar", "data=imagefolder", f"data.root={images}", f"run_dir={run_dir}",
            f"data_dir={run_dir.parent / 'datasets'}", "model.image_size=16", "model.patch_size=4",
            "model.trunk.dim=16", "model.trunk.layers=1", "model.trunk.heads=2", "steps=2", "eval_every=2",
            "batch_size=4", "warmup_steps=1", "device=cpu", "progress=false", *extra]


IMAGE_CASES = [
    (["model.image_size=18"], "image size 18x18 is not divisible by patch size 4x4"),
    (["model.patch_size=5", "model.image_size=[16,20]"], "image size 16x20 is not divisible by patch size 5x5"),
    (["data.root={corrupt}"], "cannot read image {corrupt}/train/square/1.png"),
    (["data.root={missing}"], "data=imagefolder wants DIR/train/CLASS/*.png"),
    (["data.root={empty}"], "data=imagefolder wants DIR/train/CLASS/*.png"),
    (["data.root=null"], "data=imagefolder needs a folder: add data.root=DIR"),
    (["data=cifar10", "data.root={empty}", "data.download=false"], "CIFAR-10 is not in {empty}; put"),
    (["task=vit_fashion", "data=fashion_mnist", "data.root={empty}"], "does not hold Fashion-MNIST's four files"),
    (["task=caption", "data=coco", "data.root={missing}"], "data.root={missing}"),
    (["task=caption", "data=flickr", "data.root={empty}"], "{empty}"),
    (["task=caption", "data=flickr", "data.root={corrupt}"], "captions.txt"),
    (["model.trunk.dim=32"], "was written by a different model configuration"),
]


@pytest.mark.parametrize("extra, message", IMAGE_CASES, ids=[" ".join(c[0]) for c in IMAGE_CASES])
def test_bad_image_input_is_one_line_and_keeps_the_last_checkpoint(good_image_run, extra, message, capsys):
    run_dir, paths = good_image_run
    before = fingerprint(run_dir)
    extra = [arg.format(**paths) for arg in extra]
    if "task=caption" in extra:  # the captioner has model keys of its own: keep its defaults
        argv = [*extra, f"run_dir={run_dir}", "device=cpu", "resume=auto"]
    else:
        argv = image_args(paths["images"], run_dir, *extra, "resume=auto")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(train.main, argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message.format(**paths) in err
    assert "Traceback" not in err
    assert fingerprint(run_dir) == before
