"""Run folders written by multitx 0.1, the release before trunks became nested sections, still load,
sample and resume. tests/fixtures/release-0.1.0/ holds one tiny run of each task as 0.1 wrote it
(flat model.dim / model.encoder_dim keys, the captioner's weights under `patches.`, vocabularies
only in the run folder), and expected.json what 0.1's own code computed from them."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

import multitx
from multitx.engine import checkpoint
from multitx.engine.migrate import migrate
from tests.conftest import REPO, run_here, write_line_corpus

OLD = REPO / "tests" / "fixtures" / "release-0.1.0"
EXPECTED = json.loads((OLD / "expected.json").read_text(encoding="utf-8"))


def test_an_old_config_reads_in_the_nested_shape_with_the_values_it_was_trained_with():
    charlm = migrate(OmegaConf.load(OLD / "charlm" / "config.yaml")).model
    assert "dim" not in charlm and charlm.trunk.dim == 16 and charlm.trunk.layers == 1 and charlm.causal
    assert charlm.trunk.activation == "relu2" and charlm.trunk.mlp_ratio == 4.0 and charlm.trunk.norm_eps == 1e-5
    vit = migrate(OmegaConf.load(OLD / "vit" / "config.yaml")).model
    assert vit.trunk.bias and vit.trunk.norm_eps == 1e-6 and vit.trunk.mlp_ratio == 2.0  # 0.1's fixed ViT choices
    caption = migrate(OmegaConf.load(OLD / "caption" / "config.yaml")).model
    assert (caption.encoder.dim, caption.encoder.layers, caption.decoder.dim, caption.decoder.layers) == (16, 1, 16, 1)
    assert not any(key.startswith(("encoder_", "decoder_")) for key in caption if key != "encoder_pretrained")


def test_an_old_charlm_run_loads_to_the_same_logits_and_samples_the_same_text():
    run = multitx.load(OLD / "charlm")
    ids = torch.tensor([run.vocab.encode("To be")])
    with torch.no_grad():
        logits = run.model(ids)[0][0, -1]
    torch.testing.assert_close(logits, torch.tensor(EXPECTED["charlm_last_logits_after_To_be"]), rtol=0, atol=1e-6)
    printed = run_here("multitx.sample", f"run_dir={OLD / 'charlm'}", "prompt=To be", "max_new_tokens=30", "seed=1",
                       "device=cpu")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == EXPECTED["charlm_sample_To_be_30_seed1"] + "\n"


def test_an_old_vit_run_loads_with_its_class_names_to_the_same_logits():
    run = multitx.load(OLD / "vit")
    assert run.classes == ["blue", "red"] and run.info["image_size"] == (8, 8)
    pixels = np.asarray(Image.open(OLD / "red.png").convert("RGB"))  # (8, 8, 3): the model's own size
    x = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float() / 255
    x = (x - torch.tensor(run.info["mean"]).view(1, -1, 1, 1)) / torch.tensor(run.info["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        logits = run.model(x)[0]
    torch.testing.assert_close(logits, torch.tensor(EXPECTED["vit_logits_red_png"]), rtol=0, atol=1e-6)


def test_an_old_caption_run_loads_its_patches_weights_as_the_tokenizer_and_captions_the_same():
    run = multitx.load(OLD / "caption")
    saved = checkpoint.resolve(OLD / "caption", "best") / "model.safetensors"
    from safetensors.torch import load_file

    old = load_file(saved)
    assert any(k.startswith("patches.") for k in old)  # 0.1's name for the patch tokenizer
    torch.testing.assert_close(run.model.tokenizer.proj.weight, old["patches.proj.weight"], rtol=0, atol=0)
    printed = run_here("multitx.caption", f"run_dir={OLD / 'caption'}", f"image={OLD / 'red.png'}", "beam=1",
                       "device=cpu")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.strip() == EXPECTED["caption_red_png_greedy"]


@pytest.fixture
def old_runs(tmp_path) -> Path:
    copy = tmp_path / "old"
    shutil.copytree(OLD, copy)
    return copy


def test_an_old_charlm_run_resumes_and_its_new_checkpoints_are_complete_alone(old_runs, tmp_path):
    run_dir = old_runs / "charlm"
    corpus = write_line_corpus(tmp_path / "corpus.txt")  # the text it was trained on
    resumed = run_here("multitx.train", "task=charlm", "data=textfile", f"data.path={corpus}", f"run_dir={run_dir}",
                       f"data_dir={tmp_path / 'datasets'}", "resume=auto", "steps=4", "eval_every=2",
                       "eval_batches=1", "batch_size=2", "warmup_steps=1", "model.trunk.layers=1",
                       "model.trunk.heads=2", "model.trunk.dim=16", "model.context=16",
                       "model.trunk.qk_norm=false",  # 0.1 had no QK-norm; today's charlm recipe turns it on
                       "show_tokens=0",
                       "progress=false", "plots=false", "device=cpu")
    assert resumed.returncode == 0, resumed.stderr
    newest = checkpoint.latest(run_dir)
    assert newest.name == "step_0000004" and (newest / "vocab.json").is_file()
    assert checkpoint.load_state(newest)["step"] == 4
    assert multitx.load(newest).vocab.chars == multitx.load(OLD / "charlm").vocab.chars


# ------------------------------------------------------------------------ release 0.2.0 (before issue 23)
# tests/fixtures/release-0.2.0/ holds one tiny run of every task as 0.2.0 wrote it (made_with.py, run with that
# release's code), and expected.json what that code computed from them: they load, sample, caption and resume.

V02 = REPO / "tests" / "fixtures" / "release-0.2.0"
EXPECTED_02 = json.loads((V02 / "expected.json").read_text(encoding="utf-8"))


def test_a_0_2_charlm_and_mlm_run_load_to_the_same_logits_and_sample_the_same_text():
    run = multitx.load(V02 / "charlm")
    with torch.no_grad():
        logits = run.model(torch.tensor([run.vocab.encode("To be")]))[0][0, -1]
    torch.testing.assert_close(logits, torch.tensor(EXPECTED_02["charlm_last_logits_after_To_be"]), rtol=0, atol=1e-6)
    mlm = multitx.load(V02 / "mlm")
    with torch.no_grad():
        logits = mlm.model(torch.tensor([mlm.vocab.encode("To be")]))[0][0, -1]
    torch.testing.assert_close(logits, torch.tensor(EXPECTED_02["mlm_logits_To_be"]), rtol=0, atol=1e-6)
    printed = run_here("multitx.sample", f"run_dir={V02 / 'charlm'}", "prompt=To be", "max_new_tokens=30", "seed=1",
                       "device=cpu")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == EXPECTED_02["charlm_sample_To_be_30_seed1"]


def test_a_0_2_vit_and_caption_run_load_to_the_same_logits_and_caption():
    run = multitx.load(V02 / "vit")
    assert run.classes == EXPECTED_02["vit_classes"]
    pixels = np.asarray(Image.open(V02 / "red.png").convert("RGB"))
    x = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float() / 255
    x = (x - torch.tensor(run.info["mean"]).view(1, -1, 1, 1)) / torch.tensor(run.info["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        logits = run.model(x)[0]
    torch.testing.assert_close(logits, torch.tensor(EXPECTED_02["vit_logits_red_png"]), rtol=0, atol=1e-6)
    printed = run_here("multitx.caption", f"run_dir={V02 / 'caption'}", f"image={V02 / 'red.png'}", "beam=1",
                       "device=cpu")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.strip() == EXPECTED_02["caption_red_png_greedy"]


def test_a_0_2_charlm_run_resumes(tmp_path):
    copy = tmp_path / "charlm"
    shutil.copytree(V02 / "charlm", copy)
    corpus = write_line_corpus(tmp_path / "corpus.txt")  # the text it was trained on
    resumed = run_here("multitx.train", "task=charlm", "data=textfile", f"data.path={corpus}", f"run_dir={copy}",
                       f"data_dir={tmp_path / 'datasets'}", "resume=auto", "steps=4", "eval_every=2",
                       "eval_batches=1", "batch_size=2", "warmup_steps=1", "model.trunk.layers=1",
                       "model.trunk.heads=2", "model.trunk.dim=16", "model.context=16", "show_tokens=0",
                       "progress=false", "plots=false", "device=cpu")
    assert resumed.returncode == 0, resumed.stderr
    newest = checkpoint.latest(copy)
    assert newest.name == "step_0000004" and checkpoint.load_state(newest)["step"] == 4
