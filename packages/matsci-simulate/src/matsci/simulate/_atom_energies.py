"""Per-atom energies of a trained force field from edge vectors, shared by the exporters.

:func:`~matsci.simulate.export_metatomic` and :func:`~matsci.simulate.export_program` both run
the task's own encoder and energy head on a neighbour list given by a simulator, as edge
vectors; this module holds that piece and the rules that pick the task and its cutoff.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.data import Data

from matsci.contract import keys
from matsci.tasks.physics import ForceRegressionTask, GradFreeForceRegression

__all__ = ["AtomEnergies", "ExportedTask", "check_on_other_graphs", "exported_force_task"]

ExportedTask = ForceRegressionTask | GradFreeForceRegression
"""What the exporters write: an energy model (energy, forces, stress) or direct forces."""


def _edge_graph(vectors: Tensor, numbers: Tensor, edge_index: Tensor) -> Data:
    """The encoder's input graph whose edge vectors are ``vectors`` (traced with its caller).

    Zero positions, the identity cell and ``vectors`` as the edges' cell offsets: an encoder
    that recomputes edge vectors as ``pos[j] - pos[i] + offsets @ cell`` gets exactly
    ``vectors``, so gradients flow to them. Shared by :class:`AtomEnergies` and
    :class:`~matsci.simulate._direct_forces.AtomForces`.

    Parameters
    ----------
    vectors
        Edge vectors [E, 3] (Å).
    numbers
        Atomic numbers [N].
    edge_index
        Edges [2, E].

    Returns
    -------
    torch_geometric.data.Data
        One structure of N atoms and E edges.
    """
    identity = torch.eye(3, dtype=vectors.dtype, device=vectors.device).unsqueeze(0)  # [1, 3, 3]
    return Data(
        pos=vectors.new_zeros(numbers.shape[0], 3),
        atomic_numbers=numbers,
        edge_index=edge_index,
        cell=identity,
        cell_offsets=vectors,
        natoms=numbers.new_ones(1),
    )


class AtomEnergies(nn.Module):
    """Energy of every atom (eV) from edge vectors, through the task's own encoder and head.

    The encoder sees the simulator's edge vectors exactly (see :func:`_edge_graph`), so
    gradients flow to them (and from them to positions and cell). The
    module is traced by the exporters (the encoder reads a ``Data`` object, which TorchScript
    cannot script), and each checks its trace on graphs of other sizes.
    """

    energy_scale: Tensor
    energy_shift: Tensor
    reference_energies: Tensor

    def __init__(self, task: ForceRegressionTask) -> None:
        super().__init__()
        self.encoder = task.encoder
        self.head = task.output_heads[keys.ENERGY]
        self.register_buffer("energy_scale", task.energy_scale.detach().clone())
        self.register_buffer("energy_shift", task.energy_shift.detach().clone())
        self.register_buffer("reference_energies", task.reference_energies.detach().clone())

    def forward(self, vectors: Tensor, numbers: Tensor, edge_index: Tensor) -> Tensor:
        # vectors [E, 3], numbers [N], edge_index [2, E] -> energies [N]
        embeddings = self.encoder(_edge_graph(vectors, numbers, edge_index))
        atom: Tensor = self.head(embeddings.point_embedding).squeeze(-1)  # [N]
        atom = self.energy_scale * atom + self.energy_shift
        return atom + self.reference_energies[numbers].to(atom.dtype)


def exported_force_task(
    source: str | os.PathLike[str] | ExportedTask,
    task: str | int | None,
    cutoff: float | None,
    *,
    owner: str,
) -> tuple[ExportedTask, float]:
    """The force task and the neighbour-list cutoff (``owner`` names the caller in errors).

    The task is a :class:`~matsci.tasks.physics.ForceRegressionTask` (energy, forces, stress)
    or a :class:`~matsci.tasks.physics.GradFreeForceRegression` (direct forces); another task
    read from a checkpoint is refused with a ``ValueError``, another object with a
    ``TypeError``.

    The cutoff is ``cutoff`` if given, else the one the checkpoint recorded, else the
    encoder's ``cutoff``. A model trained on graphs that keep only ``max_neighbors``
    neighbours is refused: simulators' neighbour lists keep every neighbour in the cutoff.
    """
    expected = (
        "not a ForceRegressionTask (energy, forces, stress) or a GradFreeForceRegression "
        "(direct forces)"
    )
    if isinstance(source, ForceRegressionTask | GradFreeForceRegression):
        force_task, recorded = source, None
    elif isinstance(source, str | os.PathLike):
        from matsci.training import load_model

        loaded = load_model(source, task=task)
        if loaded.task is None:
            raise ValueError(
                f"{owner}({os.fspath(source)!r}): a multi-task checkpoint; choose the force "
                "task with task="
            )
        if not isinstance(loaded.task, ForceRegressionTask | GradFreeForceRegression):
            raise ValueError(
                f"{owner}({os.fspath(source)!r}): the task is a "
                f"{type(loaded.task).__name__}, {expected}; pick one of a multi-task "
                "checkpoint with task="
            )
        force_task, recorded = loaded.task, loaded.graph
    else:
        raise TypeError(f"{owner}({type(source).__name__}): {expected}, nor a checkpoint path")
    if cutoff is None and recorded is not None:
        if recorded.max_neighbors is not None:
            raise ValueError(
                f"{owner}: the model was trained on graphs with max_neighbors="
                f"{recorded.max_neighbors}; the exported model is given every neighbour "
                "within the cutoff"
            )
        cutoff = recorded.cutoff
    if cutoff is None:
        cutoff = getattr(force_task.encoder, "cutoff", None)
    if cutoff is None or not 0 < float(cutoff) < math.inf:
        raise ValueError(f"{owner}: no valid cutoff ({cutoff!r}); give cutoff= (Å) as in training")
    return force_task, float(cutoff)


def check_on_other_graphs(
    reference: Callable[..., Any],
    exported: Callable[..., Any],
    graphs: Iterable[tuple[int, tuple[Tensor, ...]]],
    dtype: torch.dtype,
    *,
    failure: str,
) -> None:
    """Refuse an exported model that differs from the module it came from on other graphs.

    Tracing records one graph size; an encoder whose operations depend on it would give wrong
    results elsewhere, silently. Both exporters run their result on graphs of other sizes
    before writing a file.

    Parameters
    ----------
    reference
        The module that was exported.
    exported
        The traced or exported module.
    graphs
        ``(number of atoms, inputs)`` pairs to compare on.
    dtype
        The model's floating type (1e-5 tolerance for float32, 1e-10 for float64).
    failure
        The start of the message (who exported what).

    Raises
    ------
    ValueError
        ``failure``, naming the size where an output differs (NaN equals NaN).
    """
    tolerance = 1e-5 if dtype == torch.float32 else 1e-10
    for num_atoms, inputs in graphs:
        expected, got = reference(*inputs), exported(*inputs)
        pairs = (
            zip(expected, got, strict=True) if isinstance(expected, tuple) else [(expected, got)]
        )
        for want, have in pairs:
            if have.shape != want.shape or not torch.allclose(
                have, want, rtol=tolerance, atol=tolerance, equal_nan=True
            ):
                raise ValueError(f"{failure} (traced on 5 atoms, wrong on {num_atoms})")
