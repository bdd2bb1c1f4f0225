from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers.logger import Logger
from tasks_core_helpers import encoder_kwargs, loader, make_structures, trainer
from torch_geometric.data import Batch
from torchmetrics import MeanAbsoluteError
from typing_extensions import override

from matsci.tasks.core import MultiTaskLitModule, ScalarRegressionTask
from matsci.tasks.core._epoch_means import EpochMeans, PendingMetricInputs, is_logging_step


class RecordingLogger(Logger):
    """Keeps every ``log_metrics`` call as ``(step, {name: value})``."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[int | None, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    @override
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.records.append((step, dict(metrics)))

    @override
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def names(self) -> set[str]:
        return {name for _, metrics in self.records for name in metrics}


def _frozen_regression() -> ScalarRegressionTask:
    # lr = 0: the model does not change, so every step's loss and metrics can be recomputed.
    torch.manual_seed(0)
    return ScalarRegressionTask(**encoder_kwargs(), task_keys=["energy"], lr=0.0)


def test_epoch_means_are_batch_weighted_and_reduced() -> None:
    means = EpochMeans(["a", "b"])
    assert not means.updated
    means.update([torch.tensor(1.0), torch.tensor(10.0)], [1, 1])
    means.update([torch.tensor(4.0), torch.tensor(20.0)], [2, 2])
    result = means.compute()
    assert float(result["a"]) == pytest.approx(3.0)
    assert float(result["b"]) == pytest.approx(50.0 / 3)
    # A reduction sees [sums..., weights...]: doubling everything leaves the means unchanged.
    doubled = means.compute(reduce=lambda totals: 2 * totals)
    assert float(doubled["a"]) == pytest.approx(3.0)
    means.reset()
    empty = means.compute(reduce=lambda totals: totals + torch.tensor([3.0, 6.0, 3.0, 3.0]))
    assert float(empty["a"]) == 1.0
    assert float(empty["b"]) == 2.0


def test_epoch_means_leave_out_absent_values() -> None:
    # A task without a batch in a step (None) adds nothing to its mean and no weight.
    means = EpochMeans(["total", "first", "second"])
    means.update([torch.tensor(3.0), torch.tensor(1.0), torch.tensor(5.0)], [4, 2, 2])
    means.update([torch.tensor(2.0), torch.tensor(2.0), None], [2, 2, 0])
    result = means.compute()
    assert float(result["total"]) == pytest.approx((3.0 * 4 + 2.0 * 2) / 6)
    assert float(result["first"]) == pytest.approx(1.5)
    assert float(result["second"]) == pytest.approx(5.0)


def test_pending_inputs_concatenate_and_give_the_same_metric() -> None:
    pending = PendingMetricInputs(every=3)
    direct, grouped = MeanAbsoluteError(), MeanAbsoluteError()
    steps = [(torch.randn(n, 2), torch.randn(n, 2)) for n in (4, 1, 6)]
    flags = []
    for prediction, target in steps:
        direct.update(prediction, target)
        flags.append(pending.add({"x": prediction}, {"x": target}))
    assert flags == [False, False, True]
    popped = pending.pop()
    assert popped is not None
    predictions, targets = popped
    assert predictions["x"].shape == targets["x"].shape == (11, 2)
    grouped.update(predictions["x"], targets["x"])
    torch.testing.assert_close(grouped.compute(), direct.compute())
    assert pending.pop() is None


def test_logging_steps_match_lightnings() -> None:
    seen: list[tuple[bool, bool]] = []

    class Probe(ScalarRegressionTask):
        def training_step(self, batch: Batch, batch_idx: int) -> Any:
            connector = self.trainer._logger_connector
            seen.append((is_logging_step(self), connector.should_update_logs))
            return super().training_step(batch, batch_idx)

    task = Probe(**encoder_kwargs(), task_keys=["energy"])
    trainer(max_epochs=2, log_every_n_steps=3).fit(task, loader(make_structures(40, 0), 8))
    assert len(seen) == 10
    assert [mine for mine, _ in seen] == [lightning for _, lightning in seen]
    assert sum(mine for mine, _ in seen) == 3  # steps 3, 6 and 9


def test_training_names_and_values_match_per_step_logging() -> None:
    structures = make_structures(40, seed=0)
    for data in structures[13:16]:
        data.energy = torch.tensor([float("nan")])  # missing in one step only
    task = _frozen_regression()
    logger = RecordingLogger()
    run = trainer(max_epochs=1, logger=logger, log_every_n_steps=2)
    run.fit(task, loader(structures, batch_size=8))
    # What Lightning's on_step + on_epoch logging would give: *_step and *_epoch values.
    expected_names = {
        "train/loss_step", "train/loss_epoch", "train/energy/loss_step",
        "train/energy/loss_epoch", "train/energy/mae", "train/energy/rmse",
    }  # fmt: skip
    assert expected_names <= logger.names()
    step_records = [step for step, metrics in logger.records if "train/loss_step" in metrics]
    assert step_records == [1, 3]  # steps 2 and 4 (Lightning's step counts from 0)
    # Expected values, recomputed batch by batch with the unchanged model.
    task.eval()
    losses, weights, errors = [], [], []
    with torch.no_grad():
        for batch in loader(structures, batch_size=8):
            outputs = task(batch)
            losses.append(float(task.compute_losses(outputs, batch)[0]))
            weights.append(batch.num_graphs)
            prediction = task.to_physical("energy", outputs["energy"], batch)
            target = batch.energy.reshape(-1, 1)
            present = ~torch.isnan(target)
            errors.append((prediction[present] - target[present]).abs())
    expected_loss = sum(w * v for w, v in zip(weights, losses, strict=True)) / sum(weights)
    expected_mae = float(torch.cat(errors).mean())
    metrics = run.callback_metrics
    assert float(metrics["train/loss_epoch"]) == pytest.approx(expected_loss, rel=1e-5)
    assert float(metrics["train/loss"]) == pytest.approx(expected_loss, rel=1e-5)
    assert float(metrics["train/energy/loss_epoch"]) == pytest.approx(expected_loss, rel=1e-5)
    assert float(metrics["train/energy/mae"]) == pytest.approx(expected_mae, rel=1e-5)


def test_train_loss_stays_on_the_progress_bar() -> None:
    shown: list[set[str]] = []

    class Bar(pl.Callback):
        def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
            shown.append(set(trainer.progress_bar_metrics))

    run = trainer(enable_progress_bar=True, callbacks=[Bar()])
    run.fit(_frozen_regression(), loader(make_structures(24, 0), batch_size=8))
    assert all("train/loss" in names for names in shown[1:])


def test_multitask_training_logs_the_same_names() -> None:
    torch.manual_seed(0)
    first = ScalarRegressionTask(**encoder_kwargs(), task_keys=["energy"])
    second = ScalarRegressionTask(**encoder_kwargs(), task_keys=["properties"],
                                  output_dims={"properties": 2})  # fmt: skip
    module = MultiTaskLitModule(("bulk", first), ("bulk", second))
    logger = RecordingLogger()
    run = trainer(max_epochs=1, logger=logger, log_every_n_steps=1)
    run.fit(module, {"bulk": loader(make_structures(24, 0), batch_size=8)})
    names = logger.names()
    # The same names as a single task's, under the task's prefix: one logging path.
    assert {"train/loss_step", "train/loss_epoch", "train/bulk/ScalarRegressionTask/loss_step",
            "train/bulk/ScalarRegressionTask/loss_epoch",
            "train/bulk/ScalarRegressionTask/energy/loss_step",
            "train/bulk/ScalarRegressionTask_2/properties/loss_epoch",
            "train/bulk/ScalarRegressionTask/energy/mae",
            "train/bulk/ScalarRegressionTask_2/properties/rmse"} <= names  # fmt: skip
