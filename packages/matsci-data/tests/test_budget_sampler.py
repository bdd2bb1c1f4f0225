import itertools
import math

import numpy as np
import pytest
import torch
from ase.build import bulk
from torch.utils.data.distributed import DistributedSampler

from matsci.data._budget_sampler import BudgetBatchSampler, _bucket_ends, edge_counts
from matsci.data._convert import atoms_to_data
from matsci.data._mixture import DatasetMixture


def _sizes(count: int, seed: int) -> np.ndarray:
    """Sizes as a mixed data set has them: many small cells, some slabs of hundreds."""
    rng = np.random.default_rng(seed)
    small = rng.integers(1, 40, size=count)
    large = rng.integers(100, 400, size=count)
    return np.where(rng.random(count) < 0.8, small, large)


def _flat(batches: list[list[int]]) -> list[int]:
    return [i for batch in batches for i in batch]


def test_hand_computed_buckets_and_batches() -> None:
    # Capacities under 800 atoms: 4 atoms -> 200, 400 -> 2, 380 -> 2, 300 -> 2, 500 -> 1.
    sampler = BudgetBatchSampler([4, 4, 4, 4, 4, 400, 380, 300, 500], max_atoms=800)
    assert sampler.capacities == (200, 2, 1)
    assert sampler.bucket_sizes == (5, 3, 1)
    assert len(sampler) == 1 + 2 + 1
    sampler = BudgetBatchSampler([4, 4, 4, 4, 4, 400, 380, 300, 500], max_atoms=800,
                                 max_structures=2, shuffle=False)  # fmt: skip
    assert sampler.capacities == (2, 1)
    assert list(sampler) == [[0, 1], [2, 3], [4, 5], [6, 7], [8]]


def test_edge_budget_and_structure_cap() -> None:
    atoms = [2, 2, 2, 2]
    edges = [10, 40, 0, 25]
    sampler = BudgetBatchSampler(atoms, edge_counts=edges, max_edges=50, shuffle=False)
    # Capacities 5, 1, unbounded (no edges: the epoch's 4 structures) and 2. Fewest batches
    # (3) with fewest buckets (2): {0, 2} with capacity 4, {3, 1} with capacity 1.
    assert sampler.capacities == (4, 1)
    assert list(sampler) == [[0, 2], [3], [1]]
    both = BudgetBatchSampler(atoms, edge_counts=edges, max_edges=50, max_atoms=4)
    assert max(len(batch) for batch in both) == 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_batch_fits_and_every_structure_comes_once(seed: int) -> None:
    atoms = _sizes(300, seed)
    edges = atoms * np.random.default_rng(seed).integers(5, 30, size=len(atoms))
    sampler = BudgetBatchSampler(atoms, edge_counts=edges, max_atoms=1000, max_edges=12_000,
                                 max_structures=64, seed=seed)  # fmt: skip
    for epoch in range(4):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert sorted(_flat(batches)) == list(range(len(atoms)))
        assert max(atoms[batch].sum() for batch in batches) <= 1000
        assert max(edges[batch].sum() for batch in batches) <= 12_000
        assert max(len(batch) for batch in batches) <= 64
        assert len(batches) == len(sampler)


def test_the_number_of_batches_never_changes() -> None:
    sampler = BudgetBatchSampler(_sizes(500, 3), max_atoms=2000, seed=7)
    counts, orders = set(), set()
    for epoch in range(20):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        counts.add(len(batches))
        orders.add(tuple(map(tuple, batches)))
    assert counts == {len(sampler)}
    assert len(orders) == 20  # and the batches do change


def test_order_depends_only_on_seed_and_epoch() -> None:
    atoms = _sizes(200, 0)
    state = torch.get_rng_state(), np.random.get_state()[1].copy()  # noqa: NPY002
    first = list(BudgetBatchSampler(atoms, max_atoms=800, seed=3))
    again = BudgetBatchSampler(atoms, max_atoms=800, seed=3)
    assert list(again) == first
    again.set_epoch(1)
    assert again.epoch == again.sampler.epoch == 1
    assert list(again) != first
    again.set_epoch(0)
    assert list(again) == first
    assert list(BudgetBatchSampler(atoms, max_atoms=800, seed=4)) != first
    # Nothing was drawn from the global generators.
    assert torch.equal(torch.get_rng_state(), state[0])
    assert np.array_equal(np.random.get_state()[1], state[1])  # noqa: NPY002


def test_without_shuffle_batches_come_bucket_by_bucket_in_index_order() -> None:
    atoms = [300, 5, 5, 300, 5]
    sampler = BudgetBatchSampler(atoms, max_atoms=600, shuffle=False)
    assert list(sampler) == [[1, 2, 4], [0, 3]]
    sampler.set_epoch(5)
    assert list(sampler) == [[1, 2, 4], [0, 3]]


