from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch_geometric.data import Data
from training_helpers import encoder_kwargs, loader, make_structures, trainer
from typing_extensions import override

from matsci.tasks.core import BinaryClassificationTask, MultiTaskLitModule, ScalarRegressionTask
from matsci.training import NonFiniteGuard


class _Weights(pl.Callback):
    """Weights after every optimizer step, keyed by global step."""

    def __init__(self) -> None:
        self.after: dict[int, torch.Tensor] = {}

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.after[0] = _flat(pl_module)

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:  # fmt: skip
        self.after[trainer.global_step] = _flat(pl_module)


def _flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).clone() for p in module.parameters()])


def _structures(count: int, bad: dict[int, float] | None = None) -> list[Data]:
    data = make_structures(count, 0)
    for index, item in enumerate(data):
        item.structure_id = torch.tensor([100 + index])
        if bad and index in bad:
            item.energy = torch.tensor([bad[index]])
    return data


def _task() -> ScalarRegressionTask:
    return ScalarRegressionTask(**encoder_kwargs(), task_keys=["energy"], lr=1e-2)


def test_an_infinite_loss_skips_only_its_step() -> None:
    guard, weights = NonFiniteGuard(max_consecutive=2), _Weights()
    # Batches of 4 in order: structure 5 makes the loss of the second batch (step 2) infinite.
    data = _structures(16, bad={5: float("inf")})
    with pytest.warns(UserWarning, match=r"skipped optimizer step 1 .*structure_id \[104, 105"):
        trainer(max_epochs=1, callbacks=[guard, weights]).fit(_task(), loader(data, batch_size=4))
    assert guard.skipped_steps == 1
    assert guard.consecutive_skips == 0  # reset by the finite steps after it
    assert torch.equal(weights.after[2], weights.after[1])  # the skipped step moved nothing
    for step in (1, 3, 4):
        assert not torch.equal(weights.after[step], weights.after[step - 1])
    assert all(bool(torch.isfinite(w).all()) for w in weights.after.values())


def test_a_nan_gradient_with_a_finite_loss_is_skipped() -> None:
    task = _task()
    calls = {"n": 0}

    def poison_second_backward(gradient: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return gradient * float("nan") if calls["n"] == 2 else gradient

    task.encoder.mix.weight.register_hook(poison_second_backward)
    guard, weights = NonFiniteGuard(), _Weights()
    with pytest.warns(UserWarning, match=r"non-finite gradients: encoder\.mix\.weight"):
        trainer(max_epochs=1, callbacks=[guard, weights]).fit(
            task, loader(_structures(12), batch_size=4)
        )
    assert guard.skipped_steps == 1
    assert torch.equal(weights.after[2], weights.after[1])
    # Adam's state was not touched by the skipped step: it counts two steps, not three.
    optimizer_state = next(iter(task.trainer.optimizers[0].state.values()))
    assert int(optimizer_state["step"]) == 2


def test_stops_after_max_consecutive_and_names_batch_and_loss_term() -> None:
    guard = NonFiniteGuard(max_consecutive=3)
    data = _structures(16, bad={i: float("-inf") for i in range(4, 16)})
    run = trainer(max_epochs=1, callbacks=[guard])
    task = _task()
    with (
        pytest.warns(UserWarning, match="skipped optimizer step"),
        pytest.raises(
            FloatingPointError,
            match=(
                r"3 optimizer steps in a row had a NaN or infinite loss or gradient "
                r"\(max_consecutive=3\); stopping at step 3\. Last batch: batch 3 of epoch 0 "
                r"\(structure_id \[112, 113, 114, 115\]\)\. Loss terms: non-finite energy=inf"
            ),
        ),
    ):
        run.fit(task, loader(data, batch_size=4))
    assert guard.skipped_steps == 3
    assert bool(torch.isfinite(_flat(task)).all())


def test_multi_task_error_names_the_task_and_key() -> None:
    encoder = encoder_kwargs()
    module = MultiTaskLitModule(
        ("bulk", ScalarRegressionTask(**encoder, task_keys=["energy"])),
        ("bulk", BinaryClassificationTask(**encoder, task_keys=["stable"])),
    )
    data = _structures(8, bad={i: float("inf") for i in range(8)})
    with pytest.raises(
        FloatingPointError,
        match=r"\(bulk: structure_id \[100, .*non-finite bulk/ScalarRegressionTask/energy=inf",
    ):
        trainer(max_epochs=1, callbacks=[NonFiniteGuard(max_consecutive=1)]).fit(
            module, {"bulk": loader(data, batch_size=4)}
        )


def test_without_structure_ids_the_batch_is_named_by_index() -> None:
    data = make_structures(4, 0)
    data[0].energy = torch.tensor([float("inf")])
    with pytest.raises(FloatingPointError, match=r"batch 0 of epoch 0 \(no 'structure_id'"):
        trainer(max_epochs=1, callbacks=[NonFiniteGuard(max_consecutive=1)]).fit(
            _task(), loader(data, batch_size=4)
        )


def test_counters_travel_in_the_checkpoint(tmp_path: Path) -> None:
    # Batches of 4: structure 13 makes the last step (step 4) infinite, so the checkpoint saved
    # after the epoch holds one skip, the last one (consecutive).
    data = loader(_structures(16, bad={13: float("inf")}), batch_size=4)
    run = trainer(max_epochs=1, callbacks=[NonFiniteGuard()])
    with pytest.warns(UserWarning, match="skipped optimizer step"):
        run.fit(_task(), data)
    path = tmp_path / "guarded.ckpt"
    run.save_checkpoint(path)
    stored = torch.load(path, weights_only=True)["callbacks"]
    assert {"skipped_steps": 1, "consecutive_skips": 1} in stored.values()
    resumed = NonFiniteGuard()
    clean = loader(_structures(16), batch_size=4)
    trainer(max_epochs=1, callbacks=[resumed]).fit(_task(), clean, ckpt_path=path)
    assert resumed.skipped_steps == 1  # restored from the file, not counted again


@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_bad_max_consecutive(value: Any) -> None:
    with pytest.raises(ValueError, match=r"NonFiniteGuard\(max_consecutive=.*\): expected an int"):
        NonFiniteGuard(max_consecutive=value)
