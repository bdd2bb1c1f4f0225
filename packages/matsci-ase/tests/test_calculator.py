from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.emt import EMT
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from calculator_helpers import PairEncoder, mixed_structures, rattled_copper, untrained_task
from torch_geometric.data import Batch

from matsci.ase import MatsciCalculator
from matsci.data import atoms_to_data
from matsci.tasks.physics import ForceRegressionTask
from matsci.transforms import PeriodicRadiusGraph

VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


@pytest.fixture
def calc64(checkpoint: Path) -> MatsciCalculator:
    return MatsciCalculator.from_checkpoint(checkpoint, dtype=torch.float64)


def test_results_equal_the_task_predictions(checkpoint: Path) -> None:
    calc = MatsciCalculator.from_checkpoint(checkpoint)
    structures = mixed_structures()
    # The training pipeline's conversion and graph, then the task's own predictions.
    graph = PeriodicRadiusGraph(cutoff=4.0)
    batch = Batch.from_data_list([graph(atoms_to_data(atoms, keys=[])) for atoms in structures])
    expected = calc.task.predict(batch)
    offset = 0
    for index, atoms in enumerate(structures):
        atoms.calc = calc
        n = len(atoms)
        assert atoms.get_potential_energy() == pytest.approx(
            float(expected["energy"][index]), rel=1e-6, abs=1e-5
        )
        assert atoms.get_potential_energy(force_consistent=True) == atoms.get_potential_energy()
        np.testing.assert_allclose(
            atoms.get_forces(), expected["force"][offset : offset + n].numpy(), atol=2e-5
        )
        offset += n
        if atoms.pbc.all():
            stress = expected["stress"][index].numpy()
            np.testing.assert_allclose(
                atoms.get_stress(), [stress[i, j] for i, j in VOIGT], atol=1e-6
            )
            np.testing.assert_allclose(atoms.get_stress(voigt=False), stress, atol=1e-6)


@pytest.mark.parametrize("index", [0, 1, 2, 3], ids=["Cu", "strained alloy", "slab", "cluster"])
def test_forces_are_the_finite_difference_gradient(calc64: MatsciCalculator, index: int) -> None:
    atoms = mixed_structures()[index]
    atoms.calc = calc64
    forces = atoms.get_forces()
    assert np.abs(forces).max() > 0.05  # rattled: the check is not on zeros
    # Central differences on the first six atoms (each costs six energies).
    numerical = calculate_numerical_forces(atoms, eps=1e-4, iatoms=range(6))
    np.testing.assert_allclose(forces[:6], numerical, atol=1e-7)


@pytest.mark.parametrize("index", [0, 1], ids=["Cu", "strained alloy"])
def test_stress_is_the_finite_difference_strain_derivative(
    calc64: MatsciCalculator, index: int
) -> None:
    atoms = mixed_structures()[index]
    atoms.calc = calc64
    stress = atoms.get_stress()
    assert np.abs(stress).max() > 1e-3
    np.testing.assert_allclose(stress, calculate_numerical_stress(atoms, eps=1e-5), atol=1e-9)


@pytest.mark.parametrize("a", [3.3, 3.9], ids=["compressed", "stretched"])
def test_stress_has_the_sign_of_emt(checkpoint: Path, a: float) -> None:
    atoms = bulk("Cu", "fcc", a=a, cubic=True)
    atoms.calc = EMT()
    reference = atoms.get_stress()
    atoms.calc = MatsciCalculator.from_checkpoint(checkpoint)
    stress = atoms.get_stress()
    # Cubic: a pure pressure, negative when compressed and positive when stretched (ASE sign).
    np.testing.assert_array_equal(np.sign(stress[:3]), np.sign(reference[:3]))
    np.testing.assert_allclose(stress[3:], 0.0, atol=1e-6)
    assert np.sign(stress[0]) == (-1 if a < 3.6 else 1)


def test_molecules_have_energy_and_forces_but_no_stress(checkpoint: Path) -> None:
    cluster = mixed_structures()[3]
    assert not cluster.pbc.any()
    assert cluster.cell.rank == 0
    cluster.calc = MatsciCalculator.from_checkpoint(checkpoint)
    forces = cluster.get_forces()
    # Only relative positions matter: no net force.
    np.testing.assert_allclose(forces.sum(axis=0), 0.0, atol=1e-5)
    assert np.isfinite(cluster.get_potential_energy())
    with pytest.raises(PropertyNotImplementedError, match=r"periodic in all three directions"):
        cluster.get_stress()
    slab = mixed_structures()[2]
    slab.calc = cluster.calc
    with pytest.raises(PropertyNotImplementedError, match=r"pbc=\[True, True, False\]"):
        slab.get_stress()


def test_a_task_without_stress_refuses_stress() -> None:
    atoms = rattled_copper()
    atoms.calc = MatsciCalculator(untrained_task(compute_stress=False))
    assert atoms.get_forces().shape == (32, 3)
    with pytest.raises(PropertyNotImplementedError, match=r"compute_stress=False"):
        atoms.get_stress()


def test_unknown_elements_are_refused_by_name(checkpoint: Path) -> None:
    calc = MatsciCalculator.from_checkpoint(checkpoint)
    assert calc.elements == ["Al", "Ni", "Cu", "Pd", "Ag", "Pt", "Au"]
    atoms = rattled_copper()
    atoms.numbers[[0, 5]] = [26, 1]  # Fe and H: not in the EMT data
    atoms.calc = calc
    known = r"\['Al', 'Ni', 'Cu', 'Pd', 'Ag', 'Pt', 'Au'\]"
    with pytest.raises(ValueError, match=rf"structure HCu30Fe has element \['H', 'Fe'\] .*{known}"):
        atoms.get_forces()
    with pytest.raises(ValueError, match=r"structure 1 H2O has element \['H', 'O'\]"):
        calc.calculate_many([rattled_copper(), molecule("H2O")])


