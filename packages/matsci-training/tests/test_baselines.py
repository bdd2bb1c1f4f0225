from collections.abc import Mapping
from typing import Any

import pytest
import torch
from torch import nn
from torch_geometric.data import Batch, Data
from torchmetrics import CosineSimilarity, MeanAbsoluteError, MetricCollection
from training_helpers import TinyEncoder

from matsci.contract import AttributeSpec
from matsci.tasks.core import (
    BaseTaskModule,
    BinaryClassificationTask,
    CrystalSymmetryClassificationTask,
    MultiTaskLitModule,
    ScalarRegressionTask,
)
from matsci.training import BASELINE_DESCRIPTIONS, baseline_kind, baseline_metrics


def _structure(natoms: int, **targets: Any) -> Data:
    return Data(
        pos=torch.rand(natoms, 3),
        atomic_numbers=torch.full((natoms,), 3),
        natoms=torch.tensor([natoms]),
        **{key: torch.as_tensor(value) for key, value in targets.items()},
    )


def _batch(*structures: Data) -> Batch:
    return Batch.from_data_list(list(structures))


class PerAtomVectorTask(BaseTaskModule):
    """A task with a vector per atom (like direct forces): its baseline predicts zero."""

    per_atom_targets = True
    pools_atom_embeddings = False

    def build_head(self, key: str, output_kwargs: Mapping[str, Any]) -> nn.Module:
        return nn.Linear(self.encoder.embedding_dim, 3)

    def target_specs(self) -> list[AttributeSpec]:
        return [AttributeSpec.node_target(key, 3) for key in self.task_keys]

    def build_metrics(self, key: str) -> MetricCollection:
        return MetricCollection({"mae": MeanAbsoluteError(), "cosine": CosineSimilarity()})


def test_regression_baseline_is_the_training_mean_per_column() -> None:
    task = ScalarRegressionTask(encoder=TinyEncoder(8), task_keys=["gap", "pair"],
                                output_dims={"pair": 2})  # fmt: skip
    train = [
        _batch(_structure(2, gap=[1.0], pair=[[0.0, 10.0]]),
               _structure(3, gap=[2.0], pair=[[2.0, 10.0]])),
        _batch(_structure(2, gap=[6.0], pair=[[4.0, float("nan")]])),  # NaN: missing
    ]  # fmt: skip
    # Means: gap 3; pair [2, 10] (the NaN left out).
    test = [_batch(_structure(4, gap=[0.0], pair=[[2.0, 12.0]]),
                   _structure(1, gap=[7.0], pair=[[4.0, 10.0]]))]  # fmt: skip
    metrics = baseline_metrics(task, train, test)
    assert metrics["test/gap/mae"] == pytest.approx(3.5)  # |0 - 3|, |7 - 3|
    assert metrics["test/gap/rmse"] == pytest.approx((12.5) ** 0.5)
    assert metrics["test/pair/mae"] == pytest.approx(1.0)  # |0|, |2|, |2|, |0| over 4
    assert set(metrics) == {"test/gap/mae", "test/gap/rmse", "test/pair/mae", "test/pair/rmse"}


def test_an_extensive_energy_is_compared_as_a_total() -> None:
    task = ScalarRegressionTask(encoder=TinyEncoder(8), task_keys=["energy"])
    assert task.extensive_keys == ["energy"]
    train = [_batch(_structure(2, energy=[-2.0]), _structure(4, energy=[-6.0]))]
    test = [_batch(_structure(8, energy=[-9.0]))]
    assert baseline_metrics(task, train, test, stage="val") == pytest.approx(
        {"val/energy/mae": 5.0, "val/energy/rmse": 5.0}
    )


def test_test_rows_with_a_missing_target_are_left_out() -> None:
    task = ScalarRegressionTask(encoder=TinyEncoder(8), task_keys=["gap"])
    train = [_batch(_structure(2, gap=[1.0]))]
    test = [_batch(_structure(2, gap=[float("nan")]), _structure(2, gap=[3.0]))]
    assert baseline_metrics(task, train, test)["test/gap/mae"] == pytest.approx(2.0)


