import pytest
import torch
from torch_geometric.data import Batch, Data

from matsci.contract import Embeddings
from matsci.contract.testing import random_rotation
from matsci.tasks.core import (
    LATTICE_FEATURES,
    SYMMETRY_FEATURES,
    CrystalSymmetryClassificationTask,
    lattice_invariants,
    reduced_basis,
    symmetry_features,
)


def _random_cells(count: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return 3.0 * torch.eye(3, dtype=torch.float64) + torch.rand(
        count, 3, 3, generator=generator, dtype=torch.float64
    )


def _unimodular(seed: int) -> torch.Tensor:
    """An integer matrix of determinant ±1: a change of basis of the same lattice."""
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.eye(3, dtype=torch.float64)
    for _ in range(4):
        i, j = torch.randperm(3, generator=generator)[:2].tolist()
        shear = torch.eye(3, dtype=torch.float64)
        shear[i, j] = float(torch.randint(-2, 3, (1,), generator=generator))
        matrix = shear @ matrix
    return matrix


def test_another_basis_or_orientation_of_the_same_lattice_gives_the_same_invariants() -> None:
    cells = _random_cells(16)
    reference = lattice_invariants(cells)
    assert reference.shape == (16, LATTICE_FEATURES)
    for seed in range(5):
        rotated = cells @ random_rotation(seed).T
        rebased = _unimodular(seed) @ rotated
        assert not torch.allclose(rebased, cells)
        torch.testing.assert_close(lattice_invariants(rebased), reference)


def test_the_reduced_basis_spans_the_same_lattice() -> None:
    cells = _unimodular(3) @ _random_cells(4)
    basis = reduced_basis(cells)
    # Integer coordinates of the new basis in the old one, with determinant ±1.
    coordinates = basis @ torch.linalg.inv(cells)
    torch.testing.assert_close(coordinates, coordinates.round())
    torch.testing.assert_close(
        torch.linalg.det(coordinates).abs(), torch.ones(4, dtype=torch.float64)
    )
    assert (basis.norm(dim=-1).sum(-1) <= cells.norm(dim=-1).sum(-1) + 1e-9).all()


def test_crystal_systems_show_in_the_degeneracy_indicators() -> None:
    cubic = 4.0 * torch.eye(3)
    hexagonal = torch.tensor([[3.0, 0.0, 0.0], [-1.5, 1.5 * 3**0.5, 0.0], [0.0, 0.0, 5.0]])
    orthorhombic = torch.diag(torch.tensor([3.0, 4.0, 5.0]))
    features = lattice_invariants(torch.stack([cubic, hexagonal, orthorhombic]))
    equal_lengths, right_angles, hexagonal_angles = (
        features[:, 6:9],
        features[:, 9:12],
        features[:, 12:15],
    )
    torch.testing.assert_close(equal_lengths[0], torch.ones(3))
    torch.testing.assert_close(right_angles[0], torch.ones(3))
    assert equal_lengths[1].max() == pytest.approx(1.0)  # a = b
    assert right_angles[1].sum() == pytest.approx(2.0)  # alpha = beta = 90 degrees
    assert hexagonal_angles[1].max() == pytest.approx(1.0)  # gamma = 120 degrees
    assert equal_lengths[2].max() < 1e-6
    torch.testing.assert_close(right_angles[2], torch.ones(3))


class _Mean(torch.nn.Module):
    embedding_dim = 4

    def forward(self, batch: Batch) -> Embeddings:
        return Embeddings(point_embedding=torch.ones(len(batch.pos), 4))


def _crystal(cell: torch.Tensor | None) -> Batch:
    data = Data(pos=torch.rand(2, 3), atomic_numbers=torch.tensor([11, 17]),
                natoms=torch.tensor([2]), spacegroup=torch.tensor([225]))  # fmt: skip
    if cell is not None:
        data.cell = cell.unsqueeze(0)
    return Batch.from_data_list([data])


def test_the_head_sees_the_lattice() -> None:
    task = CrystalSymmetryClassificationTask(encoder=_Mean())
    assert task.output_heads["spacegroup"].input_dim == 4 + SYMMETRY_FEATURES
    # The same atoms with the same embeddings: only the lattice differs.
    cubic = task(_crystal(4.0 * torch.eye(3)))["spacegroup"]
    tetragonal = task(_crystal(torch.diag(torch.tensor([4.0, 4.0, 6.0]))))["spacegroup"]
    assert not torch.allclose(cubic, tetragonal)


def test_structures_without_a_cell_need_lattice_features_off() -> None:
    with pytest.raises(ValueError, match="lattice_features=False"):
        CrystalSymmetryClassificationTask(encoder=_Mean())(_crystal(None))
    task = CrystalSymmetryClassificationTask(encoder=_Mean(), lattice_features=False)
    assert task.output_heads["spacegroup"].input_dim == 4
    assert task(_crystal(None))["spacegroup"].shape == (1, 230)


def test_symmetry_features_count_the_lattice_points_and_see_the_primitive_lattice() -> None:
    hexagonal = torch.tensor([[3.0, 0.0, 0.0], [-1.5, 1.5 * 3**0.5, 0.0], [0.0, 0.0, 9.0]])
    # The primitive cell of a rhombohedral lattice in these hexagonal axes (obverse setting).
    fractional = torch.tensor(
        [[2 / 3, 1 / 3, 1 / 3], [-1 / 3, 1 / 3, 1 / 3], [-1 / 3, -2 / 3, 1 / 3]]
    )
    rhombohedral = fractional @ hexagonal
    cells = torch.stack([hexagonal, hexagonal])
    features = symmetry_features(cells, torch.stack([hexagonal, rhombohedral]))
    assert features.shape == (2, SYMMETRY_FEATURES)
    torch.testing.assert_close(features[:, :LATTICE_FEATURES], lattice_invariants(cells))
    torch.testing.assert_close(features[:, -1].exp(), torch.tensor([1.0, 3.0]), rtol=1e-4, atol=0)
    assert not torch.allclose(features[0], features[1])
    # Without a primitive cell, the cell stands for it and there is one lattice point.
    alone = symmetry_features(cells)
    torch.testing.assert_close(alone[:, LATTICE_FEATURES:-1], alone[:, :LATTICE_FEATURES])
    torch.testing.assert_close(alone[:, -1], torch.zeros(2))
