from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data.distributed import DistributedSampler

from matsci.data._mixture import DatasetMixture, MixtureSampler, allocate_shares

SIZES = [10, 1_000, 100_000]


def _sources(draws: list[int], sizes: list[int]) -> list[int]:
    """How many draws fell into each source of the concatenation."""
    edges = np.cumsum(sizes)
    return np.bincount(np.searchsorted(edges, draws, side="right"), minlength=len(sizes)).tolist()


# -- probabilities and counts ----------------------------------------------------------------------


def test_temperature_formula() -> None:
    for temperature in (0.5, 1.0, 2.0, 5.0):
        expected = np.array(SIZES, dtype=float) ** (1 / temperature)
        expected /= expected.sum()
        mixture = DatasetMixture(SIZES, temperature=temperature)
        np.testing.assert_allclose(mixture.probabilities, expected, rtol=1e-12)
    # T = 2: square roots 3.1623, 31.623, 316.23 of a total 351.01.
    np.testing.assert_allclose(
        DatasetMixture(SIZES, temperature=2.0).probabilities,
        [0.0090090, 0.0900901, 0.9009009],
        rtol=1e-5,
    )


def test_temperature_limits() -> None:
    np.testing.assert_allclose(DatasetMixture(SIZES).probabilities, np.array(SIZES) / 101_010)
    np.testing.assert_allclose(DatasetMixture(SIZES, temperature=float("inf")).probabilities,
                               [1 / 3] * 3)  # fmt: skip
    near = DatasetMixture(SIZES, temperature=1e6).probabilities
    np.testing.assert_allclose(near, [1 / 3] * 3, rtol=1e-4)
    # Tiny temperatures: all weight on the largest source, without overflow.
    np.testing.assert_allclose(DatasetMixture(SIZES, temperature=1e-3).probabilities, [0, 0, 1])


def test_fixed_weights_and_balanced() -> None:
    mixture = DatasetMixture([5, 7, 9], weights=[1.0, 3.0, 0.0], num_samples=10)
    np.testing.assert_allclose(mixture.probabilities, [0.25, 0.75, 0.0])
    assert mixture.counts().tolist() == [3, 7, 0]  # 2.5 and 7.5: the tie goes to the first
    balanced = DatasetMixture([5, 7, 9], weights="balanced", num_samples=30)
    assert balanced.counts().tolist() == [10, 10, 10]
    assert balanced.counts(31).tolist() == [11, 10, 10]
    assert mixture.offsets == (0, 5, 12)


def test_counts_by_largest_remainder() -> None:
    assert allocate_shares(10, np.array([1.0, 1.0, 1.0])).tolist() == [4, 3, 3]
    assert allocate_shares(7, np.array([0.5, 0.3, 0.2])).tolist() == [4, 2, 1]  # 3.5, 2.1, 1.4
    assert allocate_shares(0, np.array([0, 0])).tolist() == [0, 0]
    mixture = DatasetMixture(SIZES, temperature=3.0, num_samples=12_345)
    assert mixture.counts().sum() == 12_345
    np.testing.assert_allclose(mixture.counts() / 12_345, mixture.probabilities, atol=1 / 12_345)


# -- the sampler -----------------------------------------------------------------------------------


def test_the_default_is_every_structure_once() -> None:
    sampler = MixtureSampler(DatasetMixture([3, 5, 4]), seed=1)
    assert sorted(sampler) == list(range(12))
    assert len(sampler) == 12


