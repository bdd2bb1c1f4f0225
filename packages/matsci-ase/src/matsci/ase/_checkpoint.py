"""A force field from a checkpoint, and the neighbour graph it was trained with.

Shared by every simulator front end (:class:`~matsci.ase.MatsciCalculator`, the torch-sim
model of :mod:`matsci.simulate`), so that each builds the graph by the same rules and refuses
the same inputs with the same words.
"""

from __future__ import annotations

import os
from typing import TypeAlias

import torch

from matsci.tasks.core import MultiTaskLitModule
from matsci.tasks.physics import ForceRegressionTask, GradFreeForceRegression
from matsci.training import load_model
from matsci.transforms import PeriodicRadiusGraph

ForceTask: TypeAlias = ForceRegressionTask | GradFreeForceRegression
"""The tasks a simulator runs: conservative (energy, forces, stress) or direct forces."""


def check_model_dtype(dtype: torch.dtype | None, *, owner: str) -> None:
    """Refuse a model dtype that is not a floating-point ``torch.dtype`` (``None`` keeps it).

    Parameters
    ----------
    dtype
        The dtype asked for.
    owner
        Who asks, for the message (``"MatsciCalculator"``).

    Raises
    ------
    ValueError
        If ``dtype`` is not ``None`` or a floating-point dtype.

    Examples
    --------
    >>> import torch
    >>> from matsci.ase import check_model_dtype
    >>> check_model_dtype(torch.int64, owner="MatsciCalculator")
    Traceback (most recent call last):
    ...
    ValueError: MatsciCalculator(dtype=torch.int64): expected a floating-point torch.dtype such as torch.float32 or torch.float64
    """  # noqa: E501
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(
            f"{owner}(dtype={dtype!r}): expected a floating-point torch.dtype such as "
            "torch.float32 or torch.float64"
        )


def neighbour_graph(
    task: ForceTask, cutoff: float | None, max_neighbors: int | None, *, owner: str
) -> PeriodicRadiusGraph:
    """The neighbour graph of a force task: ``cutoff`` given, else the encoder's ``cutoff``.

    Parameters
    ----------
    task
        The force task.
    cutoff
        Cutoff (Å); ``None`` takes the encoder's ``cutoff`` attribute.
    max_neighbors
        Neighbours kept per atom (``None``: all within the cutoff).
    owner
        Who asks, for the message.

    Returns
    -------
    PeriodicRadiusGraph
        The graph transform, as in training.

    Raises
    ------
    ValueError
        If no cutoff is given and the encoder has none.
    """
    if cutoff is None:
        cutoff = getattr(task.encoder, "cutoff", None)
        if cutoff is None:
            raise ValueError(
                f"{owner}: give cutoff= (the neighbour graph's cutoff in training); the encoder "
                f"{type(task.encoder).__name__} has no 'cutoff' attribute"
            )
    return PeriodicRadiusGraph(cutoff=float(cutoff), max_neighbors=max_neighbors)


def load_force_field(
    path: str | os.PathLike[str],
    *,
    task: str | int | None = None,
    cutoff: float | None = None,
    max_neighbors: int | None = None,
    owner: str,
) -> tuple[ForceTask, PeriodicRadiusGraph]:
    """The force task of a checkpoint, on the CPU, and the neighbour graph it was trained with.

    The checkpoint is read once, by :func:`~matsci.training.load_model`. A single-task
    checkpoint must hold a :class:`~matsci.tasks.physics.ForceRegressionTask` or a
    :class:`~matsci.tasks.physics.GradFreeForceRegression`; from a multi-task one ``task``
    picks one by name (``"<dataset>/<task>"``) or index (not needed when it has one task). The
    graph is the ``cutoff`` and ``max_neighbors`` given, else those the data module recorded
    in the checkpoint (:class:`~matsci.data.AtomsDataModule` does, also inside a
    :class:`~matsci.data.MultiDataModule`, when trained with ``trainer.fit(module,
    datamodule=...)``), else the encoder's ``cutoff`` attribute with all neighbours.

    Parameters
    ----------
    path
        The checkpoint file (loaded with ``weights_only=True``).
    task
        For a multi-task checkpoint: the task's name or index.
    cutoff
        Cutoff (Å) of the neighbour graph, overriding the checkpoint's.
    max_neighbors
        Neighbours kept per atom, overriding the checkpoint's (only with ``cutoff``).
    owner
        Who loads, for messages (``"MatsciCalculator.from_checkpoint"``).

    Returns
    -------
    tuple
        ``(task, graph)``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a matsci checkpoint, holds no force task, is a multi-task
        checkpoint without ``task`` (the message lists the tasks) or ``task`` names none of its
        tasks, names no cutoff anywhere, or ``max_neighbors`` is given without ``cutoff``.
    """
    if max_neighbors is not None and cutoff is None:
        raise ValueError(
            f"{owner}(max_neighbors={max_neighbors}): give cutoff= too; the two describe one "
            "neighbour graph"
        )
    loaded = load_model(path, task=task)
    if loaded.task is None:
        assert isinstance(loaded.module, MultiTaskLitModule)  # only then is no task chosen
        raise ValueError(
            f"{owner}(path={os.fspath(path)!r}): a multi-task checkpoint; choose the task with "
            f"task=, one of {loaded.module.task_names}"
        )
    if not isinstance(loaded.task, ForceRegressionTask | GradFreeForceRegression):
        which = f"task={task!r}" if task is not None else f"path={os.fspath(path)!r}"
        raise ValueError(
            f"{owner}({which}): the task is a {type(loaded.task).__name__}, not a "
            "ForceRegressionTask or GradFreeForceRegression; a simulator needs a task that "
            "predicts forces (the gradient of an energy, or directly)"
        )
    if cutoff is None and loaded.graph is not None:
        cutoff, max_neighbors = loaded.graph.cutoff, loaded.graph.max_neighbors
    elif cutoff is None and getattr(loaded.task.encoder, "cutoff", None) is None:
        raise ValueError(
            f"{owner}(path={os.fspath(path)!r}): the checkpoint records no neighbour graph (no "
            f"AtomsDataModule radius_graph) and the encoder {type(loaded.task.encoder).__name__} "
            "has no 'cutoff'; give cutoff= (and max_neighbors=) as in training"
        )
    return loaded.task, neighbour_graph(loaded.task, cutoff, max_neighbors, owner=owner)
