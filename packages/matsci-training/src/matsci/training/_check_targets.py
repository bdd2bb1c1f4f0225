"""Fail at setup, with the keys the data holds, when a target of the model is not in the data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
from typing_extensions import override

from matsci.tasks.core import BaseTaskModule, MultiTaskLitModule

__all__ = ["CheckTargets", "check_targets"]


class CheckTargets(pl.Callback):
    """Check, before the first step, that the data holds every target key of the model.

    Without this check a missing key surfaces at the first batch of training (or later, for
    the validation or test split) as a schema error; here it surfaces at ``setup`` naming the
    key, the file and the keys that file holds. For a multi-task module the keys of each task
    are checked against the data module of its dataset, and every dataset of the tasks must
    have a data module (a :class:`~matsci.data.MultiDataModule`). The first structure of the
    data module's dataset is read, with its transform applied (so ``NoisyPositions`` targets
    count). Other modules, and data modules without a ``dataset``, are not checked.

    Examples
    --------
    >>> from matsci.training import CheckTargets
    >>> CheckTargets()
    CheckTargets()
    """

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Read one structure and compare its attributes with the model's task keys."""
        if stage == "predict":
            return
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None:
            return
        if isinstance(pl_module, MultiTaskLitModule):
            datasets = getattr(datamodule, "datasets", None)
            if isinstance(datasets, Mapping):
                _check_multitask(pl_module, datasets)
        elif isinstance(pl_module, BaseTaskModule):
            check_targets(type(pl_module).__name__, list(pl_module.task_keys), datamodule)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def check_targets(owner: str, task_keys: list[str], datamodule: Any) -> None:
    """Raise a ``ValueError`` if the first structure of ``datamodule`` lacks a task key.

    Parameters
    ----------
    owner
        Who needs the keys (named in the message).
    task_keys
        The keys.
    datamodule
        A data module whose ``dataset`` attribute (after ``setup``) is indexable.

    Raises
    ------
    ValueError
        Naming the missing keys, the file and the keys it holds.
    """
    dataset = getattr(datamodule, "dataset", None)
    if dataset is None or len(dataset) == 0:
        return
    sample = dataset[0]
    missing = [key for key in task_keys if key not in sample]
    if not missing:
        return
    available = list(getattr(dataset, "available_keys", ()))
    where = getattr(datamodule, "path", None) or getattr(dataset, "path", "the data")
    message = f"target key {missing} of {owner} is not in {where!r}; keys available: {available}"
    requested = getattr(datamodule, "keys", None)
    unrequested = [key for key in missing if key in available]
    if unrequested and isinstance(requested, Sequence):
        message += f" (add {unrequested} to the data module's keys {list(requested)})"
    raise ValueError(message)


def _check_multitask(module: MultiTaskLitModule, datasets: Mapping[str, Any]) -> None:
    dataset_tasks = module.dataset_tasks
    missing = [name for name in dataset_tasks if name not in datasets]
    if missing:
        raise ValueError(
            f"the tasks' datasets {missing} have no data module; the data's datasets are "
            f"{list(datasets)}"
        )
    for dataset, task_ids in dataset_tasks.items():
        for task_id in task_ids:
            check_targets(task_id, list(module.task(task_id).task_keys), datasets[dataset])
