"""The one batch sampler (multitx/data/sampler.py): global batches sliced by rank, exact resume from
plain ints, with and without replacement, epochs, and resuming on another number of processes."""

import itertools

import pytest
import torch

from multitx.data.sampler import BatchSampler
from multitx.errors import UserError


def draw(sampler: BatchSampler, k: int) -> list:
    return [next(sampler) for _ in range(k)]


def ranks(n: int, batch_size: int, world_size: int, **kwargs) -> list[BatchSampler]:
    return [BatchSampler(n, batch_size, rank=r, world_size=world_size, **kwargs) for r in range(world_size)]


@pytest.mark.parametrize("replacement", [False, True])
def test_processes_keep_their_slices_of_one_global_batch(replacement):
    """Side by side, three processes' batches of 2 are one process's batch of 6; their batches share a seed."""
    single = BatchSampler(20, 6, seed=7, replacement=replacement)
    three = ranks(20, 2, 3, seed=7, replacement=replacement)
    for _ in range(10):  # across epochs: 3 global batches of 6 from 20 items each
        whole, parts = next(single), [next(r) for r in three]
        assert whole.indices.shape == (6,) and all(p.indices.shape == (2,) for p in parts)
        assert torch.equal(whole.indices, torch.cat([p.indices for p in parts]))
        assert {p.seed for p in parts} == {whole.seed}


def test_without_replacement_each_epoch_is_a_permutation_cut_into_whole_batches():
    sampler = BatchSampler(23, 5, seed=1)  # 4 batches an epoch; 3 items left out each epoch
    epochs = []
    for _ in range(3):
        epochs.append(torch.cat([b.indices for b in draw(sampler, 4)]))
        assert sampler.state_dict()["position"] == 0, "an epoch ends after its last whole batch"
    for seen in epochs:
        assert len(set(seen.tolist())) == 20 and 0 <= seen.min() and seen.max() < 23  # no repeats
    assert not torch.equal(epochs[0], epochs[1]), "every epoch has an order of its own"
    assert sampler.state_dict() == {"seed": 1, "epoch": 3, "position": 0}


def test_with_replacement_draws_afresh_and_never_ends_an_epoch():
    sampler = BatchSampler(5, 4, seed=2, replacement=True)
    seen = torch.stack([b.indices for b in draw(sampler, 50)])  # (50, 4)
    assert 0 <= seen.min() and seen.max() < 5 and set(seen.flatten().tolist()) == set(range(5))
    assert any(len(set(row.tolist())) < 4 for row in seen), "an item can come twice in one batch"
    assert sampler.state_dict() == {"seed": 2, "epoch": 0, "position": 50}


@pytest.mark.parametrize("replacement", [False, True])
def test_resuming_from_a_state_dict_gives_the_same_batches(replacement):
    first = BatchSampler(30, 4, seed=3, replacement=replacement)  # 7 batches an epoch without replacement
    draw(first, 9)
    state = first.state_dict()
    assert all(type(v) is int for v in state.values()), "plain ints: any checkpoint format holds them"
    expected = draw(first, 12)  # across an epoch boundary
    resumed = BatchSampler(30, 4, seed=999, replacement=replacement)  # the seed comes from the state
    resumed.load_state_dict(state)
    for want, got in zip(expected, draw(resumed, 12), strict=True):
        assert torch.equal(want.indices, got.indices) and want.seed == got.seed
    fresh = BatchSampler(30, 4, seed=3, replacement=replacement)
    assert not torch.equal(expected[0].indices, next(fresh).indices), "the state, not the start, was resumed"


@pytest.mark.parametrize("replacement", [False, True])
@pytest.mark.parametrize("before, after", [(1, 2), (2, 1), (2, 4)])
def test_another_world_size_with_the_same_global_batch_continues_in_the_same_place(replacement, before, after):
    """Saved by rank 0 of `before` processes, loaded by each of `after`: together they go on with the
    very global batches the uninterrupted run draws."""
    global_batch, n = 8, 36
    reference = BatchSampler(n, global_batch, seed=4, replacement=replacement)
    expected = [b.indices for b in draw(reference, 14)]
    old = ranks(n, global_batch // before, before, seed=4, replacement=replacement)
    for _ in range(5):
        [next(r) for r in old]
    new = ranks(n, global_batch // after, after, seed=0, replacement=replacement)
    for r in new:
        r.load_state_dict(old[0].state_dict())
    for want in expected[5:]:
        assert torch.equal(want, torch.cat([next(r).indices for r in new]))


def test_batch_seeds_differ_from_batch_to_batch_and_from_run_to_run():
    seeds = [b.seed for b in draw(BatchSampler(40, 4, seed=5), 25)]
    assert len(set(seeds)) == 25 and all(0 <= s < 2**63 for s in seeds)
    assert seeds != [b.seed for b in draw(BatchSampler(40, 4, seed=6), 25)]


def test_a_state_past_the_end_of_an_epoch_starts_the_next_one():
    """Saved with more data or a smaller global batch, the position may not exist here: begin the next epoch."""
    sampler = BatchSampler(12, 4, seed=8)  # 3 batches an epoch
    sampler.load_state_dict({"seed": 8, "epoch": 2, "position": 5})
    assert sampler.state_dict() == {"seed": 8, "epoch": 3, "position": 0}
    reference = BatchSampler(12, 4, seed=8)
    draw(reference, 9)
    assert torch.equal(next(sampler).indices, next(reference).indices)


def test_advance_moves_on_without_drawing():
    """What an iterator that makes its batches ahead (a DataLoader) uses to keep the handed-out position."""
    drawn, moved = BatchSampler(10, 3, seed=9), BatchSampler(10, 3, seed=9)
    for _ in itertools.repeat(None, 7):
        next(drawn)
        moved.advance()
    assert moved.state_dict() == drawn.state_dict() == {"seed": 9, "epoch": 2, "position": 1}


def test_too_few_items_or_a_wrong_rank_are_refused():
    with pytest.raises(ValueError, match="cannot fill one global batch of 8"):
        BatchSampler(7, 4, world_size=2)
    with pytest.raises(ValueError, match="rank 2 is not one of 2 processes"):
        BatchSampler(40, 4, rank=2, world_size=2)


def test_a_data_state_from_the_old_samplers_is_one_clear_error():
    with pytest.raises(UserError, match="from an older multitx"):
        BatchSampler(40, 4).load_state_dict({"generator": torch.Generator().get_state()})
