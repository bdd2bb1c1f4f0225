# mypy: untyped-calls-exclude=ase
"""The cutoff, structures and program inputs shared by the tests of matsci.simulate."""

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk
from ase.neighborlist import neighbor_list
from torch import Tensor

CUTOFF = 4.0
"""Å, the neighbour graph and encoder cutoff of the conftest's trained models."""


def export_structures(amplitude: float) -> list[Atoms]:
    """Sizes 16, 8, 5, 1, 1: a rattled Cu cell, a skewed Cu/Ag/Au alloy, a cluster (no pbc),
    an Ag crystal of one atom (its neighbours are its own images), a lone Au atom (no edge).

    The Cu cell and the alloy are rattled by ``amplitude`` (Å), the cluster by 0.05 Å.
    """
    copper = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 1))
    copper.rattle(amplitude, seed=1)
    alloy = bulk("Cu", "fcc", a=3.8).repeat((2, 2, 2))
    alloy.numbers[1::3] = 79
    alloy.numbers[2::3] = 47
    alloy.set_cell(alloy.cell.array @ np.array([[1.0, 0.02, 0], [0, 0.98, 0.03], [0, 0, 1.01]]),
                   scale_atoms=True)  # fmt: skip
    alloy.rattle(amplitude, seed=2)
    cluster = Atoms("Cu3Au2", positions=[[0, 0, 0], [2.5, 0, 0], [0, 2.5, 0.1], [1.3, 1.3, 2.0],
                                         [2.6, 2.6, 0.3]])  # fmt: skip
    cluster.rattle(0.05, seed=3)
    single = bulk("Ag", "fcc", a=4.0)
    lone = Atoms("Au", positions=[[0.0, 0.0, 0.0]])
    return [copper, alloy, cluster, single, lone]


def program_inputs(atoms: Atoms, dtype: torch.dtype) -> tuple[Tensor, ...]:
    """A torch.export program's inputs, from ASE's full neighbour list (as its docstring shows)."""
    i, j, shifts = neighbor_list("ijS", atoms, CUTOFF)
    cell = atoms.cell.array if atoms.cell.rank == 3 else np.zeros((3, 3))
    return (
        torch.tensor(atoms.positions, dtype=dtype),
        torch.tensor(atoms.numbers, dtype=torch.int64),
        torch.tensor(np.stack([i, j]), dtype=torch.int64),
        torch.tensor(shifts @ atoms.cell.array, dtype=dtype),
        torch.tensor(cell, dtype=dtype),
    )