def test_binary_baseline_always_predicts_the_majority_label() -> None:
    task = BinaryClassificationTask(encoder=TinyEncoder(8), task_keys=["stable"])
    train = [_batch(*(_structure(2, stable=[label]) for label in (1.0, 1.0, 0.0)))]
    test = [_batch(*(_structure(2, stable=[label]) for label in (1.0, 0.0, 0.0, 1.0, 1.0)))]
    metrics = baseline_metrics(task, train, test)
    assert metrics["test/stable/accuracy"] == pytest.approx(0.6)
    assert metrics["test/stable/f1"] == pytest.approx(0.75)  # precision 0.6, recall 1
    assert metrics["test/stable/auroc"] == pytest.approx(0.5)  # a constant score ranks nothing
    assert baseline_kind(task, "stable") == "majority"


def test_space_group_baseline_ranks_classes_by_training_frequency() -> None:
    task = CrystalSymmetryClassificationTask(encoder=TinyEncoder(8))
    labels = [225] * 3 + [194] * 2 + [1, 14, 62, 139]
    train = [_batch(*(_structure(2, spacegroup=[label]) for label in labels))]
    test = [_batch(*(_structure(2, spacegroup=[label]) for label in (225, 194, 166, 14)))]
    metrics = baseline_metrics(task, train, test)
    assert metrics["test/spacegroup/top1"] == pytest.approx(0.25)  # only 225 is right
    # Top 5 by frequency: 225, 194 and three of the classes seen once (ties).
    assert 0.5 <= metrics["test/spacegroup/top5"] <= 0.75


def test_vectors_per_atom_get_the_zero_prediction_and_undefined_metrics_are_left_out() -> None:
    task = PerAtomVectorTask(encoder=TinyEncoder(8), task_keys=["dipole"])
    assert baseline_kind(task, "dipole") == "zero"
    train = [_batch(_structure(2, dipole=torch.ones(2, 3)))]  # its mean is not used
    test = [_batch(_structure(2, dipole=torch.tensor([[1.0, -2.0, 0.0], [0.0, 0.0, 3.0]])))]
    metrics = baseline_metrics(task, train, test)
    assert metrics == pytest.approx({"test/dipole/mae": 1.0})  # cosine of zero: undefined


def test_multitask_names_carry_the_dataset_and_task() -> None:
    module = MultiTaskLitModule(
        ("bulk", ScalarRegressionTask(encoder=TinyEncoder(8), task_keys=["gap"])),
        ("bulk", BinaryClassificationTask(encoder=TinyEncoder(8), task_keys=["stable"])),
    )
    batch = _batch(_structure(2, gap=[1.0], stable=[1.0]), _structure(2, gap=[3.0], stable=[1.0]),
                   _structure(2, gap=[2.0], stable=[0.0]))  # fmt: skip
    metrics = baseline_metrics(module, {"bulk": [batch]}, {"bulk": [batch]})
    assert metrics["test/bulk/ScalarRegressionTask/gap/mae"] == pytest.approx(2 / 3)
    assert metrics["test/bulk/BinaryClassificationTask/stable/accuracy"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match=r"needs train batches per dataset.*'bulk'"):
        baseline_metrics(module, [batch], {"bulk": [batch]})


def test_a_key_without_training_values_is_a_clear_error() -> None:
    task = ScalarRegressionTask(encoder=TinyEncoder(8), task_keys=["gap"])
    missing = [_batch(_structure(2, gap=[float("nan")]))]
    with pytest.raises(ValueError, match="'gap' has no value in the training batches"):
        baseline_metrics(task, missing, missing)


def test_every_kind_has_a_description() -> None:
    assert set(BASELINE_DESCRIPTIONS) == {"mean", "zero", "majority"}
