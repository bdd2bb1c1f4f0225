from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_geometric.data import Batch

from matsci.contract import keys as K
from matsci.contract.keys import STRUCTURE_ID
from matsci.data._convert import atoms_to_data, data_to_atoms


@contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _tolerance(dtype: torch.dtype) -> dict[str, float]:
    return {"rtol": 1e-6, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 0, "atol": 0}


def _labelled_alloy(label_with_emt: Callable[[Atoms], Atoms]) -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.62, cubic=True) * (2, 1, 1)
    atoms.numbers[[1, 6]] = 79
    atoms.set_cell(atoms.cell.array @ [[1.0, 0.02, 0.0], [0.0, 0.99, 0.01], [0.0, 0.0, 1.01]])
    atoms.pbc = [True, True, False]
    atoms.rattle(0.05, seed=3)
    atoms = label_with_emt(atoms)
    atoms.info.update({"bandgap": 0.25, "dipole_ref": np.array([0.1, -0.2, 0.3]), "count": 7})
    atoms.info.update({"converged": True, "comment": "skipped: not numeric"})
    atoms.set_array("charges_ref", np.linspace(-1, 1, len(atoms)))
    atoms.set_array("features", np.arange(2 * len(atoms), dtype=float).reshape(-1, 2))
    atoms.set_tags(np.arange(len(atoms)) % 3)
    return atoms


def test_fields_follow_the_data_contract(label_with_emt: Callable[[Atoms], Atoms]) -> None:
    atoms = _labelled_alloy(label_with_emt)
    n = len(atoms)
    data = atoms_to_data(atoms, index=12)

    assert data[K.POS].shape == (n, 3)
    assert data[K.POS].dtype == torch.get_default_dtype()
    assert data[K.ATOMIC_NUMBERS].dtype == torch.long
    assert data[K.ATOMIC_NUMBERS].tolist() == atoms.numbers.tolist()
    assert data[K.CELL].shape == (1, 3, 3)
    assert data[K.PBC].tolist() == [[True, True, False]]
    assert data[K.PBC].dtype == torch.bool
    assert data[K.NATOMS].tolist() == [n]
    assert data[STRUCTURE_ID].tolist() == [12]
    assert data[K.ENERGY].shape == (1,)
    assert data[K.FORCE].shape == (n, 3)
    assert data[K.STRESS].shape == (1, 3, 3)
    assert data["bandgap"].shape == (1,)
    assert data["dipole_ref"].shape == (1, 3)
    assert data["count"].dtype == torch.long
    assert data["converged"].dtype == torch.bool
    assert data["charges_ref"].shape == (n, 1)
    assert data["features"].shape == (n, 2)
    assert data["tags"].dtype == torch.long
    assert "comment" not in data
    assert data.num_nodes == n


def test_round_trip_keeps_every_field(
    default_dtype: torch.dtype, label_with_emt: Callable[[Atoms], Atoms]
) -> None:
    atoms = _labelled_alloy(label_with_emt)
    back = data_to_atoms(atoms_to_data(atoms))
    tol = _tolerance(default_dtype)

    np.testing.assert_allclose(back.positions, atoms.positions, **tol)
    np.testing.assert_array_equal(back.numbers, atoms.numbers)
    np.testing.assert_allclose(back.cell.array, atoms.cell.array, **tol)
    np.testing.assert_array_equal(back.pbc, atoms.pbc)
    np.testing.assert_allclose(back.get_potential_energy(), atoms.get_potential_energy(), **tol)
    np.testing.assert_allclose(back.get_forces(), atoms.get_forces(), **tol)
    np.testing.assert_allclose(back.get_stress(), atoms.get_stress(), **tol)
    np.testing.assert_allclose(back.get_stress(voigt=False), atoms.get_stress(voigt=False), **tol)
    assert set(back.info) == {"bandgap", "dipole_ref", "count", "converged"}
    np.testing.assert_allclose(back.info["bandgap"], 0.25)
    np.testing.assert_allclose(back.info["dipole_ref"], [0.1, -0.2, 0.3], **tol)
    assert back.info["count"] == 7
    assert back.info["converged"] is True
    assert set(back.arrays) == {"numbers", "positions", "charges_ref", "features", "tags"}
    np.testing.assert_allclose(back.arrays["charges_ref"], atoms.arrays["charges_ref"], **tol)
    assert back.arrays["charges_ref"].shape == (len(atoms),)
    np.testing.assert_array_equal(back.arrays["features"], atoms.arrays["features"])
    np.testing.assert_array_equal(back.get_tags(), atoms.get_tags())


def test_round_trip_through_a_collated_batch_of_one(
    label_with_emt: Callable[[Atoms], Atoms],
) -> None:
    atoms = _labelled_alloy(label_with_emt)
    batch = Batch.from_data_list([atoms_to_data(atoms, index=0)])
    back = data_to_atoms(batch)
    np.testing.assert_allclose(back.get_forces(), atoms.get_forces(), rtol=1e-6, atol=1e-5)
    assert back.info["count"] == 7


