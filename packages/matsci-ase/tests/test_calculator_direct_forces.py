"""MatsciCalculator on a direct-force model (GradFreeForceRegression): forces, and no energy."""

from pathlib import Path

import numpy as np
import pytest
import torch
from ase import units
from ase.calculators.calculator import PropertyNotImplementedError
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS
from calculator_helpers import (
    CUTOFF,
    SMALL_SCHNET,
    PairEncoder,
    mixed_structures,
    rattled_copper,
)
from torch_geometric.data import Batch

from matsci.ase import MatsciCalculator
from matsci.contract.testing import quiet_trainer
from matsci.data import AtomsDataModule, MultiDataModule, atoms_to_data
from matsci.data.examples import bundled_dataset_path
from matsci.encoders import SchNetEncoder
from matsci.tasks.core import MultiTaskLitModule, ScalarRegressionTask
from matsci.tasks.physics import GradFreeForceRegression
from matsci.transforms import PeriodicRadiusGraph

NO_ENERGY = r"no {}; the model is a GradFreeForceRegression, a direct-force model, .* no energy"


def untrained_direct_task() -> GradFreeForceRegression:
    """A small SchNet direct-force task (edge-vector readout, cutoff 3 Å)."""
    return GradFreeForceRegression(
        encoder=SchNetEncoder(**{**SMALL_SCHNET, "cutoff": 3.0}), output_kwargs={"hidden_dim": 8}
    )


class ForceOnlyBFGS(BFGS):
    """BFGS whose log reads the forces only (ASE's reads the energy at every step)."""

    def log(self, gradient: np.ndarray) -> None:
        self.fmax_log.append(float(self.optimizable.gradient_norm(gradient)))

    fmax_log: list[float]


def test_forces_equal_the_task_predictions() -> None:
    task = untrained_direct_task()
    calc = MatsciCalculator(task)
    structures = mixed_structures()
    graph = PeriodicRadiusGraph(cutoff=3.0)
    batch = Batch.from_data_list([graph(atoms_to_data(atoms, keys=[])) for atoms in structures])
    expected = task.predict(batch)["force"].numpy()
    assert np.abs(expected).max() > 1e-3  # the check is not on zeros
    offset = 0
    for atoms in structures:
        atoms.calc = calc
        n = len(atoms)
        np.testing.assert_allclose(atoms.get_forces(), expected[offset : offset + n], atol=1e-6)
        offset += n
    results = calc.calculate_many(structures, batch_size=3)
    assert [sorted(result) for result in results] == [["forces"]] * len(structures)
    np.testing.assert_allclose(np.concatenate([r["forces"] for r in results]), expected, atol=1e-6)


def test_the_energy_is_refused_with_a_reason() -> None:
    calc = MatsciCalculator(untrained_direct_task())
    assert not calc.conservative
    assert calc.implemented_properties == ["forces"]
    assert MatsciCalculator.implemented_properties == ["energy", "free_energy", "forces", "stress"]
    atoms = rattled_copper()
    atoms.calc = calc
    with pytest.raises(PropertyNotImplementedError, match=NO_ENERGY.format("energy")):
        atoms.get_potential_energy()
    with pytest.raises(PropertyNotImplementedError, match=NO_ENERGY.format("free_energy")):
        atoms.get_potential_energy(force_consistent=True)
    with pytest.raises(PropertyNotImplementedError, match=NO_ENERGY.format("energy")):
        atoms.get_total_energy()
    with pytest.raises(PropertyNotImplementedError, match=NO_ENERGY.format("stress")):
        atoms.get_stress()
    with pytest.raises(PropertyNotImplementedError, match=NO_ENERGY.format("energy")):
        calc.calculate(atoms, ["forces", "energy"])
    # The forces are still there, and a refused energy does not spoil them.
    assert atoms.get_forces().shape == (32, 3)
    calc.calculate(atoms)  # the default property of a direct-force model: forces
    assert sorted(calc.results) == ["forces"]


