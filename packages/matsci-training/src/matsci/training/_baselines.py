"""The obvious baseline of each metric: what a model must beat before it has learned anything."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal

import torch
from torch import Tensor
from torchmetrics import MetricCollection

from matsci.tasks.core import (
    BaseTaskModule,
    BinaryClassificationTask,
    CrystalSymmetryClassificationTask,
    MultiTaskLitModule,
)

__all__ = ["BASELINE_DESCRIPTIONS", "BaselineKind", "baseline_kind", "baseline_metrics"]

BaselineKind = Literal["mean", "zero", "majority"]
"""How a key's baseline predicts: the training mean, zero, or the training split's majority."""

BASELINE_DESCRIPTIONS: Final[dict[str, str]] = {
    "mean": "mean of the training targets",
    "zero": "zero prediction",
    "majority": "majority class of the training split",
}
"""One phrase per :data:`BaselineKind`, for tables and logs."""


def baseline_kind(task: BaseTaskModule, key: str) -> BaselineKind | None:
    """Which obvious baseline :func:`baseline_metrics` uses for a task's key.

    - ``"majority"`` for classification (:class:`~matsci.tasks.core.BinaryClassificationTask`,
      :class:`~matsci.tasks.core.CrystalSymmetryClassificationTask`): always predict the most
      frequent class of the training split (for top-k metrics, the k most frequent);
    - ``"zero"`` for vectors per atom and tensors per structure (forces, denoising noise,
      stress: targets declared at node level, or with more than one trailing dimension), whose
      training mean is zero for any distribution of orientations;
    - ``"mean"`` for other float targets: the mean of the training targets, per column, as the
      task's metrics see them (energies per atom for a force task's ``mae_per_atom``).

    Parameters
    ----------
    task
        A task.
    key
        One of its ``task_keys``.

    Returns
    -------
    str or None
        The kind, or ``None`` for a key whose metrics have no obvious baseline here (a task
        this function does not know with integer targets).

    Examples
    --------
    >>> import torch
    >>> from matsci.tasks.core import BinaryClassificationTask, Embeddings
    >>> from matsci.training import baseline_kind
    >>> class Encoder(torch.nn.Module):
    ...     embedding_dim = 3
    ...     def forward(self, batch):
    ...         return Embeddings(point_embedding=batch.pos)
    >>> baseline_kind(BinaryClassificationTask(encoder=Encoder(), task_keys=["stable"]),
    ...               "stable")
    'majority'
    """
    if isinstance(task, BinaryClassificationTask | CrystalSymmetryClassificationTask):
        return "majority"
    spec = next((spec for spec in task.target_specs() if spec.name == key), None)
    if spec is None:
        return None
    if spec.level == "node" or len(spec.trailing) > 1:
        return "zero"
    return "mean" if spec.dtype == "float" else None


def baseline_metrics(
    model: BaseTaskModule | MultiTaskLitModule,
    train: Iterable[Any] | Mapping[str, Iterable[Any]],
    test: Iterable[Any] | Mapping[str, Iterable[Any]],
    *,
    stage: str = "test",
) -> dict[str, float]:
    """Metrics of the obvious baseline predictor of every key, named as the model logs them.

    For each task and key, a constant predictor is fitted on the training batches (see
    :func:`baseline_kind`: the mean of the training targets, zero, or the majority class),
    then scored on the test batches with the task's own metrics (:meth:`build_metrics`, fed
    like the model's: :meth:`get_target` against a prediction of the same form), so every
    number compares directly with the model's logged metric of the same name:
    ``<stage>/<key>/<metric>`` for a task, ``<stage>/<dataset>/<task>/<key>/<metric>`` in
    multi-task training. Missing (NaN) targets are left out, as in training.
    A metric that is undefined for a constant prediction (the cosine similarity of a zero
    vector) is left out of the result, as are keys without a baseline.

    Parameters
    ----------
    model
        A task or a :class:`~matsci.tasks.core.MultiTaskLitModule`. Only its target reading
        and metric definitions are used; it is not run.
    train, test
        Batches of the training and the evaluated split (data loaders, lists of ``Batch``):
        one iterable for a task, ``{dataset: iterable}`` for a multi-task module.
    stage
        First part of the returned names.

    Returns
    -------
    dict
        ``{metric name: value}``.

    Raises
    ------
    ValueError
        If a multi-task module's dataset has no batches in ``train`` or ``test``, or a key has
        no value in the training batches.

    Examples
    --------
    >>> import torch
    >>> from torch_geometric.data import Batch, Data
    >>> from matsci.tasks.core import Embeddings, ScalarRegressionTask
    >>> from matsci.training import baseline_metrics
    >>> class Encoder(torch.nn.Module):
    ...     embedding_dim = 3
    ...     def forward(self, batch):
    ...         return Embeddings(point_embedding=batch.pos)
    >>> task = ScalarRegressionTask(encoder=Encoder(), task_keys=["band_gap"])
    >>> def batch(*gaps):
    ...     return Batch.from_data_list([
    ...         Data(pos=torch.zeros(1, 3), atomic_numbers=torch.tensor([14]),
    ...              natoms=torch.tensor([1]), band_gap=torch.tensor([gap])) for gap in gaps])
    >>> baseline_metrics(task, [batch(1.0, 3.0)], [batch(0.0, 4.0)])  # always predicts 2
    {'test/band_gap/mae': 2.0, 'test/band_gap/rmse': 2.0}
    """
    entries = model.task_entries
    multitask = isinstance(model, MultiTaskLitModule)
    results: dict[str, float] = {}
    for entry in entries:
        train_batches = _batches_of(train, entry.dataset, multitask, "train")
        test_batches = _batches_of(test, entry.dataset, multitask, "test")
        task = entry.task
        kinds = {key: baseline_kind(task, key) for key in task.task_keys}
        known = [key for key, kind in kinds.items() if kind is not None]
        if not known:
            continue
        predictors = _fit(task, known, kinds, train_batches)
        collections = {key: task.build_metrics(key) for key in known}
        for batch in test_batches:
            targets = task.get_targets(batch)
            for key in known:
                target = targets[key]
                if target.is_floating_point():
                    rows = ~torch.isnan(target).reshape(target.shape[0], -1).any(dim=1)
                    target = target[rows]
                if target.shape[0] == 0:
                    continue
                collections[key].update(predictors[key](target), target)
        for key, collection in collections.items():
            for name, value in _computed(collection).items():
                results[f"{stage}/{entry.log_prefix}{key}/{name}"] = value
    return results


def _batches_of(
    batches: Iterable[Any] | Mapping[str, Iterable[Any]], dataset: str, multitask: bool, split: str
) -> Iterable[Any]:
    if not multitask:
        return batches
    if not isinstance(batches, Mapping) or dataset not in batches:
        raise ValueError(
            f"baseline_metrics: a multi-task module needs {split} batches per dataset, "
            f"{{name: loader}}; none for {dataset!r}"
        )
    found: Iterable[Any] = batches[dataset]
    return found


class _Predictor:
    """A constant prediction in the shape the task's metrics take for a target."""

    def __init__(self, kind: BaselineKind, value: Tensor, task: BaseTaskModule) -> None:
        self.kind = kind
        self.value = value
        self.multiclass = isinstance(task, CrystalSymmetryClassificationTask)

    def __call__(self, target: Tensor) -> Tensor:
        if self.kind == "zero":
            return torch.zeros_like(target)
        if self.multiclass:  # class scores [B, C]: the training frequencies
            return self.value.to(torch.get_default_dtype()).expand(target.shape[0], -1)
        value = self.value.to(target.dtype if target.is_floating_point() else torch.float32)
        return value.reshape(1, *target.shape[1:]).expand(target.shape).clone()


