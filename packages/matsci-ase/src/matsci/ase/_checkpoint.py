"""The force task of a checkpoint and the neighbour graph it was trained with."""

from __future__ import annotations

import os
from typing import Final, TypeAlias

from matsci.tasks.core import MultiTaskLitModule
from matsci.tasks.physics import ForceRegressionTask, GradFreeForceRegression
from matsci.training import GraphSettings, load_model

ForceTask: TypeAlias = ForceRegressionTask | GradFreeForceRegression
"""The tasks the calculator runs: conservative (energy, forces, stress) or direct forces."""

_WHERE: Final = "MatsciCalculator.from_checkpoint"


def load_force_task(
    path: str | os.PathLike[str], task: str | int | None
) -> tuple[ForceTask, GraphSettings | None]:
    """The force task of a checkpoint, on the CPU, and its recorded graph.

    The checkpoint is read once, by :func:`~matsci.training.load_model`. A single-task
    checkpoint must hold a :class:`ForceRegressionTask` or a :class:`GradFreeForceRegression`;
    from a multi-task one ``task`` picks one by name (``"<dataset>/<task>"``) or index (not
    needed when it has one task).
    """
    loaded = load_model(path, task=task)
    if loaded.task is None:
        assert isinstance(loaded.module, MultiTaskLitModule)  # only then is no task chosen
        raise ValueError(
            f"{_WHERE}(path={os.fspath(path)!r}): a multi-task checkpoint; choose the task with "
            f"task=, one of {loaded.module.task_names}"
        )
    if not isinstance(loaded.task, ForceRegressionTask | GradFreeForceRegression):
        which = f"task={task!r}" if task is not None else f"path={os.fspath(path)!r}"
        raise ValueError(
            f"{_WHERE}({which}): the task is a {type(loaded.task).__name__}, not a "
            "ForceRegressionTask or GradFreeForceRegression; the calculator needs a task that "
            "predicts forces (the gradient of an energy, or directly)"
        )
    return loaded.task, loaded.graph
