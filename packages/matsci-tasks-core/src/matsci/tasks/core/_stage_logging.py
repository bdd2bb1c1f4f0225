"""What the engine logs per stage: the training values, the metric collections, evaluation losses.

Training values (total loss, each task's loss, each key's loss) are named once and accumulated
cheaply by :mod:`~matsci.tasks.core._epoch_means`; evaluation losses are averaged over the
epoch (and DDP ranks) in one ``MeanMetric`` per task and logged at the epoch's end.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Literal, cast

import lightning.pytorch as pl
from torch import Tensor, nn
from torchmetrics import MeanMetric

from matsci.tasks.core._task_entry import TaskEntry

__all__ = [
    "Stage",
    "log_eval_losses",
    "log_eval_step_losses",
    "rank_average_weight",
    "stage_metrics",
    "train_value_names",
    "train_value_weights",
]

Stage = Literal["train", "val", "test"]


def train_value_names(entries: Sequence[TaskEntry], multitask: bool) -> list[str]:
    """Names of the logged training values: the total, each task's loss (multi-task), each key's.

    Examples
    --------
    >>> train_value_names([], False)
    ['train/loss']
    """
    names = ["train/loss"]
    if multitask:
        names += [f"train/{entry.log_prefix}loss" for entry in entries]
    names += [
        f"train/{entry.log_prefix}{key}/loss" for entry in entries for key in entry.task.task_keys
    ]
    return names


def train_value_weights(
    entries: Sequence[TaskEntry], sizes: Mapping[str, float], multitask: bool
) -> list[float]:
    """Batch-size weights of the logged training values (the order of the names).

    ``sizes`` is ``{dataset: structures in this step's batch}``; a task without a batch
    weighs 0.
    """
    weights = [sum(sizes.values())]
    per_task = [sizes.get(entry.dataset, 0.0) for entry in entries]
    if multitask:
        weights += per_task
    for entry, size in zip(entries, per_task, strict=True):
        weights += [size] * len(entry.task.task_keys)
    return weights


def stage_metrics(entries: Sequence[TaskEntry], stage: Stage) -> nn.ModuleDict:
    """``{slot: {key: MetricCollection}}`` of one stage, logged as ``<stage>/<prefix><key>/``."""
    return nn.ModuleDict(
        {
            entry.slot: nn.ModuleDict(
                {
                    key: entry.task.build_metrics(key).clone(
                        prefix=f"{stage}/{entry.log_prefix}{key}/"
                    )
                    for key in entry.task.task_keys
                }
            )
            for entry in entries
        }
    )


def rank_average_weight(batch_size: int) -> int:
    """The ``batch_size`` to give ``self.log`` for a value averaged over DDP ranks: a float.

    Lightning 2.6 sums the logged batch sizes in an integer tensor and floors its average over
    ranks, which inflates ``sync_dist`` means when the ranks saw different numbers of
    structures (Lightning issue #21859; evaluation shards without padding do). A float count
    keeps the average exact; Lightning only ever adds and divides it.

    Examples
    --------
    >>> rank_average_weight(3)
    3.0
    """
    return cast(int, float(batch_size))


def log_eval_step_losses(
    module: pl.LightningModule,
    metric: MeanMetric,
    entry: TaskEntry,
    stage: Stage,
    task_total: Tensor,
    losses: Mapping[str, Tensor],
    batch_size: int,
) -> None:
    """Add a task's evaluation loss to its epoch mean and log each key's loss (epoch mean)."""
    metric.update(task_total.detach(), weight=batch_size)
    for key, value in losses.items():
        module.log(f"{stage}/{entry.log_prefix}{key}/loss", value, sync_dist=True,
                   batch_size=rank_average_weight(batch_size), on_step=False, on_epoch=True,
                   add_dataloader_idx=False)  # fmt: skip


def log_eval_losses(
    module: pl.LightningModule,
    stage: Stage,
    metrics: Sequence[tuple[TaskEntry, MeanMetric]],
    loss_weight: Callable[[str], float],
    multitask: bool,
) -> None:
    """Log the epoch's evaluation losses: each task's (multi-task) and the weighted total.

    Tasks whose metric saw no batch are left out; each metric is reset after it is read.
    """
    total: Tensor | None = None
    for entry, metric in metrics:
        if not metric.update_called:
            continue
        value = metric.compute()  # reduced over DDP ranks by torchmetrics
        metric.reset()
        if multitask:
            module.log(f"{stage}/{entry.log_prefix}loss", value)
        weighted = loss_weight(entry.name) * value
        total = weighted if total is None else total + weighted
    if total is not None:
        module.log(f"{stage}/loss", total, prog_bar=True)
