"""Fail at setup, with the keys the data holds, when a target of the model is not in the data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
from typing_extensions import override

from matsci.cli._errors import ConfigError


class CheckTargets(pl.Callback):
    """Check, before the first step, that the data holds every target key of the model.

    Without this check a missing key surfaces at the first batch of training (or later, for
    the validation or test split) as a schema error; here it surfaces at ``setup`` naming the
    key, the file and the keys that file holds. For a multi-task module the keys of each task
    are checked against the data module of its dataset, and every dataset of the tasks must
    have a data module. The first structure of the data module's
    dataset is read, with its transform applied (so ``NoisyPositions`` targets count). Models
    without ``task_keys`` and data modules without a ``dataset`` are not checked.

    Examples
    --------
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
        dataset_tasks = getattr(pl_module, "dataset_tasks", None)
        datasets = getattr(datamodule, "datasets", None)
        if isinstance(dataset_tasks, Mapping) and isinstance(datasets, Mapping):
            _check_multitask(pl_module, dataset_tasks, datasets)
            return
        task_keys = getattr(pl_module, "task_keys", None)
        if isinstance(task_keys, Sequence):
            check_targets(type(pl_module).__name__, list(task_keys), datamodule)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def check_targets(owner: str, task_keys: list[str], datamodule: Any) -> None:
    """Raise :class:`ConfigError` if the first structure of ``datamodule`` lacks a task key.

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
    ConfigError
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
    raise ConfigError(message)


def _check_multitask(
    module: pl.LightningModule,
    dataset_tasks: Mapping[str, Sequence[str]],
    datasets: Mapping[str, Any],
) -> None:
    missing = [name for name in dataset_tasks if name not in datasets]
    if missing:
        raise ConfigError(
            f"the tasks' datasets {missing} have no data module; the data's datasets are "
            f"{list(datasets)}"
        )
    for dataset, task_ids in dataset_tasks.items():
        for task_id in task_ids:
            task = module.task(task_id)  # type: ignore[operator]
            check_targets(task_id, list(task.task_keys), datasets[dataset])
