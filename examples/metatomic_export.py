"""Export a matsci force field as a metatomic model and run it through metatomic's ASE calculator.

The exported file is one TorchScript archive: ASE (``metatomic_ase``), torch-sim, i-PI and
LAMMPS builds with metatomic load it without matsci or Lightning. Here it runs a few steps of
ASE molecular dynamics and is compared with the eager model on the same structure.

    uv run python examples/metatomic_export.py [path/to/model.ckpt]   # without one, trains one

It fails unless the exported model's forces equal the eager model's (float32 tolerance).
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
from ase.md.verlet import VelocityVerlet

from matsci.ase import MatsciCalculator
from matsci.simulate import export_metatomic


def main() -> None:
    """Export, load with metatomic's ASE calculator, compare with the eager model, run MD."""
    # In a process that imported matsci (and so PyTorch Geometric), metatomic is imported after
    # matsci.simulate, which works around a PyG patch of torch.index_select (export_metatomic).
    from metatomic_ase import MetatomicCalculator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", type=Path, help="a ForceRegressionTask .ckpt")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = args.checkpoint or train_quick(Path(folder) / "quick.ckpt")
        exported = export_metatomic(checkpoint, Path(folder) / "model.pt", dtype=torch.float32)
        print(f"exported {exported.name}: {exported.stat().st_size / 1e6:.1f} MB")
        start = time.perf_counter()
        engine = MetatomicCalculator(exported, device="cpu")
        eager = MatsciCalculator.from_checkpoint(checkpoint, dtype=torch.float32)

        atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
        atoms.rattle(stdev=0.05, seed=0)
        atoms.calc = engine
        forces = atoms.get_forces()
        first = time.perf_counter() - start
        energy = atoms.get_potential_energy()
        reference = atoms.copy()
        reference.calc = eager
        gap = float(np.abs(forces - reference.get_forces()).max())
        scale = float(np.abs(reference.get_forces()).max())
        print(f"load and first prediction: {first:.2f} s")
        print(
            f"energy {energy:.5f} eV (eager {reference.get_potential_energy():.5f} eV); "
            f"largest force difference {gap:.2e} eV/Å against a baseline (zero force) error "
            f"of {scale:.3f} eV/Å"
        )
        VelocityVerlet(atoms, timestep=1 * units.fs).run(10)
        print(f"10 MD steps with the exported model: energy {atoms.get_total_energy():.5f} eV")
    if gap > 1e-4 * max(scale, 1.0):
        raise SystemExit("the exported model's forces differ from the eager model's")


if __name__ == "__main__":
    main()
