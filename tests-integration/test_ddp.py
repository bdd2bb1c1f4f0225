"""Two-process DDP on the CPU (gloo), launched with ``torchrun`` as on a cluster node.

One script run trains a single task, then a multi-task module on two datasets, in the same two
processes. Per optimizer step each rank records a hash of its weights; after training each
rank records the validation metrics Lightning reduced over the ranks and the structures it
evaluated. The test then compares the ranks with each other and the metrics with a
single-process evaluation of the final weights on the same validation sets.

Sizes are uneven on purpose: 37 training structures in batches of 4 (Lightning pads the
training shards to 19 each: batches of 4, 4, 4, 4 and 3) and 9 validation structures, which
:class:`~matsci.data.UnpaddedDistributedSampler` splits into 5 and 4 (two batches on rank 0,
one on rank 1). One training step sees an infinite target on rank 1 only: both ranks skip it.
"""

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torchrun_helpers import rank_records, run_two_processes

HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "packages" / "matsci-tasks-core" / "tests"))

from tasks_core_helpers import TinyEncoder, make_structures  # noqa: E402

from matsci.data import ResumableDataLoader, UnpaddedDistributedSampler  # noqa: E402
from matsci.tasks.core import (  # noqa: E402
    BinaryClassificationTask,
    MultiTaskLitModule,
    ScalarRegressionTask,
)

POISONED_STEP = 2
MAX_STEPS = 10  # two epochs of 5 batches


def _structures(count: int, seed: int) -> list[Any]:
    data = make_structures(count, seed)
    for index, item in enumerate(data):
        item.structure_id = torch.tensor([seed * 1000 + index])
    return data


def _single_task() -> ScalarRegressionTask:
    return ScalarRegressionTask(
        encoder_class=TinyEncoder, encoder_kwargs={"embedding_dim": 16},
        task_keys=["energy", "properties"], output_dims={"properties": 2},
        output_kwargs={"hidden_dim": 32}, lr=5e-3,
    )  # fmt: skip


def _multi_task() -> MultiTaskLitModule:
    encoder = {"encoder_class": TinyEncoder, "encoder_kwargs": {"embedding_dim": 16}}
    return MultiTaskLitModule(
        ("bulk", ScalarRegressionTask(**encoder, task_keys=["energy"])),
        ("small", BinaryClassificationTask(**encoder, task_keys=["stable"])),
        lr=5e-3,
    )


def _val_sets() -> dict[str, list[Any]]:
    return {"bulk": _structures(9, 2), "small": _structures(7, 4)}


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_two_processes(__file__, tmp_path_factory.mktemp("ddp"))


def _single_process_metrics(module: Any, state: dict[str, torch.Tensor], loaders: Any) -> dict:
    import lightning.pytorch as pl

    module.load_state_dict(state)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False)  # fmt: skip
    results = trainer.validate(module, loaders, verbose=False)
    return {name: value for per_loader in results for name, value in per_loader.items()}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["single", "multi"])
def test_ranks_hold_identical_weights_after_every_step(ddp_run: Path, kind: str) -> None:
    rank0, rank1 = rank_records(ddp_run, kind)
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert [step for step, _ in rank0["hashes"]] == list(range(1, MAX_STEPS + 1))
    assert rank0["hashes"] == rank1["hashes"]
    assert len({digest for _, digest in rank0["hashes"]}) == MAX_STEPS - rank0["skipped"]
    for name, value in rank0["state_dict"].items():
        assert torch.equal(value, rank1["state_dict"][name]), name
    # In the first epoch the ranks shared the 37 structures, 19 each: one of them twice (the
    # pad Lightning's training sampler adds so that both ranks run 5 steps).
    first0, first1 = set(rank0["train_ids"]), set(rank1["train_ids"])
    assert len(rank0["train_ids"]) == len(rank1["train_ids"]) == 19
    assert len(first0 | first1) == 37
    assert len(first0 & first1) == 1


@pytest.mark.slow
def test_a_non_finite_step_on_one_rank_is_skipped_on_both(ddp_run: Path) -> None:
    rank0, rank1 = rank_records(ddp_run, "single")
    assert rank0["skipped"] == rank1["skipped"] == 1
    hashes = dict(rank0["hashes"])
    assert hashes[POISONED_STEP + 1] == hashes[POISONED_STEP]  # the weights did not move
    assert hashes[POISONED_STEP + 2] != hashes[POISONED_STEP + 1]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["single", "multi"])
