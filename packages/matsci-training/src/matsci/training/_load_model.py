"""One way to load a trained model: ``load_model(path)`` and the record it returns."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import lightning.pytorch as pl
import torch

from matsci.contract import import_class
from matsci.tasks.core import (
    CHECKPOINT_RECORD,
    BaseTaskModule,
    MultiTaskLitModule,
    TaskEngine,
)
from matsci.tasks.core._checkpoint_io import Weights, checkpoint_errors

__all__ = ["GraphSettings", "LoadedModel", "load_model"]

_DATAMODULE_HPARAMS: Final = "datamodule_hyper_parameters"
_TRAINING_STATE: Final = frozenset(
    {
        "state_dict",
        "current_model_state",
        "averaging_state",
        "optimizer_states",
        "lr_schedulers",
        "callbacks",
        "loops",
    }
)
"""Checkpoint entries that hold weights or training state (left out of ``LoadedModel.records``)."""


@dataclass(frozen=True)
class GraphSettings:
    """The neighbour graph a model was trained with (a ``PeriodicRadiusGraph``).

    Attributes
    ----------
    cutoff
        Cutoff radius, Å.
    max_neighbors
        Neighbours kept per atom, ``None`` for all.
    """

    cutoff: float
    max_neighbors: int | None = None


@dataclass(frozen=True)
class LoadedModel:
    """A trained model as :func:`load_model` restored it, with what its checkpoint says about it.

    Attributes
    ----------
    path
        The checkpoint file.
    module
        The restored module (in evaluation mode): a task such as
        :class:`~matsci.tasks.core.ScalarRegressionTask`, or a
        :class:`~matsci.tasks.core.MultiTaskLitModule`.
    task
        The task to use: ``module`` itself for a single task; for a multi-task module, a
        standalone copy of the task chosen with ``load_model(..., task=...)`` (or of its only
        task), else ``None``.
    dataset
        The dataset of ``task`` in a multi-task module (``None`` for a single task or when no
        task was chosen).
    graph
        The neighbour graph the training data module recorded (``AtomsDataModule`` saves its
        ``PeriodicRadiusGraph`` settings; a ``MultiDataModule`` those of each dataset, read
        for ``dataset``, or for the only dataset); ``None`` if it recorded none.
    records
        The checkpoint's plain-data entries besides weights and training state:
        ``hyper_parameters``, ``datamodule_hyper_parameters``, ``epoch``, ``global_step``, the
        ``"matsci"`` record and those of callbacks (``matsci predict`` reads the CLI's).
    """

    path: Path
    module: pl.LightningModule
    task: BaseTaskModule | None
    dataset: str | None
    graph: GraphSettings | None
    records: Mapping[str, Any] = field(repr=False)

    @property
    def is_multitask(self) -> bool:
        """Whether :attr:`module` is a :class:`~matsci.tasks.core.MultiTaskLitModule`."""
        return isinstance(self.module, MultiTaskLitModule)

    @property
    def model_class(self) -> str:
        """The dotted class path the checkpoint records."""
        return str(self.records[CHECKPOINT_RECORD]["model_class"])


def load_model(
    path: str | os.PathLike[str],
    *,
    map_location: Any = "cpu",
    task: str | int | None = None,
    weights: Weights = "evaluation",
) -> LoadedModel:
    """Load a trained matsci model from a Lightning checkpoint, with ``weights_only=True``.

    The class comes from the record the module wrote into its checkpoint
    (``checkpoint["matsci"]["model_class"]``, see :data:`~matsci.tasks.core.CHECKPOINT_RECORD`),
    never from guessing at the contents; the module is restored by that class's
    ``load_from_checkpoint``. The file is read from disk once: its bytes give the records and
    are handed to ``load_from_checkpoint`` as an in-memory file object.

    Parameters
    ----------
    path
        The checkpoint file.
    map_location
        Where to put the weights, as in :func:`torch.load`.
    task
        For a multi-task checkpoint: the task to extract as :attr:`LoadedModel.task`, by name
        (``"<dataset>/<task>"``) or index; by default the only task, if there is one.
    weights
        ``"evaluation"``: the checkpoint's ``state_dict`` (the averaged weights when training
        kept an :class:`~matsci.training.ExponentialMovingAverage`); ``"raw"``: the trained
        weights a resumed run continues from.

    Returns
    -------
    LoadedModel
        The module, the chosen task, its dataset, the neighbour graph and the records.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a Lightning checkpoint (truncated, corrupted or another kind of
        file), has no ``"matsci"`` record (written by an older matsci or another program), names
        a class that is not a matsci task module, or ``task`` names no task of the module (or is
        given for a single-task checkpoint).

    Examples
    --------
    >>> import tempfile, pathlib, torch
    >>> from matsci.training import load_model
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "notes.ckpt"
    >>> _ = path.write_text("not a checkpoint")
    >>> load_model(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: load_model: '.../notes.ckpt' is not a readable checkpoint ...
    """
    file = Path(path)
    contents, checkpoint = _read(file)
    cls = _model_class(file, checkpoint)
    records = {key: value for key, value in checkpoint.items() if key not in _TRAINING_STATE}
    del checkpoint  # free its weights: the module is restored from ``contents``
    module = cls.load_from_checkpoint(
        contents, map_location=map_location, weights_only=True, weights=weights
    )
    module.eval()
    chosen, dataset = _choose_task(file, module, task)
    return LoadedModel(
        path=file,
        module=module,
        task=chosen,
        dataset=dataset,
        graph=_graph_settings(records.get(_DATAMODULE_HPARAMS), module, dataset),
        records=records,
    )


def _read(file: Path) -> tuple[io.BytesIO, dict[str, Any]]:
    """The bytes of ``file`` (read once, as an in-memory file at its start) and the checkpoint.

    Errors name ``file`` as :func:`~matsci.tasks.core.read_checkpoint` does: a missing file is a
    ``FileNotFoundError``, anything but a Lightning checkpoint (a dict with a ``state_dict``)
    a ``ValueError``.
    """
    if not file.is_file():
        raise FileNotFoundError(f"load_model: checkpoint {os.fspath(file)!r} does not exist")
    with checkpoint_errors(file, "load_model"):
        contents = io.BytesIO(file.read_bytes())
        checkpoint = torch.load(contents, map_location="cpu", weights_only=True)
        if not isinstance(checkpoint, dict):
            raise ValueError(f"it holds a {type(checkpoint).__name__}, not a dict")
        if "state_dict" not in checkpoint:
            raise ValueError(
                f"it has no ['state_dict'] (top-level keys: {sorted(map(str, checkpoint))})"
            )
    contents.seek(0)
    return contents, checkpoint


def _model_class(file: Path, checkpoint: Mapping[str, Any]) -> type[TaskEngine]:
    """The class the checkpoint's ``"matsci"`` record names."""
    record = checkpoint.get(CHECKPOINT_RECORD)
    if not isinstance(record, Mapping) or not isinstance(record.get("model_class"), str):
        raise ValueError(
            f"load_model: {str(file)!r} is a Lightning checkpoint without a {CHECKPOINT_RECORD!r} "
            "record naming its model class: it was written by an older matsci or by another "
            "program; load it with the task class's load_from_checkpoint"
        )
    name = record["model_class"]
    cls = import_class(name, pl.LightningModule, argument=f"load_model: {str(file)!r} model_class")
    if not issubclass(cls, TaskEngine):
        raise ValueError(
            f"load_model: {str(file)!r} holds a {name}, not a matsci task module "
            "(a TaskEngine: a task or a MultiTaskLitModule)"
        )
    return cls


def _choose_task(
    file: Path, module: pl.LightningModule, task: str | int | None
) -> tuple[BaseTaskModule | None, str | None]:
    """The task to use and its dataset (see :attr:`LoadedModel.task`)."""
    if not isinstance(module, MultiTaskLitModule):
        if task is not None:
            raise ValueError(
                f"load_model(task={task!r}): task= picks one task of a multi-task checkpoint; "
                f"{str(file)!r} holds a single {type(module).__name__}"
            )
        assert isinstance(module, BaseTaskModule)
        return module, None
    names = [str(name) for name in module.task_names]
    if task is None:
        if len(names) != 1:
            return None, None
        task = names[0]
    if isinstance(task, bool) or not isinstance(task, str | int):
        raise ValueError(f"load_model(task={task!r}): expected a task name or index of {names}")
    if isinstance(task, str) and task not in names:
        raise ValueError(f"load_model(task={task!r}): no such task; expected one of {names}")
    if isinstance(task, int) and not -len(names) <= task < len(names):
        raise ValueError(
            f"load_model(task={task}): index out of range for the {len(names)} tasks {names}"
        )
    name = task if isinstance(task, str) else names[task]
    chosen = module.extract_task(name)
    chosen.eval()
    return chosen, name.split("/", 1)[0]


def _graph_settings(
    datamodule: Any, module: pl.LightningModule, dataset: str | None
) -> GraphSettings | None:
    """``(cutoff, max_neighbors)`` the data module recorded, or ``None``.

    :class:`~matsci.data.AtomsDataModule` saves its ``PeriodicRadiusGraph`` settings as
    ``hparams["radius_graph"]``; Lightning stores a data module's hyperparameters in the
    checkpoint when the model was trained with ``trainer.fit(module, datamodule=...)``. A
    :class:`~matsci.data.MultiDataModule` keeps each dataset's module's hyperparameters under
    ``hparams["datasets"][name]["init_args"]``.
    """
    if not isinstance(datamodule, Mapping):
        return None
    settings = datamodule.get("radius_graph")
    if settings is None and isinstance(module, MultiTaskLitModule):
        names = [str(name) for name in module.dataset_names]
        if dataset is None and len(names) == 1:
            dataset = names[0]
        members = datamodule.get("datasets") or {}
        member = members.get(dataset) if dataset is not None else None
        if isinstance(member, Mapping):
            settings = (member.get("init_args") or {}).get("radius_graph")
    if not isinstance(settings, Mapping) or settings.get("cutoff") is None:
        return None
    max_neighbors = settings.get("max_neighbors")
    return GraphSettings(
        cutoff=float(settings["cutoff"]),
        max_neighbors=None if max_neighbors is None else int(max_neighbors),
    )