def test_elements_can_be_given() -> None:
    task = untrained_task()
    assert MatsciCalculator(task).elements == ["Cu", "Au"]  # nonzero reference energies
    calc = MatsciCalculator(task, elements=["Cu", np.int64(28)])
    assert calc.elements == ["Ni", "Cu"]
    nickel = bulk("Ni", cubic=True)
    assert calc.calculate_many([nickel])[0]["forces"].shape == (4, 3)
    with pytest.raises(ValueError, match=r"has element \['Au'\]"):
        calc.calculate_many([bulk("Au", cubic=True)])
    with pytest.raises(ValueError, match=r"'Xx' is not a chemical symbol or an atomic number"):
        MatsciCalculator(task, elements=["Xx"])
    with pytest.raises(ValueError, match=r"0 is not a chemical symbol or an atomic number"):
        MatsciCalculator(task, elements=[0])


def test_without_reference_energies_every_element_is_accepted() -> None:
    task = ForceRegressionTask(encoder=PairEncoder(), output_kwargs={"hidden_dim": 4})
    calc = MatsciCalculator(task, cutoff=3.0)
    assert calc.elements is None
    assert len(calc.calculate_many([molecule("CH3CH2OH")])[0]["forces"]) == 9


def test_no_autograd_graph_is_kept(checkpoint: Path) -> None:
    calc = MatsciCalculator.from_checkpoint(checkpoint)
    atoms = rattled_copper()
    atoms.calc = calc
    forces, stress = atoms.get_forces(), atoms.get_stress()
    assert isinstance(forces, np.ndarray)
    assert isinstance(stress, np.ndarray)
    assert not calc.task.training
    assert all(parameter.grad is None for parameter in calc.task.parameters())
    assert torch.is_grad_enabled()
    with torch.inference_mode():  # the calculator works inside inference mode too
        atoms.rattle(0.01, seed=5)
        np.testing.assert_allclose(atoms.get_forces().sum(axis=0), 0.0, atol=1e-5)


def test_calculate_many_equals_one_calculation_each(calc64: MatsciCalculator) -> None:
    structures = [*mixed_structures(), rattled_copper(seed=7), bulk("Cu", "fcc", a=3.6)]
    batched = calc64.calculate_many(structures, batch_size=4)
    assert len(batched) == len(structures)
    for atoms, result in zip(structures, batched, strict=True):
        assert atoms.calc is None  # the structures are left alone
        atoms.calc = calc64
        assert result["energy"] == pytest.approx(atoms.get_potential_energy(), abs=1e-10)
        assert result["free_energy"] == result["energy"]
        np.testing.assert_allclose(result["forces"], atoms.get_forces(), atol=1e-10)
        if atoms.pbc.all():
            np.testing.assert_allclose(result["stress"], atoms.get_stress(), atol=1e-12)
        else:
            assert "stress" not in result
    assert calc64.calculate_many([]) == []


def test_calculate_many_bad_arguments() -> None:
    calc = MatsciCalculator(untrained_task())
    with pytest.raises(ValueError, match=r"calculate_many\(batch_size=0\): expected a positive"):
        calc.calculate_many([bulk("Cu")], batch_size=0)
    with pytest.raises(TypeError, match=r"structure 1 is a str, not ase.Atoms"):
        calc.calculate_many([bulk("Cu"), "Cu"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"structure 0 has no atoms"):
        calc.calculate_many([Atoms()])


def test_bad_constructor_arguments() -> None:
    with pytest.raises(TypeError, match=r"MatsciCalculator\(task=Linear\): expected a Force"):
        MatsciCalculator(torch.nn.Linear(2, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"dtype=torch.int64\): expected a floating-point"):
        MatsciCalculator(untrained_task(), dtype=torch.int64)
    pair = ForceRegressionTask(encoder=PairEncoder(), output_kwargs={"hidden_dim": 4})
    with pytest.raises(ValueError, match=r"give cutoff=.*PairEncoder has no 'cutoff'"):
        MatsciCalculator(pair)
    with pytest.raises(ValueError, match=r"cutoff must be positive"):
        MatsciCalculator(pair, cutoff=-1.0)


def test_graph_settings_and_dtype() -> None:
    task = untrained_task()
    calc = MatsciCalculator(task, max_neighbors=6, dtype=torch.float64)
    assert (calc.graph.cutoff, calc.graph.max_neighbors) == (3.0, 6)  # the encoder's cutoff
    assert calc.dtype == torch.float64
    assert all(p.dtype == torch.float64 for p in task.parameters())
    assert repr(calc) == (
        "MatsciCalculator(cutoff=3.0, max_neighbors=6, device=cpu, dtype=torch.float64, "
        "elements=['Cu', 'Au'])"
    )


@pytest.mark.gpu
def test_cuda_results_equal_cpu_results(checkpoint: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    structures = mixed_structures()
    cpu = MatsciCalculator.from_checkpoint(checkpoint, dtype=torch.float64)
    cuda = MatsciCalculator.from_checkpoint(checkpoint, device="cuda", dtype=torch.float64)
    assert cuda.device.type == "cuda"
    for expected, result in zip(
        cpu.calculate_many(structures), cuda.calculate_many(structures), strict=True
    ):
        assert result["energy"] == pytest.approx(expected["energy"], abs=1e-9)
        np.testing.assert_allclose(result["forces"], expected["forces"], atol=1e-9)
    atoms = rattled_copper()
    atoms.calc = cuda
    assert isinstance(atoms.get_stress(), np.ndarray)
