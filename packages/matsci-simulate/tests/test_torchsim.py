# mypy: untyped-calls-exclude=ase
"""MatsciTorchSimModel: torch-sim's batched evaluation equals the ASE calculator's, and runs."""

from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.stress import voigt_6_to_full_3x3_stress

from matsci.ase import MatsciCalculator
from matsci.encoders import SchNetEncoder
from matsci.tasks.physics import ForceRegressionTask, GradFreeForceRegression

ts = pytest.importorskip("torch_sim")

from matsci.simulate import MatsciTorchSimModel  # noqa: E402  # needs torch_sim

DTYPE = torch.float64


def _structures() -> list[Atoms]:
    """Cu/Ag/Au cells of 32, 16, 4 and 12 atoms: rattled, an alloy, a sheared cell."""
    copper = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)  # 32 atoms
    copper.rattle(stdev=0.05, seed=1)
    alloy = bulk("Au", "fcc", a=4.08, cubic=True) * (2, 2, 1)  # 16 atoms
    alloy.symbols[::3] = "Ag"
    alloy.rattle(stdev=0.05, seed=2)
    sheared = bulk("Cu", "fcc", a=3.61, cubic=True)  # 4 atoms, a triclinic (non-symmetric) cell
    strain = np.array([[1.02, 0.03, 0.0], [-0.01, 0.98, 0.02], [0.04, 0.0, 1.01]])
    sheared.set_cell(sheared.cell.array @ strain, scale_atoms=True)
    sheared.rattle(stdev=0.03, seed=3)
    silver = bulk("Ag", "fcc", a=4.09) * (3, 2, 2)  # 12 atoms, primitive cell
    silver.rattle(stdev=0.05, seed=4)
    return [copper, alloy, sheared, silver]


def _assert_equals_calculator(model: MatsciTorchSimModel, calculator: MatsciCalculator) -> None:
    structures = _structures()
    output = model(ts.initialize_state(structures, model.device, model.dtype))
    expected = calculator.calculate_many(structures)
    assert output["energy"].shape == (4,)
    assert output["forces"].shape == (64, 3)
    assert output["stress"].shape == (4, 3, 3)
    bounds = np.cumsum([0, *(len(atoms) for atoms in structures)])
    for index, result in enumerate(expected):
        np.testing.assert_allclose(output["energy"][index].item(), result["energy"], rtol=1e-6)
        forces = output["forces"][bounds[index] : bounds[index + 1]].numpy()
        np.testing.assert_allclose(forces, result["forces"], rtol=1e-6, atol=1e-9)
        stress = output["stress"][index].numpy()
        full = voigt_6_to_full_3x3_stress(result["stress"])
        np.testing.assert_allclose(stress, full, rtol=1e-6, atol=1e-10)
        # Not symmetric by accident: the strained cell has shear stress.
    assert abs(float(output["stress"][2, 0, 1])) > 1e-6


@pytest.fixture(scope="module")
def model(checkpoint: Path) -> MatsciTorchSimModel:
    return MatsciTorchSimModel.from_checkpoint(checkpoint, dtype=DTYPE)


def test_batch_equals_ase_calculator(checkpoint: Path, model: MatsciTorchSimModel) -> None:
    calculator = MatsciCalculator.from_checkpoint(checkpoint, device="cpu", dtype=DTYPE)
    assert model.graph.cutoff == calculator.graph.cutoff == 4.0
    assert model.elements == calculator.elements == ["Al", "Ni", "Cu", "Pd", "Ag", "Pt", "Au"]
    _assert_equals_calculator(model, calculator)


def test_equivariant_batch_equals_ase_calculator(equivariant_checkpoint: Path) -> None:
    model = MatsciTorchSimModel.from_checkpoint(equivariant_checkpoint, dtype=DTYPE)
    calculator = MatsciCalculator.from_checkpoint(equivariant_checkpoint, dtype=DTYPE)
    _assert_equals_calculator(model, calculator)


