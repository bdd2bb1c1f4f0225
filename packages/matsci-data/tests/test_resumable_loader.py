from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.data import _update_dataloader
from torch.utils.data.distributed import DistributedSampler
from torch_geometric.data import Batch, Data

from matsci.data import ResumableDataLoader, SeededRandomSampler
from matsci.data._budget_sampler import BudgetBatchSampler


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


class _CountingDataset(torch.utils.data.Dataset[Data]):
    """Structures numbered 0..count-1 that remember which were read (in this process)."""

    def __init__(self, count: int) -> None:
        self.items = _structures(count)
        self.reads: list[int] = []

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Data:
        self.reads.append(index)
        return self.items[index]


def test_resume_reads_only_the_remaining_structures() -> None:
    dataset = _CountingDataset(10)
    full = _order(ResumableDataLoader(dataset, batch_size=3, shuffle=True, seed=2))
    dataset.reads.clear()
    resumed = ResumableDataLoader(dataset, batch_size=3, shuffle=True, seed=2)
    resumed.load_state_dict({"epoch": 0, "batches": 2})
    assert _order(resumed) == full[2:]
    assert sorted(dataset.reads) == sorted(i for batch in full[2:] for i in batch)
    assert resumed.state_dict() == {"epoch": 1, "batches": 0}


def test_resume_with_persistent_workers() -> None:
    loader = ResumableDataLoader(_structures(9), batch_size=2, shuffle=True, seed=1,
                                 num_workers=1, persistent_workers=True)  # fmt: skip
    full = _order(loader)
    loader.load_state_dict({"epoch": 0, "batches": 3})
    assert _order(loader) == full[3:]
    assert _order(loader) == full  # the next pass is whole again, on the persistent workers


class _WorkerSeedDataset(torch.utils.data.Dataset[Data]):
    """Structures that carry the seed of the worker process that read them."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> Data:
        info = torch.utils.data.get_worker_info()
        seed = torch.tensor([-1 if info is None else info.seed % 2**62])
        return Data(pos=torch.zeros(1, 3), number=torch.tensor([index]), seed=seed)


def test_resumed_workers_get_the_seeds_of_the_uninterrupted_pass() -> None:
    def loader() -> ResumableDataLoader:
        return ResumableDataLoader(_WorkerSeedDataset(), batch_size=2, shuffle=True, seed=4,
                                   num_workers=1)  # fmt: skip

    first = [(batch.number.tolist(), batch.seed.tolist()) for batch in loader()]
    assert first[0][1][0] != -1
    resumed = loader()
    resumed.load_state_dict({"epoch": 0, "batches": 1})
    assert [(batch.number.tolist(), batch.seed.tolist()) for batch in resumed] == first[1:]


def test_resume_with_a_given_batch_sampler() -> None:
    batches = [[4, 0], [1], [3, 2]]
    loader = ResumableDataLoader(_structures(5), batch_sampler=batches)
    assert _order(loader) == batches
    loader.load_state_dict({"epoch": 0, "batches": 1})
    assert _order(loader) == batches[1:]


class _Recorder(LightningModule):
    """Records the structure numbers of every training batch; learns nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))
        self.seen: list[list[int]] = []

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        self.seen.append(batch.number.tolist())
        return (self.weight * batch.pos.sum()).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


class _Interrupt(Callback):
    """Checkpoint after ``step`` optimizer steps, then stop the run as a crash would."""

    def __init__(self, path: Path, step: int) -> None:
        self.path, self.step = path, step

    def on_train_batch_end(self, trainer: Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)
            raise RuntimeError("interrupted")


def test_lightning_resumes_mid_epoch_with_the_remaining_batches(tmp_path: Path) -> None:
    def run(module: _Recorder, **kwargs: Any) -> Trainer:
        return Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False,
                       enable_progress_bar=False, enable_model_summary=False,
                       default_root_dir=tmp_path, **kwargs)  # fmt: skip

    def loader() -> ResumableDataLoader:
        return ResumableDataLoader(_structures(11), batch_size=2, shuffle=True, seed=3,
                                   num_workers=1, persistent_workers=True)  # fmt: skip

    full = _Recorder()
    run(full).fit(full, loader())
    first = _Recorder()
    path = tmp_path / "interrupted.ckpt"
    with pytest.raises(RuntimeError, match="interrupted"):
        run(first, callbacks=[_Interrupt(path, step=8)]).fit(first, loader())
    rest = _Recorder()
    run(rest).fit(rest, loader(), ckpt_path=path)
    assert len(full.seen) == 12  # 6 batches in each of 2 epochs
    assert first.seen == full.seen[:8]
    assert rest.seen == full.seen[8:]


# -- with a batch sampler by atom budget ---------------------------------------------------------

_SIZES = [4, 30, 4, 4, 25, 4, 12, 4, 4, 30, 8, 4, 4, 20, 4]


def _sized_structures() -> list[Data]:
    return [
        Data(pos=torch.zeros(size, 3), number=torch.tensor([i])) for i, size in enumerate(_SIZES)
    ]


def _budget_loader(**kwargs: Any) -> ResumableDataLoader:
    sampler = BudgetBatchSampler(_SIZES, max_atoms=40, seed=6)
    return ResumableDataLoader(_sized_structures(), batch_sampler=sampler, **kwargs)


def test_resume_mid_epoch_with_a_budget_batch_sampler() -> None:
    loader = _budget_loader()
    assert isinstance(loader.sampler, DistributedSampler)  # Lightning keeps it under DDP
    loader.sampler.set_epoch(2)  # as Lightning does: reaches the batch sampler
    assert loader.batch_sampler.epoch == 2
    full = _order(loader)
    assert full == loader.batch_sampler.epoch_batches()
    assert max(sum(_SIZES[i] for i in batch) for batch in full) <= 40
    iterator = iter(loader)
    for _ in range(3):
        next(iterator)
    assert loader.state_dict() == {"epoch": 2, "batches": 3}  # the epoch of the batch sampler
    resumed = _budget_loader()
    resumed.load_state_dict(loader.state_dict())
    assert resumed.batch_sampler.epoch == 2
    assert _order(resumed) == full[3:]
    assert _order(resumed) == full


def test_lightning_resumes_a_budget_epoch_with_the_remaining_batches(tmp_path: Path) -> None:
    def run(module: _Recorder, **kwargs: Any) -> Trainer:
        return Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False,
                       enable_progress_bar=False, enable_model_summary=False,
                       default_root_dir=tmp_path, **kwargs)  # fmt: skip

    full = _Recorder()
    run(full).fit(full, _budget_loader())
    reference = _budget_loader().batch_sampler
    per_epoch = len(reference)
    expected = []
    for epoch in (0, 1):
        reference.set_epoch(epoch)
        expected += reference.epoch_batches()
    assert full.seen == expected  # Lightning set the epoch on the batch sampler
    first = _Recorder()
    path = tmp_path / "interrupted.ckpt"
    with pytest.raises(RuntimeError, match="interrupted"):
        run(first, callbacks=[_Interrupt(path, step=per_epoch + 2)]).fit(first, _budget_loader())
    rest = _Recorder()
    run(rest).fit(rest, _budget_loader(), ckpt_path=path)
    assert first.seen == full.seen[: per_epoch + 2]
    assert rest.seen == full.seen[per_epoch + 2 :]
