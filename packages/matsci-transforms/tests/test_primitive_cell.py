import pytest
import torch
from ase.build import bulk
from torch_geometric.data import Data

from matsci.contract import keys
from matsci.contract.testing import random_rotation
from matsci.transforms import PrimitiveCell


def _data(atoms) -> Data:
    return Data(
        pos=torch.tensor(atoms.positions, dtype=torch.float64),
        atomic_numbers=torch.tensor(atoms.numbers),
        cell=torch.tensor(atoms.cell.array, dtype=torch.float64).unsqueeze(0),
    )


def _volume(cell: torch.Tensor) -> float:
    return float(torch.linalg.det(cell.reshape(3, 3)).abs())


@pytest.mark.parametrize(
    ("atoms", "points"),
    [
        (bulk("Cu", "fcc", a=3.6, cubic=True), 4),  # face-centred conventional cell
        (bulk("Fe", "bcc", a=2.87, cubic=True), 2),  # body-centred
        (bulk("Cu", "fcc", a=3.6), 1),  # already primitive
        (bulk("Mg", "hcp", a=3.2, c=5.2), 1),  # two atoms, but one lattice point
        (bulk("NaCl", "rocksalt", a=5.6, cubic=True), 4),  # two elements
        (bulk("Cu", "fcc", a=3.6).repeat((2, 1, 3)), 6),  # a supercell
    ],
)
def test_the_primitive_cell_holds_one_lattice_point(atoms, points: int) -> None:
    data = PrimitiveCell()(_data(atoms))
    primitive = data[keys.PRIMITIVE_CELL]
    assert primitive.shape == (1, 3, 3)
    assert _volume(data.cell) / _volume(primitive) == pytest.approx(points)


def test_it_spans_the_lattice_of_the_conventional_cell() -> None:
    data = PrimitiveCell()(_data(bulk("Cu", "fcc", a=3.6, cubic=True)))
    primitive = data[keys.PRIMITIVE_CELL][0]
    # Every conventional lattice vector and atom offset has integer primitive coordinates.
    coordinates = (data.pos - data.pos[0]) @ torch.linalg.inv(primitive)
    torch.testing.assert_close(coordinates, coordinates.round())
    coordinates = data.cell[0] @ torch.linalg.inv(primitive)
    torch.testing.assert_close(coordinates, coordinates.round())


def test_rotating_the_crystal_rotates_the_primitive_cell() -> None:
    atoms = bulk("Fe", "bcc", a=2.87, cubic=True)
    rotation = random_rotation(seed=1)
    data = _data(atoms)
    rotated = data.clone()
    rotated.pos, rotated.cell = data.pos @ rotation.T, data.cell @ rotation.T
    # The same lattice, turned: the basis may differ in order and sign among equal vectors,
    # so compare what does not depend on the choice (volume and lengths).
    before = PrimitiveCell()(data)[keys.PRIMITIVE_CELL][0]
    after = PrimitiveCell()(rotated)[keys.PRIMITIVE_CELL][0]
    assert _volume(after) == pytest.approx(_volume(before))
    torch.testing.assert_close(after.norm(dim=-1).sort().values, before.norm(dim=-1).sort().values)
    coordinates = after @ torch.linalg.inv(before @ rotation.T)  # integer, det ±1
    torch.testing.assert_close(coordinates, coordinates.round())


def test_displaced_atoms_break_the_centring_beyond_the_tolerance() -> None:
    atoms = bulk("Fe", "bcc", a=2.87, cubic=True)
    atoms.positions[1] += [0.05, 0.0, 0.0]
    data = _data(atoms)
    assert _volume(PrimitiveCell(tolerance=0.01)(data.clone()).primitive_cell) == pytest.approx(
        _volume(data.cell)
    )
    # Moving by the broken translation twice misses the start by 2 x 0.05 Å.
    loose = PrimitiveCell(tolerance=0.2)(data.clone()).primitive_cell
    assert _volume(loose) == pytest.approx(_volume(data.cell) / 2)


def test_bad_tolerance_and_molecules_are_refused() -> None:
    with pytest.raises(ValueError, match="tolerance=0"):
        PrimitiveCell(tolerance=0)
    molecule = Data(pos=torch.zeros(2, 3), atomic_numbers=torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="needs a 3-D 'cell'"):
        PrimitiveCell()(molecule)
