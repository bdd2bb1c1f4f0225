"""Direct (non-conservative) forces of a trained model from edge vectors, for the exporters.

:func:`~matsci.simulate.export_metatomic` and :func:`~matsci.simulate.export_program` export a
:class:`~matsci.tasks.physics.GradFreeForceRegression` (forces predicted by a vector head, no
energy) through this module: the task's own encoder, vector head and force normalizer, run on
a neighbour list given by a simulator as edge vectors.
"""

from __future__ import annotations

from torch import Tensor, nn

from matsci.contract import NUM_ELEMENTS, keys
from matsci.heads import EdgeVectorReadout
from matsci.simulate._atom_energies import _edge_graph
from matsci.tasks.physics import GradFreeForceRegression

__all__ = ["AtomForces", "direct_force_elements"]


class AtomForces(nn.Module):
    """Force on every atom (eV/Å) from edge vectors, through the task's encoder and head.

    The encoder sees the same graph as in :class:`~matsci.simulate._atom_energies.AtomEnergies`
    (built by ``_edge_graph``, so it recomputes exactly the edge vectors). The task's force
    head runs on the atom embeddings, with the edges and their vectors for an
    :class:`~matsci.heads.EdgeVectorReadout` (invariant encoders), and its output is brought
    to eV/Å by the task's force normalizer, as ``task.predict`` does. The module holds the
    encoder, head and normalizer, not the task (a ``LightningModule``, which
    :func:`torch.jit.trace` cannot walk).
    """

    def __init__(self, task: GradFreeForceRegression) -> None:
        super().__init__()
        self.encoder = task.encoder
        self.head = task.output_heads[keys.FORCE]
        self.edge_readout = isinstance(self.head, EdgeVectorReadout)
        # The force normalizer (a fitted or given mean and std), if the task has one.
        self.normalizer: nn.Module | None = None
        if keys.FORCE in task.normalizers:
            self.normalizer = task.normalizers[keys.FORCE]

    def forward(self, vectors: Tensor, numbers: Tensor, edge_index: Tensor) -> Tensor:
        # vectors [E, 3], numbers [N], edge_index [2, E] -> forces [N, 3]
        graph = _edge_graph(vectors, numbers, edge_index)
        embedding = self.encoder(graph).point_embedding  # [N, D] (or irreps)
        if self.edge_readout:
            forces: Tensor = self.head(embedding, edge_index, vectors)  # [N, 3]
        else:
            forces = self.head(embedding)  # [N, 3]
        if self.normalizer is not None:
            forces = self.normalizer.denormalize(forces)  # type: ignore[operator]
        return forces


def direct_force_elements(task: GradFreeForceRegression) -> list[int]:
    """The atomic numbers a direct-force model is exported for when none are given.

    A direct-force model has no reference energies to tell its trained elements by, so every
    element its encoder embeds is accepted: ``1..max_atomic_number`` of the encoder (its
    attribute, or the constructor argument recorded in its ``init_args``), else ``1..118``.

    Parameters
    ----------
    task
        The direct-force task.

    Returns
    -------
    list[int]
        Atomic numbers in increasing order.
    """
    encoder = task.encoder
    largest = getattr(encoder, "max_atomic_number", None)
    if largest is None:
        largest = dict(getattr(encoder, "init_args", None) or {}).get("max_atomic_number")
    largest = NUM_ELEMENTS - 1 if largest is None else int(largest)
    return list(range(1, min(largest, NUM_ELEMENTS - 1) + 1))
