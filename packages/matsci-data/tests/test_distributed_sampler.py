import pytest
from torch.utils.data.distributed import DistributedSampler

from matsci.data import UnpaddedDistributedSampler


@pytest.mark.parametrize(("size", "world"), [(9, 2), (10, 2), (7, 3), (3, 3)])
def test_every_index_once_across_ranks(size: int, world: int) -> None:
    shards = [list(UnpaddedDistributedSampler(range(size), world, rank)) for rank in range(world)]
    assert sorted(i for shard in shards for i in shard) == list(range(size))
    assert [len(UnpaddedDistributedSampler(range(size), world, r)) for r in range(world)] == [
        len(shard) for shard in shards
    ]
    # Lightning's default pads: with an uneven size some index comes twice.
    padded = [list(DistributedSampler(range(size), world, r, shuffle=False)) for r in range(world)]
    assert sum(len(shard) for shard in padded) == -(-size // world) * world


def test_one_process_without_a_process_group() -> None:
    sampler = UnpaddedDistributedSampler(range(4))
    assert (sampler.num_replicas, sampler.rank, list(sampler)) == (1, 0, [0, 1, 2, 3])
    assert isinstance(sampler, DistributedSampler)  # so Lightning keeps it as given


def test_a_rank_without_structures_is_an_error() -> None:
    with pytest.raises(ValueError, match="2 structures for 3 ranks leave rank 2 without any"):
        list(UnpaddedDistributedSampler(range(2), num_replicas=3, rank=2))


def test_rank_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"rank 2 is not in \[0, 2\)"):
        UnpaddedDistributedSampler(range(4), num_replicas=2, rank=2)
