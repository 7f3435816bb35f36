"""strategy=fsdp: FSDP2 under torchrun, two gloo processes on the CPU. It trains as one process does on the
same global batch (the char LM, a ViT, the captioner; AdamW and Muon), writes sharded checkpoints (each process
its part, through torch.distributed.checkpoint, safetensors only) that resume on one process and on two, under
either strategy, and that multitx.load and the tools read in one process; a rank killed mid-run leaves the last
complete checkpoint intact."""

import json
import time

import pytest
import torch

import multitx
from multitx.engine import checkpoint
from multitx.engine.sharded_checkpoint import SHARDS, is_sharded
from tests.conftest import run_here, tiny_caption_args, tiny_charlm_args, write_line_corpus
from tests.helpers_vision import write_imagefolder
from tests.test_ddp_faults import KILLABLE, launch
from tests.test_engine import train_in_process, train_in_two_processes
from tests.test_image_cache import run_dir_args

FSDP = "strategy=fsdp"
STEPS = ["steps=20", "eval_every=10", "device=cpu", "plots=false"]
NO_AUGMENT = ["model.trunk.drop_path=0", "augment.crop_padding=0", "augment.flip=false", "augment.policy=none",
              "augment.erase=0", "augment.mixup=0", "augment.cutmix=0"]


def weights_of(run_dir) -> dict[str, torch.Tensor]:
    """The latest checkpoint's weights, sharded or not, by name (as multitx.load reads them)."""
    model = multitx.load(run_dir, "latest").model
    return {name: t.detach() for name, t in model.state_dict().items()}


def largest_gap(run_a, run_b) -> float:
    a, b = weights_of(run_a), weights_of(run_b)
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def losses(run_dir) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "steps.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_line_corpus(tmp_path_factory.mktemp("fsdp") / "corpus.txt")


@pytest.mark.parametrize("optimizer, tolerance", [("adamw", 1e-5), ("muon", 1e-4)])
def test_the_char_lm_under_fsdp_reaches_the_weights_of_ddp_and_of_one_process(corpus, tmp_path, optimizer,
                                                                             tolerance):
    """Muon orthogonalises gathered matrices whose float sums came in another order: 1e-4, as under DDP."""
    common = [*STEPS, "show_tokens=0", f"optimizer={optimizer}"]
    train_in_process(*tiny_charlm_args(corpus, tmp_path / "one", *common, "batch_size=8"))
    said = train_in_two_processes(*tiny_charlm_args(corpus, tmp_path / "fsdp", *common, "batch_size=4", FSDP))
    assert "2 processes" in said
    assert is_sharded(checkpoint.latest(tmp_path / "fsdp"))
    assert largest_gap(tmp_path / "one", tmp_path / "fsdp") <= tolerance
    assert losses(tmp_path / "fsdp") == pytest.approx(losses(tmp_path / "one"), rel=1e-5), \
        "the loss reported is the global batch's, as one process reports it"
    if optimizer == "adamw":
        train_in_two_processes(*tiny_charlm_args(corpus, tmp_path / "ddp", *common, "batch_size=4"))
        assert largest_gap(tmp_path / "ddp", tmp_path / "fsdp") <= tolerance


def test_a_vit_under_fsdp_reaches_the_weights_of_one_process(tmp_path):
    images = write_imagefolder(tmp_path / "images", per_class=12)
    common = [*STEPS, "optimizer=adamw", *NO_AUGMENT, "eval_images=8"]
    train_in_process(*run_dir_args(images, tmp_path / "one", tmp_path / "data", *common, "batch_size=8"))
    train_in_two_processes(*run_dir_args(images, tmp_path / "fsdp", tmp_path / "data", *common, "batch_size=4",
                                         FSDP))
    assert largest_gap(tmp_path / "one", tmp_path / "fsdp") <= 1e-5
    assert losses(tmp_path / "fsdp") == pytest.approx(losses(tmp_path / "one"), rel=1e-5)


