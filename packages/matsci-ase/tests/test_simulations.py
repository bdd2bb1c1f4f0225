"""ASE's dynamics, optimizers and cell filters driven by a trained model."""

from pathlib import Path

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.filters import ExpCellFilter, FrechetCellFilter
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS, FIRE
from calculator_helpers import rattled_copper

from matsci.ase import MatsciCalculator

DRIFT_BOUND = 1e-4
"""eV per atom per ps: the largest energy drift accepted in NVE."""


def test_nve_dynamics_conserves_the_total_energy(checkpoint: Path) -> None:
    atoms = rattled_copper(repeat=2, amplitude=0.05, seed=0)  # 32 Cu atoms
    atoms.calc = MatsciCalculator.from_checkpoint(checkpoint)
    # Velocities of 300 K (Maxwell-Boltzmann), without centre-of-mass motion.
    rng = np.random.default_rng(0)
    masses = atoms.get_masses()[:, None]
    momenta = rng.standard_normal((len(atoms), 3)) * np.sqrt(masses * units.kB * 300.0)
    atoms.set_momenta(momenta - masses * momenta.sum(axis=0) / masses.sum())
    steps, timestep_fs = 200, 1.0
    energies = [atoms.get_total_energy()]
    dynamics = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    dynamics.attach(lambda: energies.append(atoms.get_total_energy()), interval=1)
    dynamics.run(steps)
    per_atom = np.array(energies[1:]) / len(atoms)
    time_ps = np.arange(len(per_atom)) * timestep_fs * 1e-3
    drift = np.polyfit(time_ps, per_atom, 1)[0]  # eV / atom / ps
    # Measured: about 1.5e-6 eV/atom/ps over 0.2 ps at 1 fs (float32 and float64 alike).
    assert abs(drift) < DRIFT_BOUND, drift
    assert np.ptp(per_atom) < 1e-4
    assert atoms.get_temperature() > 50  # the atoms did move


@pytest.mark.parametrize("optimizer", [BFGS, FIRE], ids=["BFGS", "FIRE"])
def test_relaxation_brings_the_forces_below_threshold(
    checkpoint: Path, optimizer: type[BFGS] | type[FIRE]
) -> None:
    atoms = rattled_copper(repeat=2, amplitude=0.1, seed=2)
    atoms.calc = MatsciCalculator.from_checkpoint(checkpoint)
    start = atoms.get_potential_energy()
    assert np.linalg.norm(atoms.get_forces(), axis=1).max() > 0.5
    relax = optimizer(atoms, logfile=None)
    converged = relax.run(fmax=0.05, steps=300)
    # Measured: BFGS needs 13 steps.
    assert converged, relax.nsteps
    assert np.linalg.norm(atoms.get_forces(), axis=1).max() < 0.05
    assert atoms.get_potential_energy() < start


@pytest.mark.filterwarnings("ignore:Use FrechetCellFilter:DeprecationWarning")
@pytest.mark.parametrize("cell_filter", [FrechetCellFilter, ExpCellFilter])
def test_cell_relaxation_removes_the_stress(
    checkpoint: Path, cell_filter: type[FrechetCellFilter] | type[ExpCellFilter]
) -> None:
    atoms = bulk("Cu", "fcc", a=3.8, cubic=True) * (2, 1, 1)
    atoms.rattle(0.02, seed=3)
    atoms.calc = MatsciCalculator.from_checkpoint(checkpoint)
    start = np.abs(atoms.get_stress()).max()
    assert start > 0.05  # eV/Å³, about 8 GPa of tension
    relax = BFGS(cell_filter(atoms), logfile=None)
    assert relax.run(fmax=0.01, steps=200), relax.nsteps
    assert np.abs(atoms.get_stress()).max() < 0.01 * start
    assert atoms.get_volume() < 3.8**3 * 2  # the stretched cell shrank
