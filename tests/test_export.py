"""python -m multitx.export: a trained ViT and char LM, exported to ONNX and to a torch.export program,
give the PyTorch model's logits for any batch size (and, for the LM, any length up to the context),
with a JSON beside them holding what a user needs to feed them; bad input is one line and exit 2."""

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import multitx
from multitx import export as exporter
from multitx.cli import load_config, run_cli
from multitx.engine.trainer import train
from tests.conftest import run_here, tiny_caption_args, tiny_charlm_args, write_line_corpus
from tests.helpers_vision import write_imagefolder
from tests.test_bad_inputs import image_args

FORMATS = ["onnx", "pt2"]


def few_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    return threads


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory) -> Path:
    tmp, threads = tmp_path_factory.mktemp("export_vit"), few_threads()
    images = write_imagefolder(tmp / "images", per_class=4)
    train(load_config(image_args(images, tmp / "run", "steps=3", "eval_every=3", "plots=false")))
    torch.set_num_threads(threads)
    return tmp / "run"


@pytest.fixture(scope="module")
def charlm_run(tmp_path_factory) -> Path:
    tmp, threads = tmp_path_factory.mktemp("export_charlm"), few_threads()
    corpus = write_line_corpus(tmp / "corpus.txt")
    train(load_config(tiny_charlm_args(corpus, tmp / "run", "steps=3", "eval_every=3", "plots=false",
                                       "model.trunk.dim=16", "model.trunk.layers=1", "model.context=16")))
    torch.set_num_threads(threads)
    return tmp / "run"


def exported_runner(fmt: str, path: Path):
    """A function running the exported file on a tensor, as a user without multitx would."""
    if fmt == "onnx":
        ort = pytest.importorskip("onnxruntime")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0]), session
    program = torch.export.load(path)
    return program.module(), program


def export_with_cli(run_dir: Path, fmt: str, capsys, *extra: str) -> str:
    exporter.main([f"run_dir={run_dir}", f"format={fmt}", *extra])
    return capsys.readouterr().out


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("fmt", FORMATS)
def test_an_exported_vit_gives_the_pytorch_logits_for_any_batch_size(vit_run, fmt, capsys):
    printed = export_with_cli(vit_run, fmt, capsys)
    path = vit_run / f"model.{fmt}"
    assert f"wrote {path} ({fmt}" in printed and f"wrote {path}.json" in printed and "checked:" in printed
    run = multitx.load(vit_run, "best")
    about = json.loads(Path(f"{path}.json").read_text(encoding="utf-8"))
    assert about["classes"] == run.classes == ["circle", "square"]
    assert about["image_size"] == [16, 16] and about["channels"] == 3 == run.info["channels"]
    assert about["mean"] == pytest.approx(run.info["mean"]) and about["std"] == pytest.approx(run.info["std"])
    assert about["input"]["shape"] == ["batch", 3, 16, 16] and about["output"]["shape"] == ["batch", 2]
    forward, handle = exported_runner(fmt, path)
    if fmt == "onnx":
        assert handle.get_inputs()[0].name == "images" and handle.get_inputs()[0].shape == ["batch", 3, 16, 16]
    for batch in (1, 5):  # the example the export traced had 2: both are other sizes
        images = torch.randn(batch, 3, 16, 16)
        with torch.no_grad():
            want = run.model(images)
        got = forward(images)
        assert got.shape == (batch, 2)
        assert (got - want).abs().max().item() <= 1e-4
        assert want.abs().max().item() > 1e-6  # a trained head: the comparison is not of zeros


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("fmt", FORMATS)
def test_an_exported_charlm_gives_the_pytorch_logits_for_any_batch_and_length(charlm_run, fmt, capsys):
    out = charlm_run.parent / "exports" / f"lm.{fmt}"  # out= into a folder that is not there yet
    printed = export_with_cli(charlm_run, fmt, capsys, f"out={out}", "checkpoint=latest")
    assert f"wrote {out} ({fmt}" in printed and "ids (batch, tokens) int64" in printed
    assert not (charlm_run / f"model.{fmt}").exists()
    run = multitx.load(charlm_run, "latest")
    about = json.loads(Path(f"{out}.json").read_text(encoding="utf-8"))
    assert about["chars"] == run.vocab.chars and about["context"] == 16 == about["input"]["max_tokens"]
    assert about["vocab_size"] == run.vocab.vocab_size and about["checkpoint"] == str(run.checkpoint)
    forward, _ = exported_runner(fmt, out)
    for batch, tokens in ((1, 16), (3, 5)):
        ids = torch.randint(0, run.vocab.vocab_size, (batch, tokens))
        with torch.no_grad():
            want = run.model(ids)[0]
        got = forward(ids)
        assert got.shape == (batch, tokens, run.vocab.vocab_size)
        assert (got - want).abs().max().item() <= 1e-4


@pytest.fixture
def caption_run(tmp_path) -> Path:
    """A caption run's folder as far as its config.yaml: refused before anything else is read."""
    run_dir = tmp_path / "caption_run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(load_config(tiny_caption_args(tmp_path))))
    return run_dir


@pytest.mark.parametrize("case, message", [
    ("not_a_run", "is not a multitx run folder"),
    ("caption", "is a caption run; multitx.export exports language model (task=lm), char LM (task=charlm) and ViT "
                "(task=vit_*) runs only"),
    ("tflite", "format must be one of onnx, pt2, hf, got 'tflite'"),
    ("no_such_checkpoint", "checkpoint must be best, latest or an existing checkpoint folder"),
])
def test_bad_input_is_one_line_and_exit_2(charlm_run, caption_run, tmp_path, case, message):
    args = {"not_a_run": [f"run_dir={tmp_path}"], "caption": [f"run_dir={caption_run}"],
            "tflite": [f"run_dir={charlm_run}", "format=tflite"],
            "no_such_checkpoint": [f"run_dir={charlm_run}", f"checkpoint={tmp_path / 'step_9'}"]}[case]
    done = run_here("multitx.export", *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not list(tmp_path.rglob("model.*")) and not list(caption_run.rglob("model.*"))


def fail(*args, **kwargs):
    raise RuntimeError("Unsupported: data-dependent control flow\nmore detail on the next line")


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("broken, fmt, message", [
    ("torch.export.export", "pt2", "torch.export could not capture the charlm model of"),
    ("torch.onnx.export", "onnx", "the ONNX exporter (torch.onnx.export, dynamo=True) could not translate"),
])
def test_an_exporter_failure_is_one_line_that_names_it_and_the_other_format(charlm_run, tmp_path, monkeypatch,
                                                                           capsys, broken, fmt, message):
    module, name = broken.rsplit(".", 1)
    monkeypatch.setattr({"torch.export": torch.export, "torch.onnx": torch.onnx}[module], name, fail)
    with pytest.raises(SystemExit) as stopped:
        run_cli(exporter.main, [f"run_dir={charlm_run}", f"format={fmt}", f"out={tmp_path / 'm'}"])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and len(err.strip().splitlines()) == 1
    assert message in err and "RuntimeError: Unsupported: data-dependent control flow" in err
    assert ("format=onnx" if fmt == "pt2" else "format=pt2") in err
    assert not (tmp_path / "m").exists() and not (tmp_path / "m.json").exists()
