import pytest
import torch
from lightning.pytorch.utilities.data import _update_dataloader
from torch.utils.data.distributed import DistributedSampler
from torch_geometric.data import Data

from matsci.data import ResumableDataLoader, SeededRandomSampler


def _structures(count: int) -> list[Data]:
    return [Data(pos=torch.zeros(1, 3), number=torch.tensor([i])) for i in range(count)]


def _order(loader: ResumableDataLoader) -> list[list[int]]:
    return [batch.number.tolist() for batch in loader]


def test_order_depends_only_on_seed_and_epoch() -> None:
    torch.manual_seed(1)
    first = _order(ResumableDataLoader(_structures(10), batch_size=4, shuffle=True, seed=3))
    torch.manual_seed(2)  # the global random state plays no part
    again = ResumableDataLoader(_structures(10), batch_size=4, shuffle=True, seed=3)
    assert _order(again) == first
    assert sorted(i for batch in first for i in batch) == list(range(10))
    again.sampler.set_epoch(1)
    assert _order(again) != first
    other_seed = ResumableDataLoader(_structures(10), batch_size=4, shuffle=True, seed=4)
    assert _order(other_seed) != first


def test_sampler_draws_nothing_from_the_global_generator() -> None:
    state = torch.get_rng_state()
    list(SeededRandomSampler(range(100), seed=0))
    list(ResumableDataLoader(_structures(8), batch_size=4, shuffle=True))
    assert torch.equal(torch.get_rng_state(), state)


def test_resume_mid_epoch_skips_the_batches_already_seen() -> None:
    loader = ResumableDataLoader(_structures(10), batch_size=3, shuffle=True, seed=0)
    loader.sampler.set_epoch(2)
    full = _order(loader)  # batches of 3, 3, 3, 1
    iterator = iter(loader)
    for _ in range(3):
        next(iterator)
    assert loader.state_dict() == {"epoch": 2, "batches": 3}
    resumed = ResumableDataLoader(_structures(10), batch_size=3, shuffle=True, seed=0)
    resumed.load_state_dict(loader.state_dict())
    assert resumed.sampler.epoch == 2
    assert _order(resumed) == full[3:]
    assert len(resumed) == 4  # the length stays the epoch's: Lightning counts from the state
    assert _order(resumed) == full  # the skip applies to one pass only


def test_state_after_the_last_batch_is_the_next_epoch() -> None:
    loader = ResumableDataLoader(_structures(6), batch_size=4, shuffle=True)
    assert _order(loader)
    assert loader.state_dict() == {"epoch": 1, "batches": 0}


def test_worker_processes_skip_too() -> None:
    loader = ResumableDataLoader(_structures(9), batch_size=2, num_workers=1)
    resumed = ResumableDataLoader(_structures(9), batch_size=2, num_workers=1)
    resumed.load_state_dict({"epoch": 0, "batches": 2})
    assert _order(resumed) == _order(loader)[2:]


def test_lightning_can_swap_in_its_distributed_sampler() -> None:
    # What Lightning does under DDP: rebuild the loader with a DistributedSampler.
    loader = ResumableDataLoader(_structures(10), batch_size=2, shuffle=True, seed=5)
    sampler = DistributedSampler(loader.dataset, num_replicas=2, rank=1, shuffle=True, seed=0)
    rebuilt = _update_dataloader(loader, sampler)
    assert isinstance(rebuilt, ResumableDataLoader)
    assert rebuilt.sampler is sampler
    assert rebuilt.seed == 5
    full = _order(rebuilt)
    rebuilt.load_state_dict({"epoch": 0, "batches": 1})
    assert _order(rebuilt) == full[1:]


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"epoch": 0}, "expected {'epoch'"),
        ({"epoch": 0, "batches": -1}, "expected {'epoch'"),
        ({"epoch": 0, "batches": 9}, "skips 9 batches but the loader has 3"),
    ],
)
def test_bad_states(state: dict[str, int], message: str) -> None:
    loader = ResumableDataLoader(_structures(5), batch_size=2)
    with pytest.raises(ValueError, match=message):
        loader.load_state_dict(state)