def _fit(
    task: BaseTaskModule,
    keys: list[str],
    kinds: Mapping[str, BaselineKind | None],
    batches: Iterable[Any],
) -> dict[str, _Predictor]:
    """One pass over the training batches: column sums and counts, or class counts."""
    sums: dict[str, Tensor] = {}
    counts: dict[str, Tensor] = {}
    for batch in batches:
        targets = task.get_targets(batch)
        for key in keys:
            if kinds[key] == "zero":
                continue
            target = targets[key].detach().cpu()
            if isinstance(task, CrystalSymmetryClassificationTask):
                indices = target.reshape(-1)  # class indices from 0 (the task's get_target)
                found = torch.bincount(indices, minlength=_num_classes(task, key))
                counts[key] = counts.get(key, torch.zeros_like(found)) + found
                continue
            values = target.reshape(target.shape[0], -1).double()
            present = ~torch.isnan(values)
            total = torch.where(present, values, 0.0).sum(dim=0)
            sums[key] = sums.get(key, torch.zeros_like(total)) + total
            counts[key] = counts.get(key, torch.zeros_like(total)) + present.sum(dim=0)
    predictors: dict[str, _Predictor] = {}
    for key in keys:
        kind = kinds[key]
        assert kind is not None
        if kind == "zero":
            predictors[key] = _Predictor(kind, torch.zeros(()), task)
            continue
        count = counts.get(key)
        multiclass = isinstance(task, CrystalSymmetryClassificationTask)
        # Every column needs a value; of the classes, one is enough.
        if count is None or bool((count.sum() if multiclass else count.min()) == 0):
            raise ValueError(
                f"baseline_metrics: {type(task).__name__} key {key!r} has no value in the "
                "training batches"
            )
        if multiclass:
            value = count.double()  # scores: the most frequent class first
        else:
            mean = sums[key] / count
            # The majority label of a binary key: 1 where more than half of the labels are 1.
            value = (mean > 0.5).double() if kind == "majority" else mean
        predictors[key] = _Predictor(kind, value, task)
    return predictors


def _num_classes(task: BaseTaskModule, key: str) -> int:
    """The number of classes of a multi-class key, as its metrics declare it."""
    declared = [getattr(metric, "num_classes", None) for metric in task.build_metrics(key).values()]
    return max((number for number in declared if isinstance(number, int)), default=1)


def _computed(collection: MetricCollection) -> dict[str, float]:
    """The finite values of a metric collection (nothing if it was never updated)."""
    if not any(metric.update_called for metric in collection.values()):
        return {}
    values: dict[str, float] = {}
    for name, value in collection.compute().items():
        number = float(value)
        if math.isfinite(number):
            values[str(name)] = number
    return values