def test_validation_metrics_equal_a_single_process_evaluation(ddp_run: Path, kind: str) -> None:
    rank0, rank1 = rank_records(ddp_run, kind)
    val = _val_sets()
    # Every validation structure was evaluated exactly once, across the two ranks.
    for name, structures in val.items() if kind == "multi" else [("bulk", val["bulk"])]:
        seen = rank0["val_ids"][name] + rank1["val_ids"][name]
        assert sorted(seen) == sorted(int(d.structure_id) for d in structures)
    assert rank0["val_batches"]["bulk"] == 2  # 5 structures
    assert rank1["val_batches"]["bulk"] == 1  # 4 structures
    if kind == "single":
        module: Any = _single_task()
        loaders: Any = ResumableDataLoader(val["bulk"], batch_size=4)
    else:
        module = _multi_task()
        loaders = {name: ResumableDataLoader(data, batch_size=4) for name, data in val.items()}
    expected = _single_process_metrics(module, rank0["state_dict"], loaders)
    reduced = rank0["metrics"]
    assert rank1["metrics"] == reduced
    assert set(expected) <= set(reduced), sorted(set(expected) - set(reduced))
    assert len(expected) >= (6 if kind == "single" else 9)
    for name, value in expected.items():
        assert reduced[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    if kind == "single":
        # The control: Lightning's default sampler would pad with a repeat of structure 0.
        padded = ResumableDataLoader([*val["bulk"], val["bulk"][0]], batch_size=4)
        skewed = _single_process_metrics(_single_task(), rank0["state_dict"], padded)
        assert abs(skewed["val/energy/mae"] - expected["val/energy/mae"]) > 1e-4


# -- the script: each torchrun process runs this ------------------------------------------------


def _main(out: Path) -> None:
    import hashlib

    import lightning.pytorch as pl
    from lightning.pytorch.strategies import DDPStrategy
    from typing_extensions import override

    from matsci.training import NonFiniteGuard

    class Record(pl.Callback):
        """Per step: a hash of the weights; per run: metrics, shards and final weights."""

        def __init__(self) -> None:
            self.hashes: list[tuple[int, str]] = []
            self.train_ids: list[int] = []
            self.val_ids: dict[str, list[int]] = {}
            self.val_batches: dict[str, int] = {}

        @override
        def on_train_batch_start(
            self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
        ) -> None:
            data = batch["bulk"] if isinstance(batch, dict) else batch
            if trainer.current_epoch == 0:
                self.train_ids += data.structure_id.tolist()
            if trainer.global_step == POISONED_STEP and trainer.global_rank == 1:
                data.energy[0] = float("inf")  # a broken target on one rank only

        @override
        def on_train_batch_end(
            self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
            batch_idx: int,
        ) -> None:  # fmt: skip
            flat = torch.cat([p.detach().reshape(-1) for p in pl_module.parameters()])
            digest = hashlib.sha256(flat.double().numpy().tobytes()).hexdigest()
            self.hashes.append((trainer.global_step, digest))

        @override
        def on_validation_batch_start(
            self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int,
            dataloader_idx: int = 0,
        ) -> None:  # fmt: skip
            name = ["bulk", "small"][dataloader_idx]
            if trainer.current_epoch == trainer.max_epochs - 1:  # the last validation
                self.val_ids.setdefault(name, []).extend(batch.structure_id.tolist())
                self.val_batches[name] = self.val_batches.get(name, 0) + 1

    torch.set_num_threads(1)
    pl.seed_everything(0, workers=True, verbose=False)
    val_sets = _val_sets()

    def val_loader(data: list[Any]) -> ResumableDataLoader:
        return ResumableDataLoader(data, batch_size=4, sampler=UnpaddedDistributedSampler(data))

    runs: dict[str, tuple[Any, Any, Any]] = {
        "single": (
            _single_task(),
            ResumableDataLoader(_structures(37, 1), batch_size=4, shuffle=True),
            val_loader(val_sets["bulk"]),
        ),
        "multi": (
            _multi_task(),
            {
                "bulk": ResumableDataLoader(_structures(37, 1), batch_size=4, shuffle=True),
                "small": ResumableDataLoader(_structures(23, 3), batch_size=4, shuffle=True),
            },
            {name: val_loader(data) for name, data in val_sets.items()},
        ),
    }
    for kind, (module, train, val) in runs.items():
        record, guard = Record(), NonFiniteGuard(max_consecutive=2)
        trainer = pl.Trainer(
            accelerator="cpu", devices=int(os.environ["LOCAL_WORLD_SIZE"]),
            strategy=DDPStrategy(process_group_backend="gloo"), max_epochs=2, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            num_sanity_val_steps=0, callbacks=[record, guard],
        )  # fmt: skip
        trainer.fit(module, train, val)
        metrics = {
            name: float(value)
            for name, value in trainer.callback_metrics.items()
            if name.startswith("val/")
        }
        torch.save(
            {
                "world_size": trainer.world_size,
                "hashes": record.hashes,
                "skipped": guard.skipped_steps,
                "train_ids": record.train_ids,
                "val_ids": record.val_ids,
                "val_batches": record.val_batches,
                "metrics": metrics,
                "state_dict": {k: v.detach().clone() for k, v in module.state_dict().items()},
            },
            out / f"{kind}-rank{trainer.global_rank}.pt",
        )


if __name__ == "__main__":
    _main(Path(sys.argv[1]))