def test_each_epoch_draws_the_exact_counts() -> None:
    mixture = DatasetMixture([20, 500, 3000], temperature=2.0, num_samples=400)
    expected = mixture.counts().tolist()
    sampler = MixtureSampler(mixture, seed=3)
    totals = Counter[int]()
    for epoch in range(30):
        sampler.set_epoch(epoch)
        draws = list(sampler)
        assert len(draws) == 400
        assert _sources(draws, [20, 500, 3000]) == expected
        totals.update(draws)
        small = [i for i in draws if i < 20]
        # The 20-structure source is drawn more often than its size: each k or k + 1 times.
        assert set(Counter(small).values()) <= {expected[0] // 20, expected[0] // 20 + 1}
        middle = [i for i in draws if 20 <= i < 520]
        assert len(set(middle)) == len(middle)  # drawn less often than its size: no repeats
    # Over many epochs each structure of a source is drawn about equally often.
    middle_counts = [totals[i] for i in range(20, 520)]
    assert np.mean(middle_counts) == pytest.approx(30 * expected[1] / 500)


def test_balanced_sources_are_drawn_equally_often() -> None:
    mixture = DatasetMixture([7, 70, 700], weights="balanced", num_samples=300)
    sampler = MixtureSampler(mixture, seed=0)
    for epoch in range(5):
        sampler.set_epoch(epoch)
        assert _sources(list(sampler), [7, 70, 700]) == [100, 100, 100]


def test_draws_depend_only_on_seed_and_epoch() -> None:
    mixture = DatasetMixture([10, 50], weights=[1, 1], num_samples=40)
    state = torch.get_rng_state(), np.random.get_state()[1].copy()  # noqa: NPY002
    first = list(MixtureSampler(mixture, seed=5))
    again = MixtureSampler(mixture, seed=5)
    assert list(again) == first
    again.set_epoch(1)
    assert list(again) != first
    assert list(MixtureSampler(mixture, seed=6)) != first
    # Nothing was drawn from the global generators.
    assert torch.equal(torch.get_rng_state(), state[0])
    assert np.array_equal(np.random.get_state()[1], state[1])  # noqa: NPY002


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_share_the_epoch_equally(world: int) -> None:
    mixture = DatasetMixture([11, 40], weights="balanced", num_samples=50)
    ranks = [MixtureSampler(mixture, seed=2, num_replicas=world, rank=r) for r in range(world)]
    per_rank = [list(sampler) for sampler in ranks]
    total = -(-50 // world) * world
    assert [len(draws) for draws in per_rank] == [total // world] * world
    assert [len(sampler) for sampler in ranks] == [total // world] * world
    joined = [i for draws in per_rank for i in draws]
    assert _sources(joined, [11, 40]) == mixture.counts(total).tolist()
    # The ranks hold disjoint positions of one draw: together, source 1 (40 structures drawn
    # 25 times) repeats nothing.
    source1 = [i for i in joined if i >= 11]
    assert len(set(source1)) == len(source1)
    assert isinstance(ranks[0], DistributedSampler)  # Lightning uses it as given under DDP


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"sizes": []}, ValueError, "sizes is empty"),
        ({"sizes": [3, 0]}, ValueError, r"sizes\[1\]: expected a positive int, got 0"),
        ({"sizes": [3, 2.5]}, TypeError, r"sizes\[1\]"),
        ({"weights": [1.0]}, ValueError, "1 weights for 2 sources"),
        ({"weights": [1.0, -1.0]}, ValueError, "finite non-negative weights"),
        ({"weights": [0.0, 0.0]}, ValueError, "not all zero"),
        ({"weights": "uniform"}, ValueError, "expected 'balanced' or one weight per source"),
        ({"temperature": 0.0}, ValueError, "expected T > 0"),
        ({"temperature": float("nan")}, ValueError, "expected T > 0"),
        ({"weights": "balanced", "temperature": 2.0}, ValueError, "not both"),
        ({"num_samples": 0}, ValueError, "num_samples: expected a positive int"),
    ],
)
def test_bad_mixtures(kwargs: dict, error: type, message: str) -> None:
    arguments = {"sizes": [3, 4], **kwargs}
    sizes = arguments.pop("sizes")
    with pytest.raises(error, match=message):
        DatasetMixture(sizes, **arguments)


def test_bad_sampler_arguments() -> None:
    with pytest.raises(TypeError, match="expected a DatasetMixture, got list"):
        MixtureSampler([3, 4])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"rank 2 is not in \[0, num_replicas=2\)"):
        MixtureSampler(DatasetMixture([3]), num_replicas=2, rank=2)