def test_stress_equals_ase_emt_stress(default_dtype: torch.dtype) -> None:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 1)
    atoms.set_cell(atoms.cell.array @ [[1.0, 0.03, 0.0], [0.0, 1.0, -0.02], [0.01, 0.0, 0.98]])
    atoms.rattle(0.03, seed=1)
    atoms.calc = EMT()
    expected = atoms.get_stress(voigt=False)
    stress = atoms_to_data(atoms, keys=[K.STRESS]).stress
    assert stress.shape == (1, 3, 3)
    np.testing.assert_allclose(stress[0].double().numpy(), expected, **_tolerance(default_dtype))


def _strained_energy(atoms: Atoms, strain: np.ndarray) -> float:
    strained = atoms.copy()
    strained.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
    strained.calc = EMT()
    return float(strained.get_potential_energy())


def test_stress_is_the_strain_derivative_of_energy_per_volume() -> None:
    """sigma_ij = (1/V) dE/d(eps_ij): ASE's sign, positive when the cell wants to shrink."""
    atoms = bulk("Cu", "fcc", a=3.65, cubic=True)
    atoms.set_cell(atoms.cell.array @ [[1.0, 0.04, 0.0], [0.0, 1.0, 0.0], [0.0, -0.03, 1.0]])
    atoms.rattle(0.02, seed=2)
    atoms.calc = EMT()
    atoms.get_stress()
    with _default_dtype(torch.float64):
        stress = atoms_to_data(atoms).stress[0].numpy()
    h = 1e-6
    numeric = np.empty((3, 3))
    for i in range(3):
        for j in range(3):
            strain = np.zeros((3, 3))
            strain[i, j] += h / 2
            strain[j, i] += h / 2
            plus, minus = _strained_energy(atoms, strain), _strained_energy(atoms, -strain)
            numeric[i, j] = (plus - minus) / (2 * h) / atoms.get_volume()
    np.testing.assert_allclose(stress, numeric, atol=1e-7)


def test_compressed_cell_has_negative_stress() -> None:
    atoms = bulk("Cu", "fcc", a=3.4, cubic=True)  # EMT's equilibrium is about 3.59 Å
    atoms.calc = EMT()
    atoms.get_stress()
    stress = atoms_to_data(atoms).stress[0]
    assert (torch.diagonal(stress) < 0).all()


@pytest.mark.parametrize("where", ["calculator", "info"])
def test_voigt_and_full_stress_inputs_agree(where: str) -> None:
    voigt = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])  # xx, yy, zz, yz, xz, xy
    full = np.array([[1.0, 6.0, 5.0], [6.0, 2.0, 4.0], [5.0, 4.0, 3.0]])
    results = []
    for stress in (voigt, full):
        atoms = bulk("Al")
        if where == "calculator":
            atoms.calc = SinglePointCalculator(atoms, stress=stress)
        else:
            atoms.info["stress"] = stress
        results.append(atoms_to_data(atoms, keys=[K.STRESS]).stress)
    torch.testing.assert_close(results[0], torch.tensor(full, dtype=torch.float32)[None])
    torch.testing.assert_close(results[1], results[0])


def test_integer_energy_and_forces_become_real() -> None:
    atoms = bulk("Al")
    atoms.info["energy"] = -3
    atoms.set_array("forces", np.zeros((1, 3), dtype=int))
    data = atoms_to_data(atoms)
    assert data.energy.dtype == data.force.dtype == torch.get_default_dtype()


def test_calculator_results_win_over_info_and_arrays() -> None:
    atoms = bulk("Al", cubic=True)
    atoms.info["energy"] = 1.0
    atoms.set_array("forces", np.ones((4, 3)))
    atoms.calc = SinglePointCalculator(atoms, energy=-2.0, forces=np.zeros((4, 3)))
    data = atoms_to_data(atoms)
    assert data.energy.tolist() == [-2.0]
    assert data.force.abs().sum() == 0


def test_targets_from_info_and_arrays_without_calculator() -> None:
    atoms = bulk("Al", cubic=True)
    atoms.info["energy"] = -1.5
    atoms.set_array("forces", np.full((4, 3), 0.5))
    data = atoms_to_data(atoms, keys=[K.ENERGY, K.FORCE])
    assert data.energy.tolist() == [-1.5]
    assert data.force.tolist() == [[0.5] * 3] * 4


def test_never_runs_a_calculator_and_ignores_stale_results() -> None:
    atoms = bulk("Cu", cubic=True)
    atoms.calc = EMT()
    assert K.ENERGY not in atoms_to_data(atoms)  # nothing computed yet
    atoms.get_potential_energy()
    assert K.ENERGY in atoms_to_data(atoms)
    atoms.positions[0] += 0.1  # the stored result no longer describes these atoms
    assert K.ENERGY not in atoms_to_data(atoms)


def test_keys_select_targets() -> None:
    atoms = bulk("Al")
    atoms.info.update({"b": 1.0, "a": 2.0, "energy": 0.5})
    data = atoms_to_data(atoms, keys=["a", K.ENERGY])
    assert "a" in data
    assert K.ENERGY in data
    assert "b" not in data