def _brute_force_batches(capacity: list[int], draws: list[int]) -> int:
    best = math.inf
    levels = len(capacity)
    for cuts in itertools.product([False, True], repeat=levels - 1):
        ends = [j + 1 for j, cut in enumerate(cuts) if cut] + [levels]
        starts = [0, *ends[:-1]]
        batches = sum(
            math.ceil(sum(draws[s:e]) / capacity[e - 1]) for s, e in zip(starts, ends, strict=True)
        )
        best = min(best, batches)
    return int(best)


@pytest.mark.parametrize("seed", range(6))
def test_bucket_boundaries_give_the_fewest_batches(seed: int) -> None:
    rng = np.random.default_rng(seed)
    capacity = np.sort(rng.choice(np.arange(1, 60), size=7, replace=False))[::-1].copy()
    draws = rng.integers(0, 40, size=7)
    ends = _bucket_ends(capacity.astype(np.int64), draws.astype(np.int64))
    starts = [0, *ends[:-1]]
    batches = sum(
        math.ceil(draws[s:e].sum() / capacity[e - 1]) for s, e in zip(starts, ends, strict=True)
    )
    assert batches == _brute_force_batches(capacity.tolist(), draws.tolist())


def test_fewest_buckets_among_the_best_cuts() -> None:
    # 5 structures of capacity 10 and 5 of capacity 5: one bucket (10 / 5 = 2 batches) or two
    # (1 + 1 batches): as many batches, one bucket wins.
    capacity = np.array([10, 5], dtype=np.int64)
    assert _bucket_ends(capacity, np.array([5, 5], dtype=np.int64)) == [2]
    assert _bucket_ends(capacity, np.array([10, 10], dtype=np.int64)) == [1, 2]  # 3 < 4
    # 20 of capacity 10 and 1 of capacity 1: apart 2 + 1 batches, together 21.
    capacity = np.array([10, 1], dtype=np.int64)
    assert _bucket_ends(capacity, np.array([20, 1], dtype=np.int64)) == [1, 2]


# -- memory bound: the counts behind benchmarks/budget_batching.py ---------------------------------


def test_budget_holds_where_a_fixed_batch_size_does_not() -> None:
    rng = np.random.default_rng(0)
    atoms = np.where(rng.random(400) < 0.9, 4, 400)  # 4-atom cells beside 400-atom slabs
    budget = 1600
    fixed = [rng.permutation(len(atoms))[start : start + 16] for start in range(0, len(atoms), 16)]
    assert max(atoms[batch].sum() for batch in fixed) > budget
    sampler = BudgetBatchSampler(atoms, max_atoms=budget, seed=0)
    for epoch in range(5):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert max(atoms[batch].sum() for batch in batches) <= budget
        assert sorted(_flat(batches)) == list(range(len(atoms)))


# -- DDP -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("world", [2, 3, 4])
def test_ranks_get_equal_counts_and_cover_the_epoch_once(world: int) -> None:
    atoms = _sizes(101, world)
    for epoch in range(3):
        per_rank = []
        for rank in range(world):
            sampler = BudgetBatchSampler(atoms, max_atoms=700, seed=1, num_replicas=world,
                                         rank=rank)  # fmt: skip
            sampler.set_epoch(epoch)
            per_rank.append(list(sampler))
            assert len(per_rank[-1]) == len(sampler)
        assert len({len(batches) for batches in per_rank}) == 1
        seen = [i for batches in per_rank for i in _flat(batches)]
        assert sorted(seen) == list(range(len(atoms)))  # each structure once, none repeated


def test_batches_are_split_until_the_count_divides_by_the_world() -> None:
    atoms = [10] * 9  # one batch of 9 under max_atoms=100
    ranks = [BudgetBatchSampler(atoms, max_atoms=100, num_replicas=4, rank=r) for r in range(4)]
    batches = [list(sampler) for sampler in ranks]
    assert [len(b) for b in batches] == [1, 1, 1, 1]
    assert sorted(len(b[0]) for b in batches) == [2, 2, 2, 3]
    assert sorted(_flat([b[0] for b in batches])) == list(range(9))


def test_repeats_only_when_nothing_is_left_to_split() -> None:
    atoms = [100] * 5  # every batch a single structure; 2 ranks need 6 batches
    ranks = [BudgetBatchSampler(atoms, max_atoms=150, num_replicas=2, rank=r) for r in (0, 1)]
    seen = [i for sampler in ranks for i in _flat(list(sampler))]
    assert [len(sampler) for sampler in ranks] == [3, 3]
    assert set(seen) == set(range(5))
    assert len(seen) == 6


def test_uneven_batches_for_evaluation_never_repeat() -> None:
    atoms = [100] * 5  # five single-structure batches over two ranks: 3 and 2
    ranks = [
        BudgetBatchSampler(atoms, max_atoms=150, num_replicas=2, rank=r, even_batches=False)
        for r in (0, 1)
    ]
    assert [len(sampler) for sampler in ranks] == [3, 2]
    assert sorted(i for sampler in ranks for i in _flat(list(sampler))) == list(range(5))
    # One batch of 9 over 4 ranks: split until every rank has one, as for training.
    ranks = [
        BudgetBatchSampler([10] * 9, max_atoms=100, num_replicas=4, rank=r, even_batches=False)
        for r in range(4)
    ]
    assert [len(sampler) for sampler in ranks] == [1, 1, 1, 1]
    assert sorted(i for sampler in ranks for i in _flat(list(sampler))) == list(range(9))


