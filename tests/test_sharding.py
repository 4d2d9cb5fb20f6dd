"""Sharding arithmetic with fake world sizes: no files, no processes."""

import numpy as np
import pytest

from hpcgan.data.sharding import ShardPlan, indices


def _global_batch(plan: ShardPlan, b: int, world: int) -> np.ndarray:
    return np.concatenate([indices(plan.runs(b, r, world)) for r in range(world)])


@pytest.mark.parametrize("world", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("n,segment", [(1000, 8), (1797, 8), (1001, 37), (500, 1)])
def test_epoch_covers_each_sample_once(world, n, segment):
    batch = 84 if 84 % world == 0 else 7 * world
    plan = ShardPlan(n, batch, segment, seed=5)
    seen = np.concatenate([_global_batch(plan, b, world) for b in range(plan.batches_per_epoch)])
    assert len(seen) == plan.batches_per_epoch * batch
    assert len(np.unique(seen)) == len(seen)  # no duplicates within an epoch
    assert seen.min() >= 0 and seen.max() < n


@pytest.mark.parametrize("world", [2, 3, 4, 7])
def test_global_batches_do_not_depend_on_world_size(world):
    plan = ShardPlan(1001, 84, 8, seed=3)
    for b in range(0, 3 * plan.batches_per_epoch, 5):  # across several epochs
        ref = _global_batch(plan, b, 1)
        assert np.array_equal(_global_batch(plan, b, world), ref)


def test_ranks_split_batch_into_equal_disjoint_parts():
    plan = ShardPlan(4096, 64, 8, seed=0)
    parts = [indices(plan.runs(10, r, 4)) for r in range(4)]
    assert [len(p) for p in parts] == [16] * 4
    assert len(np.unique(np.concatenate(parts))) == 64


def test_reads_are_few_contiguous_runs():
    plan = ShardPlan(100_000, 64, 8, seed=0)
    for r in range(2):
        runs = plan.runs(123, r, 2)
        assert len(runs) <= 32 // 8 + 1
        assert all(b > a for a, b in runs)


def test_epochs_are_shuffled_differently_and_seeds_matter():
    plan = ShardPlan(1000, 50, 10, seed=0)
    e0 = _global_batch(plan, 0, 1)
    e1 = _global_batch(plan, plan.batches_per_epoch, 1)
    other = _global_batch(ShardPlan(1000, 50, 10, seed=1), 0, 1)
    assert not np.array_equal(e0, e1)
    assert not np.array_equal(e0, other)


def test_rejects_too_small_dataset_and_indivisible_batch():
    with pytest.raises(ValueError, match="fewer than one global batch"):
        ShardPlan(10, 64, 8, 0)
    with pytest.raises(ValueError, match="not divisible"):
        ShardPlan(100, 64, 8, 0).runs(0, 0, 3)
