from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def default_dtype(request: pytest.FixtureRequest) -> Iterator[torch.dtype]:
    """Run the test under each default float dtype; restore the old one afterwards."""
    previous = torch.get_default_dtype()
    dtype: torch.dtype = request.param
    torch.set_default_dtype(dtype)
    yield dtype
    torch.set_default_dtype(previous)


def _emt_labelled(atoms: Atoms) -> Atoms:
    """``atoms`` with EMT energy, forces and stress frozen in a SinglePointCalculator."""
    atoms.calc = EMT()
    results = {
        "energy": atoms.get_potential_energy(),
        "forces": atoms.get_forces(),
        "stress": atoms.get_stress(),
    }
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


@pytest.fixture
def label_with_emt() -> Callable[[Atoms], Atoms]:
    """Attach frozen EMT energy, forces and stress to a structure."""
    return _emt_labelled


@pytest.fixture
def emt_structures() -> list[Atoms]:
    """Six small rattled and strained fcc cells (Cu, Al, CuAu) with EMT labels."""
    rng = np.random.default_rng(0)
    structures = []
    for i, (symbol, a) in enumerate([("Cu", 3.6), ("Al", 4.05), ("Au", 4.08)] * 2):
        atoms = bulk(symbol, "fcc", a=a, cubic=True)
        if i >= 3:
            atoms.numbers[0] = 29 if symbol != "Cu" else 79
        strain = np.eye(3) + 0.02 * rng.standard_normal((3, 3))
        atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
        atoms.rattle(0.05, seed=i)
        structures.append(_emt_labelled(atoms))
    return structures
