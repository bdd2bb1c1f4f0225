"""Batches by atom budget under two-process DDP (gloo, ``torchrun``), with default Trainer flags.

Each rank trains for three epochs on 41 structures of 1 to 30 atoms, batched by
:class:`~matsci.data.BudgetBatchSampler` (``max_atoms=60``) through
:class:`~matsci.data.ResumableDataLoader`, with ``use_distributed_sampler`` left at its default
(Lightning keeps the loader as given), and records the structure ids of every batch. A second
run batches a balanced mixture of two sources the same way. The test checks that both ranks ran
the same number of batches (a mismatch would hang DDP's all-reduce or cut an epoch short), that
the union over ranks is every structure exactly once per epoch, that the epochs differ, and that
each rank's batches are the ones the sampler computes for it in a single process.
"""

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torchrun_helpers import rank_records, run_two_processes

from matsci.data import BudgetBatchSampler, DatasetMixture, ResumableDataLoader

EPOCHS = 3
MAX_ATOMS = 60
SIZES = np.random.default_rng(0).integers(1, 31, size=41).tolist()
MIXTURE = ([30, 11], 24)  # source sizes and draws per epoch


def _structures(sizes: list[int]) -> list[Any]:
    from torch_geometric.data import Data

    return [
        Data(pos=torch.zeros(size, 3), structure_id=torch.tensor([index]))
        for index, size in enumerate(sizes)
    ]


def _sampler(kind: str, **kwargs: Any) -> BudgetBatchSampler:
    if kind == "plain":
        return BudgetBatchSampler(SIZES, max_atoms=MAX_ATOMS, seed=3, **kwargs)
    mixture = DatasetMixture(MIXTURE[0], weights="balanced", num_samples=MIXTURE[1])
    return BudgetBatchSampler(SIZES, max_atoms=MAX_ATOMS, seed=3, mixture=mixture, **kwargs)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_two_processes(__file__, tmp_path_factory.mktemp("ddp_budget"))


@pytest.mark.slow
def test_ranks_run_equal_batches_and_cover_each_epoch_once(ddp_run: Path) -> None:
    rank0, rank1 = rank_records(ddp_run, "plain")
    assert rank0["batch_sampler"] == rank1["batch_sampler"] == "BudgetBatchSampler"
    assert rank0["world_size"] == 2
    assert rank0["num_training_batches"] == rank1["num_training_batches"]
    epochs = []
    for epoch in range(EPOCHS):
        batches0, batches1 = rank0["seen"][epoch], rank1["seen"][epoch]
        assert len(batches0) == len(batches1) == rank0["num_training_batches"]
        ids = [i for batch in batches0 + batches1 for i in batch]
        assert sorted(ids) == list(range(len(SIZES)))  # every structure once, on one rank
        assert max(sum(SIZES[i] for i in batch) for batch in batches0 + batches1) <= MAX_ATOMS
        for rank, batches in enumerate((batches0, batches1)):
            expected = _sampler("plain", num_replicas=2, rank=rank)
            expected.set_epoch(epoch)
            assert batches == list(expected)
        epochs.append(batches0)
    assert epochs[0] != epochs[1] != epochs[2]


@pytest.mark.slow
def test_a_mixture_keeps_its_counts_across_ranks(ddp_run: Path) -> None:
    rank0, rank1 = rank_records(ddp_run, "mixture")
    assert rank0["num_training_batches"] == rank1["num_training_batches"]
    for epoch in range(EPOCHS):
        batches0, batches1 = rank0["seen"][epoch], rank1["seen"][epoch]
        assert len(batches0) == len(batches1) == rank0["num_training_batches"]
        ids = np.array([i for batch in batches0 + batches1 for i in batch])
        assert len(ids) == MIXTURE[1]
        assert (ids < MIXTURE[0][0]).sum() == (ids >= MIXTURE[0][0]).sum() == MIXTURE[1] // 2
        for rank, batches in enumerate((batches0, batches1)):
            expected = _sampler("mixture", num_replicas=2, rank=rank)
            expected.set_epoch(epoch)
            assert batches == list(expected)


# -- the script: each torchrun process runs this ------------------------------------------------


def _main(out: Path) -> None:
    import lightning.pytorch as pl
    from lightning.pytorch.strategies import DDPStrategy
    from typing_extensions import override

    class Recorder(pl.LightningModule):
        """Records the structure ids of every training batch; one weight keeps DDP in step."""

        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(1))
            self.seen: list[list[list[int]]] = [[] for _ in range(EPOCHS)]

        @override
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            self.seen[self.current_epoch].append(batch.structure_id.tolist())
            return (self.weight * (batch.pos.sum() + 1.0)).sum()

        @override
        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    torch.set_num_threads(1)
    for kind in ("plain", "mixture"):
        module = Recorder()
        # The sampler is built before the process group exists here, as a data module's
        # __init__ would: the world size is read when Lightning asks for the length.
        loader = ResumableDataLoader(_structures(SIZES), batch_sampler=_sampler(kind))
        trainer = pl.Trainer(
            accelerator="cpu", devices=int(os.environ["LOCAL_WORLD_SIZE"]),
            strategy=DDPStrategy(process_group_backend="gloo"), max_epochs=EPOCHS, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        )  # fmt: skip
        trainer.fit(module, loader)
        torch.save(
            {
                "world_size": trainer.world_size,
                "num_training_batches": int(trainer.num_training_batches),
                "batch_sampler": type(trainer.train_dataloader.batch_sampler).__name__,
                "seen": module.seen,
            },
            out / f"{kind}-rank{trainer.global_rank}.pt",
        )


if __name__ == "__main__":
    _main(Path(sys.argv[1]))
