"""Train tiny force fields, export them for metatomic, and write what they must predict.

Run by `nox -s exported_models` in the workspace environment (matsci installed), as
``python scripts/export_reference_models.py OUTDIR``. It trains a SchNet and an equivariant
``ForceRegressionTask`` (energy, forces, stress) and a SchNet and an equivariant
``GradFreeForceRegression`` (direct forces) for a few steps on the bundled EMT metals, exports
each with ``matsci.simulate.export_metatomic`` in float32 and float64, and writes into OUTDIR:

- ``<encoder>-<dtype>.pt`` (energy models) and ``direct-<encoder>-<dtype>.pt`` (direct-force
  models, whose only output is metatomic's ``non_conservative_force``): the exported models;
- ``structures.extxyz``: seeded random structures of the trained elements (rattled periodic
  cells, one of them skewed/triclinic, one smaller than the cutoff, a slab, a cluster);
- ``<stem>.npz``: energy, forces and (3D-periodic only) stress of every structure, forces only
  for a direct-force model, from ``matsci.ase.MatsciCalculator`` at the model's dtype, under
  ``<index>/<property>``;
- ``manifest.json``: the models, their kind (``energy`` or ``direct-force``), dtypes,
  tolerances and reference files.

``scripts/check_exported_models.py OUTDIR`` compares the exported models with these references
in an environment without matsci.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TypeVar

import ase.io
import numpy as np
import torch
from ase import Atoms
from ase.build import bulk

from matsci.ase import MatsciCalculator
from matsci.contract.testing import quiet_trainer
from matsci.data import AtomsDataModule
from matsci.data.examples import bundled_dataset_path
from matsci.simulate import export_metatomic
from matsci.tasks.physics import ForceRegressionTask, GradFreeForceRegression
from matsci.transforms import PeriodicRadiusGraph

CUTOFF = 4.0
"""Å, the neighbour graph and encoder cutoff of both models."""

ENCODERS: dict[str, tuple[str, dict[str, Any]]] = {
    "schnet": (
        "matsci.encoders.SchNetEncoder",
        {"hidden_channels": 16, "num_filters": 16, "num_interactions": 2, "num_gaussians": 16,
         "cutoff": CUTOFF},
    ),
    "equivariant": (
        "matsci.encoders.EquivariantEncoder",
        {"num_channels": 8, "lmax": 1, "num_layers": 2, "cutoff": CUTOFF, "radial_hidden": 16},
    ),
}  # fmt: skip
"""Small versions of both shipped encoders."""

DTYPES = {"float32": torch.float32, "float64": torch.float64}
TOLERANCE = {"float32": 1e-5, "float64": 1e-9}
"""Relative tolerance per dtype: |got - expected| <= tol * max(|expected|) per property."""

TRAIN_STEPS = 8
"""Optimizer steps per model: the weights only need to be away from their initial values."""


_TASKS: dict[type[ForceRegressionTask | GradFreeForceRegression], tuple[list[str], dict[str, Any]]]
_TASKS = {
    ForceRegressionTask: (["energy", "force", "stress"], {"compute_stress": True}),
    GradFreeForceRegression: (["force"], {}),
}
"""The data keys and task arguments of each kind of model."""


_Task = TypeVar("_Task", ForceRegressionTask, GradFreeForceRegression)


def train(encoder: str, task_class: type[_Task]) -> _Task:
    """A small model trained for a few steps on the bundled EMT metals.

    An energy/force/stress ``ForceRegressionTask`` (normalizers fitted first) or a direct-force
    ``GradFreeForceRegression``.
    """
    torch.manual_seed(0)
    data_keys, task_kwargs = _TASKS[task_class]
    data = AtomsDataModule(
        bundled_dataset_path("emt"),
        keys=data_keys,
        transform=PeriodicRadiusGraph(cutoff=CUTOFF),
        batch_size=16,
    )
    encoder_class, encoder_kwargs = ENCODERS[encoder]
    task = task_class(
        encoder_class=encoder_class,
        encoder_kwargs=encoder_kwargs,
        lr=5e-3,
        output_kwargs={"hidden_dim": 16},
        **task_kwargs,
    )
    if isinstance(task, ForceRegressionTask):  # a direct-force task has no normalizer to fit
        data.setup("fit")
        task.fit_normalizers(data.train_dataloader())
    quiet_trainer(max_steps=TRAIN_STEPS, limit_val_batches=0).fit(task, datamodule=data)
    return task


def structures(elements: list[int], seed: int = 0) -> list[Atoms]:
    """Seeded random structures of ``elements``: periodic (one triclinic), a slab, a cluster."""
    rng = np.random.default_rng(seed)

    def alloy(atoms: Atoms) -> Atoms:
        atoms.numbers = rng.choice(elements, size=len(atoms))
        atoms.positions += rng.normal(scale=0.08, size=atoms.positions.shape)
        return atoms

    cubic = alloy(bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 1, 1)))
    skewed = bulk("Cu", "fcc", a=3.9).repeat((2, 2, 2))  # a rhombohedral (triclinic) cell
    strain = np.eye(3) + rng.uniform(-0.06, 0.06, size=(3, 3))
    skewed.set_cell(skewed.cell.array @ strain, scale_atoms=True)
    skewed = alloy(skewed)
    small = alloy(bulk("Cu", "fcc", a=3.8))  # one atom; the cutoff reaches many images
    slab = alloy(bulk("Cu", "fcc", a=3.8, cubic=True).repeat((1, 1, 2)))
    slab.center(vacuum=5.0, axis=2)
    slab.pbc = [True, True, False]
    cluster = alloy(bulk("Cu", "fcc", a=3.8, cubic=True).repeat((1, 1, 2)))
    cluster.pbc = False
    cluster.cell = np.zeros((3, 3))
    return [cubic, skewed, small, slab, cluster]


def references(calculator: MatsciCalculator, atoms_list: list[Atoms]) -> dict[str, np.ndarray]:
    """Energy, forces and (3D-periodic only) ASE Voigt stress of each structure (or forces)."""
    arrays: dict[str, np.ndarray] = {}
    for index, result in enumerate(calculator.calculate_many(atoms_list)):
        if "energy" in result:
            arrays[f"{index}/energy"] = np.array([result["energy"]])
        arrays[f"{index}/forces"] = np.asarray(result["forces"])
        if "stress" in result:
            arrays[f"{index}/stress"] = np.asarray(result["stress"])
    return arrays


def export(
    task: ForceRegressionTask | GradFreeForceRegression,
    encoder: str,
    kind: str,
    outdir: Path,
    atoms_list: list[Atoms],
) -> list[dict[str, Any]]:
    """Export ``task`` in both dtypes with its references; the manifest entries."""
    entries = []
    for name, dtype in DTYPES.items():
        stem = f"{encoder}-{name}" if kind == "energy" else f"direct-{encoder}-{name}"
        export_metatomic(task, outdir / f"{stem}.pt", dtype=dtype, cutoff=CUTOFF)
        calculator = MatsciCalculator(task, cutoff=CUTOFF, device="cpu", dtype=dtype)
        np.savez(outdir / f"{stem}.npz", **references(calculator, atoms_list))
        entries.append({
            "file": f"{stem}.pt", "references": f"{stem}.npz", "encoder": encoder,
            "kind": kind, "dtype": name, "tolerance": TOLERANCE[name],
        })  # fmt: skip
    return entries


def main(outdir: Path) -> None:
    """Train, export and write the references and manifest into ``outdir``."""
    outdir.mkdir(parents=True, exist_ok=True)
    models: list[dict[str, Any]] = []
    atoms_list: list[Atoms] | None = None
    for encoder in ENCODERS:
        start = time.perf_counter()
        task = train(encoder, ForceRegressionTask)
        trained = time.perf_counter() - start
        elements = task.reference_energies.nonzero().flatten().tolist()
        if atoms_list is None:
            path = outdir / "structures.extxyz"
            ase.io.write(path, structures(elements), format="extxyz")
            # References of what the file holds (extxyz rounds positions to 8 decimals).
            atoms_list = list(ase.io.read(path, index=":", format="extxyz"))
        models += export(task, encoder, "energy", outdir, atoms_list)
        print(f"{encoder}: trained {TRAIN_STEPS} steps and exported in "
              f"{time.perf_counter() - start:.1f} s (training {trained:.1f} s)")  # fmt: skip
        start = time.perf_counter()
        direct = train(encoder, GradFreeForceRegression)
        trained = time.perf_counter() - start
        models += export(direct, encoder, "direct-force", outdir, atoms_list)
        print(f"direct-force {encoder}: trained {TRAIN_STEPS} steps and exported in "
              f"{time.perf_counter() - start:.1f} s (training {trained:.1f} s)")  # fmt: skip
    manifest = {"structures": "structures.extxyz", "cutoff": CUTOFF, "models": models}
    (outdir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {len(models)} models and {len(atoms_list or [])} structures to {outdir}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/export_reference_models.py OUTDIR")
    main(Path(sys.argv[1]))
