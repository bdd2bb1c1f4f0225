"""One task of the engine (:class:`TaskEntry`), and how tasks of one dataset share a batch.

Tasks on the same dataset read the same batch (:func:`place_batches` says which dataset a
step's batch belongs to); those that read the same positions (a view) share one encoder pass,
whose input satisfies all their requests (:func:`view_groups`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import lightning.pytorch as pl
from torch_geometric.data import Batch

from matsci.tasks.core._epoch_means import attached_trainer
from matsci.tasks.core._inputs import InputRequest

if TYPE_CHECKING:
    from matsci.tasks.core._base_task import BaseTaskModule

__all__ = ["TaskEntry", "place_batches", "view_groups"]


@dataclass(frozen=True)
class TaskEntry:
    """One task of an engine: the dataset it trains on, its name and where its values are logged.

    Attributes
    ----------
    dataset
        Name of the dataset whose batches the task reads.
    name
        ``"<dataset>/<task>"``, unique in the engine.
    task
        The task (for a single task, the engine itself).
    log_prefix
        Put between the stage and the key in logged names: ``""`` for a single task, so its
        values are ``val/<key>/mae``; ``"<dataset>/<task>/"`` in multi-task training.
    """

    dataset: str
    name: str
    task: BaseTaskModule
    log_prefix: str

    @property
    def slot(self) -> str:
        """A module-dict key for the task (``.`` is not allowed there)."""
        return self.name.replace("/", "__")


def view_groups(entries: Sequence[TaskEntry]) -> list[tuple[InputRequest, list[TaskEntry]]]:
    """Tasks of one dataset grouped by the positions they read: one encoder pass per group.

    Parameters
    ----------
    entries
        The tasks of one dataset, in order.

    Returns
    -------
    list of tuple
        ``(merged request, tasks)`` per view, in the order each view first appears.
    """
    groups: dict[str, list[TaskEntry]] = {}
    for entry in entries:
        groups.setdefault(entry.task.input_request().view, []).append(entry)
    return [
        (InputRequest.merge(entry.task.input_request() for entry in group), group)
        for group in groups.values()
    ]


def place_batches(
    module: pl.LightningModule,
    batch: Batch | Mapping[str, Batch | None],
    dataset_names: Sequence[str],
    dataloader_idx: int | None,
    stage: str,
) -> dict[str, Batch]:
    """A step's batches keyed by dataset, without the datasets that have none.

    A plain batch belongs to the only dataset, or, with several, to the evaluation loader
    ``dataloader_idx`` of the dict of loaders for ``stage`` of the Trainer ``module`` is
    attached to.

    Parameters
    ----------
    module
        The engine (its class name starts messages).
    batch
        A batch, or ``{dataset: batch or None}``.
    dataset_names
        The datasets with tasks.
    dataloader_idx, stage
        Which loader of which stage gave a plain batch.

    Returns
    -------
    dict
        ``{dataset: batch}``.

    Raises
    ------
    ValueError
        For batches of unknown datasets, or a plain batch that cannot be placed.
    """
    if isinstance(batch, Mapping):
        unknown = [name for name in batch if name not in dataset_names]
        if unknown:
            raise ValueError(
                f"{type(module).__name__}: batches for unknown datasets {unknown}; datasets "
                f"with tasks are {list(dataset_names)}"
            )
        return {name: value for name, value in batch.items() if value is not None}
    if len(dataset_names) == 1:
        return {dataset_names[0]: batch}
    trainer = attached_trainer(module)
    loaders = None
    if trainer is not None and dataloader_idx is not None:
        loaders = {
            "val": trainer.val_dataloaders,
            "test": trainer.test_dataloaders,
            "predict": trainer.predict_dataloaders,
        }.get(stage)
    if isinstance(loaders, Mapping) and dataloader_idx is not None:
        return {str(list(loaders)[dataloader_idx]): batch}
    raise ValueError(
        f"{type(module).__name__}: a {stage} batch without its dataset name; with several "
        f"datasets give batches as {{dataset: batch}} or loaders as a dict keyed by "
        f"{list(dataset_names)}"
    )
