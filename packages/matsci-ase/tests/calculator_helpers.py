"""Structures and small models shared by the tests of matsci.ase."""

from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk
from torch_geometric.data import Batch

from matsci.contract import Embeddings
from matsci.encoders import SchNetEncoder
from matsci.tasks.physics import ForceRegressionTask
from matsci.transforms import edge_vectors

CUTOFF = 4.0
"""Å, the neighbour graph and encoder cutoff of the trained model."""
SMALL_SCHNET: dict[str, Any] = {
    "hidden_channels": 16,
    "num_filters": 16,
    "num_interactions": 2,
    "num_gaussians": 16,
    "cutoff": CUTOFF,
}


def rattled_copper(
    repeat: int = 2, a: float = 3.6, amplitude: float = 0.05, seed: int = 0
) -> Atoms:
    """A cubic fcc Cu supercell (4 repeat³ atoms), rattled."""
    atoms = bulk("Cu", "fcc", a=a, cubic=True) * (repeat, repeat, repeat)
    atoms.rattle(amplitude, seed=seed)
    return atoms


def mixed_structures() -> list[Atoms]:
    """Periodic cells of several sizes and elements, a strained one, a slab and a cluster."""
    rng = np.random.default_rng(1)
    structures = [rattled_copper(seed=1)]
    alloy = bulk("Au", "fcc", a=4.0, cubic=True) * (1, 1, 2)
    alloy.numbers[::3] = 29
    alloy.set_cell(alloy.cell.array @ (np.eye(3) + 0.03 * rng.standard_normal((3, 3))),
                   scale_atoms=True)  # fmt: skip
    alloy.rattle(0.05, seed=2)
    structures.append(alloy)
    slab = bulk("Ni", "fcc", a=3.55, cubic=True) * (2, 2, 1)
    slab.pbc = [True, True, False]
    slab.center(vacuum=5.0, axis=2)
    slab.rattle(0.05, seed=3)
    structures.append(slab)
    cluster = Atoms("Pt4Pd2", positions=2.6 * np.array(
        [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0.5, 0.5, 0.9]]
    ))  # fmt: skip
    cluster.rattle(0.05, seed=4)
    structures.append(cluster)
    return structures


def untrained_task(*, compute_stress: bool = True, **kwargs: Any) -> ForceRegressionTask:
    """A small SchNet force task with reference energies for Cu and Au only."""
    return ForceRegressionTask(
        encoder=SchNetEncoder(**{**SMALL_SCHNET, "cutoff": 3.0}),
        compute_stress=compute_stress,
        reference_energies={29: -0.5, 79: -0.7},
        output_kwargs={"hidden_dim": 8},
        **kwargs,
    )


class PairEncoder(torch.nn.Module):
    """A smooth pair potential's atom features; it has no ``cutoff`` attribute."""

    embedding_dim = 1

    def forward(self, batch: Batch) -> Embeddings:
        _, distance = edge_vectors(
            batch.pos, batch.edge_index, batch.cell, batch.cell_offsets, batch.batch
        )
        per_atom = torch.zeros(len(batch.pos), dtype=distance.dtype, device=distance.device)
        per_atom = per_atom.index_add(0, batch.edge_index[0], torch.exp(-distance))
        return Embeddings(point_embedding=per_atom.unsqueeze(-1))
