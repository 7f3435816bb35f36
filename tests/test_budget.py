"""Benchmarks fit a run into a time budget by cutting its steps, never by changing anything else."""

from multitx.benchmarks.budget import fit_to_budget
from tests.conftest import tiny_charlm_args
from tests.helpers_vision import write_imagefolder
from tests.test_bad_inputs import image_args
from tests.test_epochs import without_length


def test_a_run_that_fits_is_left_as_it_is(tmp_path, small_corpus):
    argv = tiny_charlm_args(small_corpus, tmp_path / "run", "steps=20", "eval_every=10")
    cfg = fit_to_budget(argv, seconds=1e6)
    assert (cfg.steps, cfg.warmup_steps, cfg.eval_every) == (20, 5, 10)


def test_a_run_too_long_for_the_budget_gets_fewer_steps_and_the_same_evaluations(tmp_path, small_corpus):
    argv = tiny_charlm_args(small_corpus, tmp_path / "run", "steps=1000000", "eval_every=250000",
                            "warmup_steps=100000")
    cfg = fit_to_budget(argv, seconds=5.0)  # far less than a million steps of even a tiny model
    assert 1 <= cfg.steps < 1_000_000
    assert cfg.warmup_steps == max(1, round(100_000 * cfg.steps / 1_000_000))
    assert cfg.eval_every * 4 >= cfg.steps > cfg.eval_every * 3  # four evaluations, the last at the end
    assert cfg.model.trunk.dim == 32 and cfg.batch_size == 8  # nothing else changes


def test_a_recipe_in_epochs_is_worked_out_then_cut_to_steps(tmp_path):
    """16 images, 2 held out: 14 // 4 = 3 steps an epoch. A thousand epochs do not fit in 3 s, so the
    run is cut to steps, its epochs set aside; a budget that holds them keeps the epochs' steps."""
    images = write_imagefolder(tmp_path / "images", per_class=8)
    argv = without_length(image_args(images, tmp_path / "run", "epochs=1000", "warmup_epochs=100",
                                     "eval_every_epochs=250"))
    cut = fit_to_budget(argv, seconds=3.0)
    assert 1 <= cut.steps < 3000 and (cut.epochs, cut.warmup_epochs, cut.eval_every_epochs) == (None, None, None)
    assert cut.eval_every * 4 >= cut.steps > cut.eval_every * 3
    held = fit_to_budget(without_length(image_args(images, tmp_path / "run", "epochs=2")), seconds=1e6)
    assert (held.epochs, held.steps) == (2, 6)