@pytest.mark.parametrize("fusion", ["cross", "prefix"])
def test_the_captioner_under_fsdp_reaches_the_weights_of_one_process(tmp_path, fusion):
    """Word dropout draws per process, and BatchNorm (the recipe's convstem) normalises each process's images:
    both off, as under DDP (tests/test_ddp_captioner.py)."""
    common = [*STEPS, "optimizer=adamw", f"model.fusion={fusion}", "model.word_dropout=0",
              "model.tokenizer.name=conv", "show_captions=0", "eval_images=4"]
    one = tiny_caption_args(tmp_path / "one", *common, "batch_size=8")
    train_in_process(*[a if not a.startswith("data_dir=") else f"data_dir={tmp_path / 'data'}" for a in one])
    fsdp = tiny_caption_args(tmp_path / "fsdp", *common, "batch_size=4", FSDP)
    train_in_two_processes(*[a if not a.startswith("data_dir=") else f"data_dir={tmp_path / 'data'}" for a in fsdp])
    assert largest_gap(tmp_path / "one" / "run", tmp_path / "fsdp" / "run") <= 1e-5
    assert losses(tmp_path / "fsdp" / "run") == pytest.approx(losses(tmp_path / "one" / "run"), rel=1e-5)


# Sharded checkpoints

@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory):
    """8 steps in one process at batch 8: what every split of the run must reach."""
    tmp = tmp_path_factory.mktemp("fsdp_ref")
    train_in_process(*tiny_charlm_args(corpus, tmp / "run", "steps=8", "eval_every=4", "device=cpu",
                                       "show_tokens=0", "optimizer=adamw", "batch_size=8", "plots=false"))
    return tmp / "run"


@pytest.fixture(scope="module")
def halfway(corpus, tmp_path_factory):
    """The same run on two FSDP processes, stopped at its checkpoint of step 4."""
    tmp = tmp_path_factory.mktemp("fsdp_half")
    train_in_two_processes(*tiny_charlm_args(corpus, tmp / "run", "steps=4", "eval_every=4", "device=cpu",
                                             "show_tokens=0", "optimizer=adamw", "batch_size=4", "plots=false",
                                             FSDP))
    return tmp / "run"


def test_each_process_writes_its_part_and_the_manifest_covers_every_part(halfway):
    folder = checkpoint.latest(halfway)
    parts = sorted(p.name for p in (folder / SHARDS).iterdir())
    assert len(parts) == 2 and all(p.endswith(".safetensors") for p in parts), parts
    recorded = json.loads((folder / "manifest.json").read_text())["sha256"]
    assert {f"{SHARDS}/{p}" for p in parts} <= set(recorded)
    assert not (folder / "model.safetensors").exists(), "the weights are in the shards alone"
    assert not list(folder.rglob("*.metadata")), "no pickled DCP metadata: offsets live in the safetensors headers"


@pytest.mark.parametrize("processes, strategy", [(1, "ddp"), (2, "fsdp"), (2, "ddp")])
def test_a_sharded_checkpoint_resumes_on_one_process_or_two_under_either_strategy(halfway, uninterrupted, tmp_path,
                                                                                 corpus, processes, strategy):
    run_dir = tmp_path / "run"
    import shutil

    shutil.copytree(halfway, run_dir)
    args = tiny_charlm_args(corpus, run_dir, "steps=8", "eval_every=4", "device=cpu", "show_tokens=0",
                            "optimizer=adamw", f"batch_size={8 // processes}", "plots=false", "resume=auto",
                            f"strategy={strategy}")
    (train_in_process if processes == 1 else train_in_two_processes)(*args)
    assert largest_gap(uninterrupted, run_dir) <= 1e-5


