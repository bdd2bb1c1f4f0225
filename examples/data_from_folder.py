"""From a folder of structure files to an ASE database, a data module and dataset statistics.

`uv run python examples/data_from_folder.py` (a few seconds). The script first makes its own
folder of CIF, POSCAR and extxyz files in a temporary directory; point `folder` at yours instead.
"""

import tempfile
from pathlib import Path

import ase.db
import ase.io
from ase.build import bulk
from ase.calculators.emt import EMT

from matsci.data import AtomsDataModule, compute_statistics
from matsci.transforms import PeriodicRadiusGraph

workdir = Path(tempfile.mkdtemp())


def make_example_folder(folder: Path) -> None:
    """Write 24 rattled metal cells as CIF, POSCAR (geometry only) and extxyz (with labels)."""
    folder.mkdir()
    for i in range(24):
        atoms = bulk(("Cu", "Ni", "Al")[i % 3], "fcc", cubic=True).repeat((2, 1, 1))  # 8 atoms
        atoms.rattle(stdev=0.05, seed=i)
        suffix = ("cif", "poscar", "extxyz")[(i // 3) % 3]
        if suffix == "extxyz":  # output of a calculation: energy, forces and stress come along
            atoms.calc = EMT()
            atoms.get_stress()
        ase.io.write(folder / f"structure_{i:02d}.{suffix}", atoms)  # format from the suffix


folder = workdir / "structures"
make_example_folder(folder)

# 1. Folder -> ASE database. `ase.io.read` guesses each file's format (CIF, POSCAR, extxyz,
#    OUTCAR, vasprun.xml, ...); `index=":"` reads every frame of multi-frame files. Results
#    that a file carries (energy, forces, stress) are attached as a calculator and stored.
#    Geometry-only files get labels here from EMT, a stand-in for your own calculations.
database_path = workdir / "structures.db"
with ase.db.connect(database_path) as database:
    for path in sorted(folder.iterdir()):
        for atoms in ase.io.read(path, index=":"):
            if atoms.calc is None:
                atoms.calc = EMT()
                atoms.get_stress()  # computes energy, forces and stress together
            database.write(atoms, source=path.name)  # key-value pairs record provenance
print(f"{database_path.name}: {ase.db.connect(database_path).count()} structures")

# 2. ASE database -> train/val/test loaders. Each item is a `Data` with pos, atomic_numbers,
#    cell, pbc, natoms and the requested targets; the transform adds the neighbour graph.
data = AtomsDataModule(
    database_path,
    keys=["energy", "force", "stress"],
    transform=PeriodicRadiusGraph(cutoff=4.0),
    split=(0.75, 0.125, 0.125),
    batch_size=4,
)
data.setup("fit")
print({name: len(indices) for name, indices in data.split_indices.items()})
batch = next(iter(data.val_dataloader()))
print(batch)

# 3. Statistics of the training split, for normalization and for choosing a model.
stats = compute_statistics(data.train_dataloader(), keys=["energy", "force"], elements=[13, 28, 29])
print(f"structures {stats.num_structures}, atoms {stats.num_atoms}, elements {stats.elements}")
print(f"force RMS {stats.force_rms:.3f} eV/Å, neighbours per atom {stats.avg_num_neighbors:.1f}")
reference = stats.reference_energies  # [119], eV per atom of each element, indexed by Z
print(
    f"reference energies Al {reference[13]:.3f}, Ni {reference[28]:.3f}, Cu {reference[29]:.3f} eV"
)
print(f"residual after references {stats.reference_residual_rms:.4f} eV/atom")
