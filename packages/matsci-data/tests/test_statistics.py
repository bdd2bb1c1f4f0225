import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.neighborlist import neighbor_list
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from matsci.contract import NUM_ELEMENTS
from matsci.contract import keys as K
from matsci.data._convert import atoms_to_data
from matsci.data._statistics import compute_statistics, fit_reference_energies

REFERENCE = {1: -1.25, 8: -4.5, 29: -3.75, 79: -3.0625}


def _synthetic(count: int, *, noise: float = 0.0, seed: int = 0) -> list[Data]:
    """Structures whose energy is exactly the sum of REFERENCE over their atoms (+ noise)."""
    rng = np.random.default_rng(seed)
    elements = np.array(list(REFERENCE))
    structures = []
    for _ in range(count):
        n = int(rng.integers(2, 9))
        numbers = rng.choice(elements, size=n)
        atoms = Atoms(numbers=numbers, positions=rng.uniform(0, 4, (n, 3)), cell=4 * np.eye(3))
        atoms.pbc = True
        atoms.info["energy"] = sum(REFERENCE[z] for z in numbers) + noise * rng.normal()
        atoms.info["dipole"] = rng.normal(size=3)
        atoms.set_array("forces", rng.normal(size=(n, 3)))
        structures.append(atoms_to_data(atoms))
    return structures


@pytest.fixture
def float64_data() -> list[Data]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return _synthetic(40)
    finally:
        torch.set_default_dtype(previous)


def test_fit_recovers_known_reference_energies(float64_data: list[Data]) -> None:
    counts = torch.stack(
        [torch.bincount(d.atomic_numbers, minlength=NUM_ELEMENTS) for d in float64_data]
    )
    energies = torch.cat([d.energy for d in float64_data])
    fitted = fit_reference_energies(counts, energies)
    assert fitted.shape == (NUM_ELEMENTS,)
    assert fitted.dtype == torch.float64
    for z, energy in REFERENCE.items():
        assert abs(fitted[z].item() - energy) < 1e-8
    others = [z for z in range(NUM_ELEMENTS) if z not in REFERENCE]
    assert fitted[others].abs().max() == 0


@pytest.mark.parametrize("batch_size", [None, 1, 7])
def test_streaming_fit_recovers_known_reference_energies(
    float64_data: list[Data], batch_size: int | None
) -> None:
    data = float64_data if batch_size is None else DataLoader(float64_data, batch_size=batch_size)
    stats = compute_statistics(data, keys=[K.ENERGY], elements=[1, 8, 14, 29, 79])
    assert stats.reference_energies is not None
    for z, energy in REFERENCE.items():
        assert abs(stats.reference_energies[z].item() - energy) < 1e-8
    assert stats.reference_residual_rms is not None
    assert stats.reference_residual_rms < 1e-6
    assert stats.elements == [1, 8, 29, 79]
    assert stats.missing_elements == [14]
    assert stats.num_structures == 40


def test_residual_rms_per_atom_matches_a_direct_computation() -> None:
    data = _synthetic(30, noise=0.3, seed=1)
    stats = compute_statistics(DataLoader(data, batch_size=4), keys=[K.ENERGY])
    assert stats.reference_energies is not None
    residuals = [
        (d.energy.double().item() - stats.reference_energies[d.atomic_numbers].sum().item())
        / d.natoms.item()
        for d in data
    ]
    expected = math.sqrt(sum(r * r for r in residuals) / len(residuals))
    assert stats.reference_residual_rms == pytest.approx(expected, rel=1e-6)
    counts = torch.stack([torch.bincount(d.atomic_numbers, minlength=NUM_ELEMENTS) for d in data])
    direct = np.linalg.lstsq(
        counts[:, list(REFERENCE)].double().numpy(),
        torch.cat([d.energy for d in data]).double().numpy(),
        rcond=None,
    )[0]
    np.testing.assert_allclose(stats.reference_energies[list(REFERENCE)].numpy(), direct)


def test_degenerate_fit_still_reproduces_energies() -> None:
    counts = torch.zeros(3, 30)
    counts[:, 29], counts[:, 13] = torch.tensor([2.0, 4.0, 6.0]), torch.tensor([1.0, 2.0, 3.0])
    energies = counts[:, 29] * -3.5 + counts[:, 13] * -3.0  # only Cu2Al: one direction known
    fitted = fit_reference_energies(counts, energies)
    torch.testing.assert_close(counts.double() @ fitted[:30], energies.double())


def test_mean_std_and_force_rms_match_direct_computation() -> None:
    data = _synthetic(25, seed=2)
    streamed = compute_statistics(DataLoader(data, batch_size=6), keys=[K.FORCE, "dipole"])
    forces = torch.cat([d.force for d in data]).double()
    dipoles = torch.cat([d.dipole for d in data]).double()
    torch.testing.assert_close(streamed.mean[K.FORCE], forces.mean(0))
    torch.testing.assert_close(streamed.std[K.FORCE], forces.std(0, correction=0))
    torch.testing.assert_close(streamed.mean["dipole"], dipoles.mean(0))
    torch.testing.assert_close(streamed.std["dipole"], dipoles.std(0, correction=0))
    assert streamed.force_rms == pytest.approx(forces.pow(2).mean().sqrt().item(), rel=1e-12)
    assert streamed.reference_energies is None
    assert streamed.num_atoms == forces.shape[0]