def test_a_checkpoint_of_one_process_resumes_under_fsdp(corpus, uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    common = ["eval_every=4", "device=cpu", "show_tokens=0", "optimizer=adamw", "plots=false"]
    train_in_process(*tiny_charlm_args(corpus, run_dir, "steps=4", "batch_size=8", *common))
    train_in_two_processes(*tiny_charlm_args(corpus, run_dir, "steps=8", "batch_size=4", "resume=auto", FSDP,
                                             *common))
    assert is_sharded(checkpoint.latest(run_dir))
    assert largest_gap(uninterrupted, run_dir) <= 1e-5


def test_the_tools_read_a_sharded_checkpoint_in_one_process(halfway, tmp_path):
    run = multitx.load(halfway)
    assert run.model.config.trunk.dim == 32
    sampled = run_here("multitx.sample", f"run_dir={halfway}", "prompt=To be", "max_new_tokens=5", "device=cpu")
    assert sampled.returncode == 0 and sampled.stdout.startswith("To be"), sampled.stderr[-2000:]
    evaluated = run_here("multitx.evaluate", f"run_dir={halfway}", "device=cpu", "split=val")
    assert evaluated.returncode == 0 and "val" in evaluated.stdout, evaluated.stderr[-2000:]
    assert "UserWarning" not in sampled.stderr + evaluated.stderr, "DCP's one-process note is not the reader's"
    inspected = run_here("multitx.inspect", f"run_dir={halfway}", "prompt=To be", f"out={tmp_path / 'inspect'}",
                         "device=cpu")
    assert inspected.returncode == 0, inspected.stderr[-2000:]
    exported = run_here("multitx.export", f"run_dir={halfway}", "format=pt2", f"out={tmp_path / 'lm.pt2'}")
    assert exported.returncode == 0, exported.stderr[-2000:]


def test_a_damaged_shard_is_named_and_resume_falls_back_to_the_checkpoint_before(corpus, tmp_path):
    run_dir = tmp_path / "run"
    train_in_two_processes(*tiny_charlm_args(corpus, run_dir, "steps=4", "eval_every=2", "device=cpu",
                                             "show_tokens=0", "batch_size=4", "plots=false", FSDP))
    newest = checkpoint.latest(run_dir)
    part = sorted((newest / SHARDS).iterdir())[1]
    part.write_bytes(part.read_bytes()[:-100])
    with pytest.raises(checkpoint.DamagedCheckpoint, match=rf"{SHARDS}/{part.name} is truncated or corrupt"):
        checkpoint.verify(newest)
    found, damaged = checkpoint.latest_intact(run_dir)
    assert found.name == "step_0000002" and len(damaged) == 1


def test_a_rank_killed_under_fsdp_leaves_the_last_checkpoint_intact_and_resumable(corpus, uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    common = ["eval_every=3", "device=cpu", "show_tokens=0", "optimizer=adamw", "plots=false"]
    process = launch(*tiny_charlm_args(corpus, run_dir, "steps=8", "batch_size=4", FSDP, *KILLABLE, "+kill_at=5",
                                       "+kill_rank=1", *common))
    start = time.time()
    _, err = process.communicate(timeout=180)
    assert process.returncode == 1 and "Traceback" not in err, err[-3000:]
    assert time.time() - start < 120
    last = checkpoint.latest(run_dir)
    assert last.name == "step_0000003" and is_sharded(last)
    checkpoint.verify(last)
    train_in_process(*tiny_charlm_args(corpus, run_dir, "steps=8", "batch_size=8", "resume=auto",
                                       "eval_every=4", "device=cpu", "show_tokens=0", "optimizer=adamw",
                                       "plots=false"))
    assert largest_gap(uninterrupted, run_dir) <= 1e-5


def test_the_average_of_the_weights_under_fsdp_is_one_processs_and_resumes(corpus, tmp_path):
    """ema_decay under FSDP: each process averages its rows; the sharded checkpoint holds the average's parts,
    a resumed run goes on from them, and multitx.load gives the whole average."""
    common = ["eval_every=4", "device=cpu", "show_tokens=0", "optimizer=adamw", "plots=false", "ema_decay=0.7"]
    train_in_process(*tiny_charlm_args(corpus, tmp_path / "one", "steps=8", "batch_size=8", *common))
    run_dir = tmp_path / "fsdp"
    train_in_two_processes(*tiny_charlm_args(corpus, run_dir, "steps=4", "batch_size=4", FSDP, *common))
    train_in_two_processes(*tiny_charlm_args(corpus, run_dir, "steps=8", "batch_size=4", FSDP, "resume=auto",
                                             *common))
    assert multitx.load(run_dir, "latest").info["weights"].startswith("averaged")
    assert largest_gap(tmp_path / "one", run_dir) <= 1e-5  # the averaged weights, both
    trained = multitx.load(run_dir, "latest", weights="trained").model.state_dict()
    averaged = weights_of(run_dir)
    assert max((trained[k] - averaged[k]).abs().max().item() for k in trained) > 1e-3
