"""Read a force task and the settings of its neighbour graph from a Lightning checkpoint."""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import torch

from matsci.tasks.physics import ForceRegressionTask

_WHERE: Final = "MatsciCalculator.from_checkpoint"
_DATAMODULE_HPARAMS: Final = "datamodule_hyper_parameters"
_MULTI_TASK_KEY: Final = "task_configs"
"""A multi-task checkpoint's ``hyper_parameters`` hold this key."""
_FORCE_TASK_HPARAM: Final = "compute_stress"
_FORCE_TASK_BUFFER: Final = "reference_energies"


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint's contents, loaded on the CPU with ``weights_only=True``."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{_WHERE}(path={os.fspath(path)!r}): no such file")
    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several kinds for a file that is not a checkpoint
        raise ValueError(
            f"{_WHERE}(path={os.fspath(path)!r}): not a Lightning checkpoint that loads with "
            f"weights_only=True ({type(error).__name__}: {error})"
        ) from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(
            f"{_WHERE}(path={os.fspath(path)!r}): not a Lightning checkpoint (no 'state_dict')"
        )
    return checkpoint


def load_force_task(
    path: str | os.PathLike[str], checkpoint: Mapping[str, Any], task: str | int | None
) -> tuple[ForceRegressionTask, str | None]:
    """The :class:`ForceRegressionTask` of a checkpoint, on the CPU, and its dataset's name.

    A single-task checkpoint must hold a ``ForceRegressionTask`` (and names no dataset); from a
    multi-task one (whose ``hyper_parameters`` have ``task_configs``) ``task`` picks one by
    name (``"<dataset>/<task>"``) or index.
    """
    hparams: Mapping[str, Any] = checkpoint.get("hyper_parameters") or {}
    if _MULTI_TASK_KEY in hparams:
        return _task_of_multi_task_checkpoint(path, task)
    if task is not None:
        raise ValueError(
            f"{_WHERE}(task={task!r}): task= picks one task of a multi-task checkpoint; "
            f"{os.fspath(path)!r} holds a single task"
        )
    if _FORCE_TASK_HPARAM not in hparams or _FORCE_TASK_BUFFER not in checkpoint["state_dict"]:
        raise ValueError(
            f"{_WHERE}(path={os.fspath(path)!r}): the checkpoint does not hold a "
            f"ForceRegressionTask (no {_FORCE_TASK_HPARAM!r} hyperparameter or "
            f"{_FORCE_TASK_BUFFER!r} buffer); the calculator needs a task whose forces are the "
            "gradient of its energy"
        )
    loaded = ForceRegressionTask.load_from_checkpoint(path, map_location="cpu")
    assert isinstance(loaded, ForceRegressionTask)
    return loaded, None


def _task_of_multi_task_checkpoint(
    path: str | os.PathLike[str], task: str | int | None
) -> tuple[ForceRegressionTask, str]:
    # Imported here: multi-task training may be newer than the installed matsci-tasks-core.
    core = importlib.import_module("matsci.tasks.core")
    module_class: Any = getattr(core, "MultiTaskLitModule", None)
    if module_class is None:
        raise ValueError(
            f"{_WHERE}(path={os.fspath(path)!r}): a multi-task checkpoint needs "
            "matsci.tasks.core.MultiTaskLitModule, which the installed matsci-tasks-core lacks"
        )
    module = module_class.load_from_checkpoint(path, map_location="cpu")
    names = [str(name) for name in module.task_names]
    if task is None and len(names) != 1:
        raise ValueError(
            f"{_WHERE}(path={os.fspath(path)!r}): a multi-task checkpoint; choose the task with "
            f"task=, one of {names}"
        )
    if isinstance(task, str) and task not in names:
        raise ValueError(f"{_WHERE}(task={task!r}): no such task; expected one of {names}")
    if isinstance(task, int) and not -len(names) <= task < len(names):
        raise ValueError(
            f"{_WHERE}(task={task}): index out of range for the {len(names)} tasks {names}"
        )
    name = names[0] if task is None else task if isinstance(task, str) else names[task]
    chosen = module.extract_task(name)
    if not isinstance(chosen, ForceRegressionTask):
        raise ValueError(
            f"{_WHERE}(task={task!r}): the task is a {type(chosen).__name__}, not a "
            "ForceRegressionTask; the calculator needs a task whose forces are the gradient of "
            f"its energy (tasks: {names})"
        )
    return chosen, name.split("/", 1)[0]


def radius_graph_settings(
    checkpoint: Mapping[str, Any], dataset: str | None
) -> tuple[float, int | None] | None:
    """``(cutoff, max_neighbors)`` the data module recorded, or ``None``.

    :class:`~matsci.data.AtomsDataModule` saves its ``PeriodicRadiusGraph`` settings as
    ``hparams["radius_graph"]``, and Lightning stores them in the checkpoint when the model was
    trained with ``trainer.fit(task, datamodule=...)``. A
    :class:`~matsci.data.MultiDataModule` keeps each dataset's module's hyperparameters under
    ``hparams["datasets"][name]["init_args"]``; ``dataset`` names the one to read.
    """
    datamodule: Any = checkpoint.get(_DATAMODULE_HPARAMS) or {}
    if not isinstance(datamodule, Mapping):
        return None
    settings = datamodule.get("radius_graph")
    member = (datamodule.get("datasets") or {}).get(dataset) if dataset is not None else None
    if settings is None and isinstance(member, Mapping):
        settings = (member.get("init_args") or {}).get("radius_graph")
    if not isinstance(settings, Mapping) or settings.get("cutoff") is None:
        return None
    max_neighbors = settings.get("max_neighbors")
    return float(settings["cutoff"]), None if max_neighbors is None else int(max_neighbors)