def test_default_keys_are_every_target(float64_data: list[Data]) -> None:
    stats = compute_statistics(float64_data)
    assert set(stats.mean) == {K.ENERGY, K.FORCE, "dipole"}
    assert stats.mean[K.ENERGY].shape == (1,)


def test_stress_statistics_have_nine_columns() -> None:
    atoms = bulk("Cu")
    atoms.info["stress"] = np.arange(9.0).reshape(3, 3)
    stats = compute_statistics([atoms_to_data(atoms)] * 2, keys=[K.STRESS])
    assert stats.mean[K.STRESS].tolist() == list(range(9))
    assert stats.std[K.STRESS].tolist() == [0.0] * 9


def test_average_neighbours_from_edge_index() -> None:
    data = atoms_to_data(bulk("Cu", cubic=True))
    data[K.EDGE_INDEX] = torch.tensor([[0, 1, 1, 2, 3, 3], [1, 0, 2, 1, 2, 0]])
    other = atoms_to_data(bulk("Al", cubic=True) * (2, 1, 1))
    other[K.EDGE_INDEX] = torch.tensor([[0, 1], [1, 0]])
    stats = compute_statistics(DataLoader([data, other], batch_size=2), keys=[])
    assert stats.avg_num_neighbors == pytest.approx(8 / 12)
    assert stats.force_rms is None


@pytest.mark.parametrize("batch_size", [1, 3])
def test_average_neighbours_from_cutoff_match_ase(batch_size: int) -> None:
    structures = [bulk("Cu", cubic=True), bulk("Al") * (2, 2, 2), bulk("Au", orthorhombic=True)]
    for i, atoms in enumerate(structures):
        atoms.rattle(0.1, seed=i)
    expected = sum(len(neighbor_list("i", a, 3.2)) for a in structures) / sum(
        len(a) for a in structures
    )
    loader = DataLoader([atoms_to_data(a) for a in structures], batch_size=batch_size)
    stats = compute_statistics(loader, keys=[], cutoff=3.2)
    assert stats.avg_num_neighbors == pytest.approx(expected)
    assert compute_statistics(loader, keys=[]).avg_num_neighbors is None


def test_errors() -> None:
    with pytest.raises(ValueError, match=r"compositions of shape \(3,\); expected \[B, M\]"):
        fit_reference_energies(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match=r"energies of shape \(2,\); expected \[3\]"):
        fit_reference_energies(torch.zeros(3, 10), torch.zeros(2))
    with pytest.raises(ValueError, match="the data holds no structures"):
        compute_statistics([])
    with pytest.raises(ValueError, match=r"an item has no 'energy'; it holds \["):
        compute_statistics([atoms_to_data(bulk("Cu"))], keys=[K.ENERGY])


def test_missing_values_are_left_out_of_every_statistic() -> None:
    data = _synthetic(12, seed=3)
    gaps = _synthetic(3, seed=4)
    for item in gaps:
        item.energy = torch.full_like(item.energy, math.nan)
        item.force = torch.full_like(item.force, math.nan)
        item.dipole[0, 1] = math.nan
    with_gaps = compute_statistics(DataLoader(data + gaps, batch_size=5), keys=[K.ENERGY, K.FORCE])
    clean = compute_statistics(DataLoader(data, batch_size=5), keys=[K.ENERGY, K.FORCE])
    assert with_gaps.reference_energies is not None
    assert clean.reference_energies is not None
    torch.testing.assert_close(with_gaps.reference_energies, clean.reference_energies)
    assert with_gaps.force_rms == pytest.approx(clean.force_rms, rel=1e-12)
    torch.testing.assert_close(with_gaps.mean[K.ENERGY], clean.mean[K.ENERGY])
    torch.testing.assert_close(with_gaps.std[K.FORCE], clean.std[K.FORCE])
    assert with_gaps.count[K.ENERGY].tolist() == [12.0]
    dipoles = compute_statistics(data + gaps, keys=["dipole"])
    assert dipoles.count["dipole"].tolist() == [15.0, 12.0, 15.0]
    expected = torch.cat([d.dipole for d in data + gaps]).double().nanmean(0)
    torch.testing.assert_close(dipoles.mean["dipole"], expected)


def test_counts_per_column() -> None:
    data = _synthetic(5, seed=6)
    stats = compute_statistics(DataLoader(data, batch_size=2), keys=[K.FORCE, K.ENERGY])
    atoms = sum(d.num_nodes for d in data)
    assert stats.count[K.FORCE].tolist() == [float(atoms)] * 3
    assert stats.count[K.ENERGY].tolist() == [5.0]
    assert stats.count[K.FORCE].dtype == torch.float64


def test_infinite_target_is_refused() -> None:
    data = _synthetic(2)
    data[1].dipole[0, 2] = math.inf
    with pytest.raises(ValueError, match=r"key 'dipole': infinite value in column\(s\) \[2\]"):
        compute_statistics(data, keys=["dipole"])