def test_a_checkpoint_round_trip(direct_checkpoint: Path) -> None:
    calc = MatsciCalculator.from_checkpoint(direct_checkpoint, dtype=torch.float64)
    assert isinstance(calc.task, GradFreeForceRegression)
    assert not calc.task.training
    assert (calc.graph.cutoff, calc.graph.max_neighbors) == (CUTOFF, None)  # as recorded
    assert calc.dtype == torch.float64
    assert calc.elements is None  # no reference energies: every element is accepted
    reloaded = GradFreeForceRegression.load_from_checkpoint(direct_checkpoint).double().eval()
    structures = mixed_structures()
    graph = PeriodicRadiusGraph(cutoff=CUTOFF)
    batch = Batch.from_data_list([graph(atoms_to_data(atoms, keys=[])) for atoms in structures])
    batch.pos, batch.cell = batch.pos.double(), batch.cell.double()
    expected = reloaded.predict(batch)["force"].numpy()
    forces = np.concatenate([r["forces"] for r in calc.calculate_many(structures)])
    # The data pipeline rounds the positions to float32 first; the calculator does not.
    np.testing.assert_allclose(forces, expected, atol=2e-5)
    # Elements can still be restricted by hand.
    calc = MatsciCalculator.from_checkpoint(direct_checkpoint, elements=["Cu"])
    with pytest.raises(ValueError, match=r"element \['Au'\] the model was not trained on"):
        calc.calculate_many(structures[:2])


def test_a_multi_task_checkpoint_with_direct_forces(tmp_path: Path) -> None:
    torch.manual_seed(0)
    emt = AtomsDataModule(
        bundled_dataset_path("emt"),
        keys=["energy", "force"],
        transform=PeriodicRadiusGraph(cutoff=3.5),
        batch_size=8,
    )
    forces = GradFreeForceRegression(
        encoder_class="matsci.encoders.SchNetEncoder", encoder_kwargs=SMALL_SCHNET
    )
    energy = ScalarRegressionTask(encoder=forces.encoder, task_keys=["energy"])
    module = MultiTaskLitModule(("emt", forces, "forces"), ("emt", energy, "energy"))
    trainer = quiet_trainer(max_steps=2, limit_val_batches=0)
    trainer.fit(module, datamodule=MultiDataModule({"emt": emt}))
    path = tmp_path / "multi.ckpt"
    trainer.save_checkpoint(path)
    with pytest.raises(ValueError, match=r"the task is a ScalarRegressionTask, not a ForceRegr"):
        MatsciCalculator.from_checkpoint(path, task="emt/energy")
    calc = MatsciCalculator.from_checkpoint(path, task="emt/forces")
    assert not calc.conservative
    assert calc.graph.cutoff == 3.5
    structures = mixed_structures()
    graph = PeriodicRadiusGraph(cutoff=3.5)
    batch = Batch.from_data_list([graph(atoms_to_data(atoms, keys=[])) for atoms in structures])
    expected = module.extract_task("emt/forces").predict(batch)["force"].numpy()
    forces = np.concatenate([r["forces"] for r in calc.calculate_many(structures)])
    np.testing.assert_allclose(forces, expected, atol=1e-5)


def test_other_tasks_are_refused(tmp_path: Path) -> None:
    scalar = ScalarRegressionTask(encoder=PairEncoder(), task_keys=["band_gap"])
    message = r"task=ScalarRegressionTask\): expected a ForceRegressionTask .* GradFreeForce"
    with pytest.raises(TypeError, match=message):
        MatsciCalculator(scalar, cutoff=3.0)  # type: ignore[arg-type]


def test_velocity_verlet_runs_on_direct_forces(direct_checkpoint: Path) -> None:
    atoms = rattled_copper(amplitude=0.05, seed=0)
    atoms.calc = MatsciCalculator.from_checkpoint(direct_checkpoint)
    rng = np.random.default_rng(0)
    masses = atoms.get_masses()[:, None]
    momenta = rng.standard_normal((len(atoms), 3)) * np.sqrt(masses * units.kB * 300.0)
    atoms.set_momenta(momenta - masses * momenta.sum(axis=0) / masses.sum())
    start = atoms.get_positions()
    temperatures = [atoms.get_temperature()]
    dynamics = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    dynamics.attach(lambda: temperatures.append(atoms.get_temperature()), interval=1)
    dynamics.run(20)
    assert len(temperatures) == 22  # the start, then the initial call and one per step
    assert np.all(np.isfinite(temperatures))
    assert np.abs(atoms.get_positions() - start).max() > 0.01  # the atoms did move


def test_bfgs_relaxes_with_direct_forces(direct_checkpoint: Path) -> None:
    atoms = rattled_copper(amplitude=0.1, seed=2)
    atoms.calc = MatsciCalculator.from_checkpoint(direct_checkpoint)
    # ASE's own optimizers log the energy at every step, which a direct-force model refuses.
    with pytest.raises(PropertyNotImplementedError, match=NO_ENERGY.format("free_energy|energy")):
        BFGS(atoms, logfile=None).run(fmax=0.05, steps=2)
    optimizer = ForceOnlyBFGS(atoms, logfile=None)
    optimizer.fmax_log = []
    optimizer.run(fmax=0.05, steps=30)
    assert optimizer.fmax_log[-1] < 0.5 * optimizer.fmax_log[0]