def test_state_dict_and_single_systems_equal_the_batch(model: MatsciTorchSimModel) -> None:
    structures = _structures()
    state = ts.initialize_state(structures, model.device, model.dtype)
    batched = model(state)
    as_dict = model(
        {
            "positions": state.positions,
            "cell": state.cell,
            "pbc": state.pbc,
            "atomic_numbers": state.atomic_numbers,
            "system_idx": state.system_idx,
        }
    )
    for name in ("energy", "forces", "stress"):
        torch.testing.assert_close(as_dict[name], batched[name], rtol=0, atol=0)
    alone = model(ts.initialize_state([structures[2]], model.device, model.dtype))
    torch.testing.assert_close(alone["energy"], batched["energy"][2:3], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(alone["forces"], batched["forces"][48:52], rtol=1e-9, atol=1e-12)
    # The state is not changed.
    fresh = ts.initialize_state(structures, model.device, model.dtype)
    torch.testing.assert_close(state.positions, fresh.positions, rtol=0, atol=0)


def test_fire_relaxation_lowers_every_energy(model: MatsciTorchSimModel) -> None:
    state = ts.initialize_state(_structures(), model.device, model.dtype)
    before = model(state)["energy"]
    init_fn, update_fn = ts.optimizers.fire(model)
    relaxing = init_fn(state)
    for _ in range(15):
        relaxing = update_fn(relaxing)
    after = model(relaxing)["energy"]
    assert torch.all(after < before - 1e-4), (before, after)
    force_before = model(state)["forces"].norm(dim=1).max()
    assert relaxing.forces.norm(dim=1).max() < force_before


def test_nvt_langevin_keeps_temperatures_plausible(model: MatsciTorchSimModel) -> None:
    state = ts.initialize_state(_structures(), model.device, model.dtype)
    units = ts.units.MetalUnits
    init_fn, update_fn = ts.nvt_langevin(
        model,
        dt=torch.tensor(0.002 * units.time, dtype=DTYPE),  # 2 fs
        kT=torch.tensor(300.0 * units.temperature, dtype=DTYPE),
        seed=0,
    )
    md = init_fn(state)
    for _ in range(20):
        md = update_fn(md)
    temperatures = ts.quantities.calc_temperature(
        masses=md.masses, momenta=md.momenta, system_idx=md.system_idx
    )  # K, one per system
    assert temperatures.shape == (4,)
    assert torch.all(torch.isfinite(temperatures))
    assert torch.all((temperatures > 20.0) & (temperatures < 2000.0)), temperatures
    assert torch.all(torch.isfinite(md.energy))
    assert not torch.allclose(md.positions, state.positions)


def test_unknown_element_is_refused(model: MatsciTorchSimModel) -> None:
    structures = _structures()
    structures[1].symbols[0] = "Fe"
    state = ts.initialize_state(structures, model.device, model.dtype)
    with pytest.raises(
        ValueError,
        match=r"system 1 has element \['Fe'\] the model was not trained on; known elements: "
        r"\['Al', 'Ni', 'Cu', 'Pd', 'Ag', 'Pt', 'Au'\]",
    ):
        model(state)


def _small_task(*, compute_stress: bool = True) -> ForceRegressionTask:
    torch.manual_seed(0)
    encoder = SchNetEncoder(
        hidden_channels=8, num_filters=8, num_interactions=1, num_gaussians=8, cutoff=3.0
    )
    return ForceRegressionTask(
        encoder=encoder, compute_stress=compute_stress, reference_energies={29: -0.5}
    )


def test_torch_sim_validates_the_interface() -> None:
    model = MatsciTorchSimModel(_small_task(), dtype=DTYPE, elements=["Si", "Fe"])
    assert model.elements == ["Si", "Fe"]
    assert (model.compute_forces, model.compute_stress) == (True, True)
    assert model.memory_scales_with == "n_atoms_x_density"
    ts.models.interface.validate_model_outputs(model, torch.device("cpu"), DTYPE)


def test_direct_force_model_is_refused() -> None:
    direct = GradFreeForceRegression(
        encoder=SchNetEncoder(
            hidden_channels=8, num_filters=8, num_interactions=1, num_gaussians=8, cutoff=3.0
        )
    )
    with pytest.raises(TypeError, match=r"GradFreeForceRegression\): a direct-force model has no"):
        MatsciTorchSimModel(direct)  # type: ignore[arg-type]


def test_bad_arguments_and_states_are_refused() -> None:
    with pytest.raises(ValueError, match=r"compute_stress=True\): the task was trained without"):
        MatsciTorchSimModel(_small_task(compute_stress=False))
    with pytest.raises(ValueError, match=r"dtype=torch.int64\): expected a floating-point"):
        MatsciTorchSimModel(_small_task(), dtype=torch.int64)
    with pytest.raises(ValueError, match=r"elements=...\): 'Xx' is not a chemical symbol"):
        MatsciTorchSimModel(_small_task(), elements=["Cu", "Xx"])
    model = MatsciTorchSimModel(_small_task(), dtype=DTYPE)
    copper = bulk("Cu", "fcc", a=3.6)
    with pytest.raises(TypeError, match=r"positions are torch.float32, the model is torch.float64"):
        model(ts.initialize_state([copper], model.device, torch.float32))
    cluster = Atoms("Cu3", positions=[[0, 0, 0], [2.5, 0, 0], [0, 2.5, 0]])
    cluster_state = ts.initialize_state([cluster], model.device, DTYPE)
    with pytest.raises(ValueError, match=r"periodic in all three directions, got pbc=False"):
        model(cluster_state)
    # Without stress, a non-periodic cluster runs and matches the calculator.
    no_stress = MatsciTorchSimModel(_small_task(), dtype=DTYPE, compute_stress=False)
    output = no_stress(cluster_state)
    assert "stress" not in output
    expected = MatsciCalculator(_small_task(), dtype=DTYPE).calculate_many([cluster])[0]
    np.testing.assert_allclose(output["energy"].item(), expected["energy"], rtol=1e-10)
    np.testing.assert_allclose(output["forces"].numpy(), expected["forces"], atol=1e-12)