def test_structure_id_only_with_index() -> None:
    assert STRUCTURE_ID not in atoms_to_data(bulk("Al"))
    assert atoms_to_data(bulk("Al"), index=4)[STRUCTURE_ID].tolist() == [4]


def test_molecule_without_cell() -> None:
    data = atoms_to_data(molecule("CH4"))
    assert data.cell.abs().sum() == 0
    assert data.pbc.tolist() == [[False, False, False]]
    assert data_to_atoms(data).get_chemical_formula() == "CH4"


# --- errors name the structure -------------------------------------------------------------


def test_wrong_stress_shape_is_an_error() -> None:
    atoms = bulk("Cu", cubic=True)
    atoms.info["stress"] = np.zeros(5)
    with pytest.raises(ValueError, match=r"structure 5 \(Cu4\) has a stress of shape \(5,\)"):
        atoms_to_data(atoms, index=5)


def test_forces_not_matching_atoms_is_an_error() -> None:
    atoms = bulk("Cu", cubic=True)
    atoms.calc = SinglePointCalculator(atoms, forces=np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"structure Cu4 has calculator result 'forces' of shape"):
        atoms_to_data(atoms)
    atoms.calc = SinglePointCalculator(atoms, forces=np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"forces of shape \(4, 2\); expected \(4, 3\)"):
        atoms_to_data(atoms)


def test_energy_must_be_one_number() -> None:
    atoms = bulk("Cu")
    atoms.info["energy"] = [1.0, 2.0]
    with pytest.raises(
        ValueError, match=r"structure Cu has an energy of shape \(2,\); expected one"
    ):
        atoms_to_data(atoms)


def test_non_finite_positions_are_an_error() -> None:
    atoms = bulk("Cu", cubic=True)
    atoms.positions[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"structure 0 \(Cu4\) has non-finite positions"):
        atoms_to_data(atoms, index=0)


def test_missing_key_lists_the_available_ones() -> None:
    atoms = bulk("Cu")
    atoms.info.update({"energy": -1.0, "label": "text"})
    with pytest.raises(ValueError, match=r"no numeric target \['force'\]; available: \['energy'\]"):
        atoms_to_data(atoms, keys=[K.ENERGY, K.FORCE])
    with pytest.raises(ValueError, match=r"no numeric target \['label'\]"):
        atoms_to_data(atoms, keys=["label"])


def test_data_to_atoms_rejects_batches_and_odd_shapes() -> None:
    data = atoms_to_data(bulk("Cu", cubic=True))
    batch = Batch.from_data_list([data, data])
    with pytest.raises(ValueError, match="batch of 2 structures"):
        data_to_atoms(batch)
    data.odd = torch.zeros(3, 2)
    with pytest.raises(ValueError, match=r"'odd' of shape \(3, 2\) is neither node level \[4"):
        data_to_atoms(data)


# --- property test ---------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=6),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
    pbc=st.lists(st.booleans(), min_size=3, max_size=3),
    with_stress=st.booleans(),
)
def test_random_structures_round_trip(
    n: int, seed: int, pbc: list[bool], with_stress: bool
) -> None:
    rng = np.random.default_rng(seed)
    atoms = Atoms(
        numbers=rng.integers(1, 95, size=n),
        positions=rng.uniform(-5, 5, size=(n, 3)),
        cell=rng.uniform(-1, 6, size=(3, 3)),
        pbc=pbc,
    )
    results = {"energy": float(rng.normal()), "forces": rng.normal(size=(n, 3))}
    if with_stress:
        results["stress"] = rng.normal(size=6)
    atoms.calc = SinglePointCalculator(atoms, **results)
    atoms.info["score"] = float(rng.normal())
    atoms.info["vector"] = rng.normal(size=4)

    with _default_dtype(torch.float64):
        back = data_to_atoms(atoms_to_data(atoms, index=seed))

    np.testing.assert_array_equal(back.positions, atoms.positions)
    np.testing.assert_array_equal(back.numbers, atoms.numbers)
    np.testing.assert_array_equal(back.cell.array, atoms.cell.array)
    np.testing.assert_array_equal(back.pbc, atoms.pbc)
    assert back.get_potential_energy() == results["energy"]
    np.testing.assert_array_equal(back.get_forces(), results["forces"])
    if with_stress:
        np.testing.assert_array_equal(back.get_stress(), results["stress"])
    else:
        assert "stress" not in back.calc.results
    assert back.info["score"] == atoms.info["score"]
    np.testing.assert_array_equal(back.info["vector"], atoms.info["vector"])


def test_results_of_moved_atoms_are_not_targets() -> None:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.calc = EMT()
    atoms.get_forces()
    assert K.FORCE in atoms_to_data(atoms).keys()  # noqa: SIM118
    atoms.positions[0, 0] += 0.1  # the calculator's results now describe another state
    data = atoms_to_data(atoms)
    assert K.FORCE not in data.keys()  # noqa: SIM118
    assert K.ENERGY not in data.keys()  # noqa: SIM118
    with pytest.raises(ValueError, match=r"no numeric target \['energy'\]"):
        atoms_to_data(atoms, keys=[K.ENERGY])
