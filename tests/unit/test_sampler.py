"""The recipe does not drift with the worker count: exact global batches, equal step counts on every rank, the
same number of steps for any world size (so an elastic restart keeps the learning-rate schedule)."""

from collections import Counter

import pytest

from nlpbatch.train.sampler import GlobalBatchSampler


@pytest.mark.parametrize("world", [1, 2, 3, 5, 32])
@pytest.mark.parametrize("n", [1, 7, 100, 301])
def test_every_step_is_one_exact_global_batch(world, n):
    lengths = [(i * 37) % 50 + 1 for i in range(n)]
    for grouped in (lengths, None):
        ranks = [GlobalBatchSampler(n, 32, r, world, seed=3, lengths=grouped) for r in range(world)]
        for sampler in ranks:
            sampler.set_epoch(2)
        per_rank = [list(s) for s in ranks]
        steps = -(-n // 32)
        assert all(len(batches) == steps for batches in per_rank)  # DDP: every rank steps together
        for step in range(steps):
            sizes = [len(batches[step]) for batches in per_rank]
            assert sum(sizes) == 32 and max(sizes) - min(sizes) <= 1  # 3 workers: 11 + 11 + 10
        seen = Counter(i for batches in per_rank for batch in batches for i in batch)
        assert set(seen) == set(range(n))  # every example every epoch; only the last batch wraps around
        assert sum(seen.values()) == steps * 32


def test_order_depends_on_seed_and_epoch_only():
    a, b = GlobalBatchSampler(100, 8, 0, 1, seed=1), GlobalBatchSampler(100, 8, 0, 1, seed=1)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)


def test_batch_smaller_than_world_is_refused():
    with pytest.raises(ValueError, match="cannot be split over 4 workers"):
        GlobalBatchSampler(10, 2, 0, 4, seed=0)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_token_budget_batches_fit_the_budget_and_do_not_depend_on_the_world_size(world):
    n, budget = 301, 640
    lengths = [(i * 37) % 120 + 5 for i in range(n)]
    ranks = [GlobalBatchSampler(n, 32, r, world, seed=3, lengths=lengths, batch_tokens=budget) for r in range(world)]
    for sampler in ranks:
        sampler.set_epoch(1)
    per_rank = [list(s) for s in ranks]
    steps = ranks[0].steps(1)
    assert all(len(batches) == steps == len(s) for batches, s in zip(per_rank, ranks))  # DDP: equal step counts
    global_batches = [[i for batches in per_rank for i in batches[k]] for k in range(steps)]
    for batch, parts in zip(global_batches, zip(*per_rank)):
        assert len(batch) * max(lengths[i] for i in batch) <= budget or len(batch) == world
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    sizes = [len(b) for b in global_batches]
    assert max(sizes) > 2 * min(sizes)  # short sentences make big batches, long ones small
    assert sorted(i for b in global_batches for i in b) == list(range(n))  # every example once an epoch
    single = GlobalBatchSampler(n, 32, 0, 1, seed=3, lengths=lengths, batch_tokens=budget)
    single.set_epoch(1)
    assert [sorted(b) for b in single] == [sorted(b) for b in global_batches]  # same steps for any world size
    single.set_epoch(2)
    assert [sorted(b) for b in single] != [sorted(b) for b in global_batches]  # reshuffled every epoch


def test_token_budget_needs_lengths():
    with pytest.raises(ValueError, match="need the example lengths"):
        GlobalBatchSampler(10, 4, 0, 1, seed=0, batch_tokens=512)