def test_fewer_structures_than_ranks() -> None:
    with pytest.raises(ValueError, match="2 structures per epoch for 3 ranks"):
        BudgetBatchSampler([1, 2], max_atoms=10, num_replicas=3, rank=0)
    with pytest.raises(ValueError, match=r"rank 3 is not in \[0, num_replicas=3\)"):
        BudgetBatchSampler([1, 2, 3], max_atoms=10, num_replicas=3, rank=3)


def test_its_sampler_is_a_distributed_sampler_that_sets_the_epoch() -> None:
    sampler = BudgetBatchSampler(_sizes(50, 0), max_atoms=500, num_replicas=2, rank=1)
    assert isinstance(sampler.sampler, DistributedSampler)
    sampler.sampler.set_epoch(3)  # what Lightning calls before each epoch
    assert sampler.epoch == 3
    assert list(sampler.sampler) == _flat(list(sampler))
    assert len(sampler.sampler) == len(_flat(list(sampler)))
    assert (sampler.sampler.num_replicas, sampler.sampler.rank) == (2, 1)


# -- with a mixture --------------------------------------------------------------------------------


def test_a_mixture_keeps_the_batch_count_and_the_source_counts() -> None:
    small = np.full(300, 4)
    large = np.random.default_rng(0).integers(100, 400, size=40)
    atoms = np.concatenate([small, large])
    mixture = DatasetMixture([300, 40], weights="balanced", num_samples=200)
    sampler = BudgetBatchSampler(atoms, max_atoms=800, mixture=mixture, seed=2)
    assert sum(sampler.bucket_sizes) == 200
    counts, draws = set(), []
    for epoch in range(10):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        counts.add(len(batches))
        flat = np.array(_flat(batches))
        assert len(flat) == 200
        assert (flat < 300).sum() == (flat >= 300).sum() == 100  # balanced, exactly
        assert len(set(flat[flat < 300])) == 100  # 300 structures drawn 100 times: no repeats
        assert max(atoms[batch].sum() for batch in batches) <= 800
        draws.append(flat)
    assert counts == {len(sampler)}
    assert len({tuple(sorted(d)) for d in draws}) == 10  # new structures each epoch


def test_a_mixture_must_cover_the_atom_counts() -> None:
    with pytest.raises(ValueError, match=r"sources hold 30 structures \(sizes \[10, 20\]\)"):
        BudgetBatchSampler([1] * 29, max_atoms=10, mixture=DatasetMixture([10, 20]))


# -- bad input -------------------------------------------------------------------------------------


def test_a_structure_over_the_budget_is_named() -> None:
    with pytest.raises(ValueError, match="structure 2 has 900 atoms, more than max_atoms=800"):
        BudgetBatchSampler([4, 400, 900, 1000], max_atoms=800)
    with pytest.raises(ValueError, match="structure 1 has 60 edges, more than max_edges=50"):
        BudgetBatchSampler([4, 4], edge_counts=[10, 60], max_edges=50)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({}, ValueError, "give max_atoms and/or max_edges"),
        ({"max_edges": 10}, ValueError, "edge_counts and max_edges go together"),
        ({"max_atoms": 10, "edge_counts": [1, 2]}, ValueError, "go together"),
        ({"max_atoms": 10, "edge_counts": [1], "max_edges": 5}, ValueError, "1 edge_counts for 2"),
        ({"max_atoms": 0}, ValueError, "max_atoms: expected a positive int"),
        ({"max_atoms": 2.5}, TypeError, "max_atoms: expected a positive int"),
        ({"max_atoms": 10, "max_structures": True}, TypeError, "max_structures"),
    ],
)
def test_bad_arguments(kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        BudgetBatchSampler([3, 4], **kwargs)


@pytest.mark.parametrize(
    ("atoms", "error", "message"),
    [
        ([3, 0, 5], ValueError, "structure 1 has 0; expected at least 1"),
        ([], ValueError, "non-empty 1-D"),
        ([[1, 2]], ValueError, "non-empty 1-D"),
        ([1.5, 2.0], TypeError, "expected integers, got dtype float64"),
    ],
)
def test_bad_atom_counts(atoms: list, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        BudgetBatchSampler(atoms, max_atoms=10)


# -- edge counts -----------------------------------------------------------------------------------


def test_edge_counts_builds_the_radius_graphs_once() -> None:
    copper = atoms_to_data(bulk("Cu", "fcc", a=3.6))  # 12 neighbours within 3 Å
    two = atoms_to_data(bulk("Cu", "fcc", a=3.6).repeat((2, 1, 1)))
    assert edge_counts([copper, two], cutoff=3.0).tolist() == [12, 24]
    assert not hasattr(copper, "edge_index") or copper.edge_index is None  # not written back
    with pytest.raises(ValueError, match="structure 0 has no edge_index"):
        edge_counts([copper])
