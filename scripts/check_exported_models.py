"""Check exported metatomic models against matsci's own predictions, without matsci.

Run by `nox -s exported_models` in an environment that holds only torch, metatomic-torch,
metatomic-ase and metatomic-torchsim (and what they pull in), as
``python scripts/check_exported_models.py OUTDIR`` on the folder that
``scripts/export_reference_models.py`` wrote. For every exported file it predicts energy,
forces and (3D-periodic structures only) stress of every structure through two engines:

- ``ase``: ``metatomic_ase.MetatomicCalculator``, one structure at a time;
- ``torchsim``: ``metatomic_torchsim.MetatomicModel`` on torch-sim states, batched over the
  structures that share periodic boundary conditions (torch-sim's states have one ``pbc``).

A direct-force model (manifest ``"kind": "direct-force"``) has metatomic's
``non_conservative_force`` output and no energy. metatomic-ase 0.1 and metatomic-torchsim 0.1
give forces only to models with an energy (``MetatomicCalculator(...,
non_conservative="forces")`` raises ``PropertyNotImplementedError`` at ``get_forces()``, and
``MetatomicModel`` refuses to load such a model), so its forces are read through
``MetatomicCalculator.run_model`` (engine ``ase-run``, batched over all structures) and the
torch-sim engine is reported as refused: the check fails if either engine starts accepting
it, so that the documentation is brought up to date.

Each prediction must equal matsci's reference within the manifest's tolerance: 1e-5 for
float32 and 1e-9 for float64, relative to the largest magnitude of that property over all
structures (so a force that symmetry makes zero, or an energy that happens to be near zero, is
compared on the scale of the others rather than on its own). It prints the installed versions,
the largest absolute and relative differences per model, dtype, engine and property, and the
seconds to load each file and make its first prediction, and exits non-zero on any failure.
"""

from __future__ import annotations

import importlib.util
import json
import platform
import sys
import time
from collections import defaultdict
from importlib.metadata import version
from pathlib import Path
from typing import Any

FORBIDDEN = ("matsci", "lightning", "torch_geometric")
"""Packages that must not be installed here: the exported file stands on its own."""

for _name in FORBIDDEN:
    if importlib.util.find_spec(_name) is not None:
        sys.exit(f"check_exported_models: {_name!r} is importable; run this without matsci")

import ase.io  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch_sim  # noqa: E402
from ase import Atoms  # noqa: E402
from ase.calculators.calculator import PropertyNotImplementedError  # noqa: E402
from metatomic.torch import ModelOutput, load_atomistic_model  # noqa: E402
from metatomic_ase import MetatomicCalculator  # noqa: E402
from metatomic_torchsim import MetatomicModel  # noqa: E402

SHOWN = ("torch", "metatomic-torch", "metatomic-ase", "metatomic-torchsim", "torch-sim-atomistic",
         "metatensor-torch", "vesin", "ase", "numpy")  # fmt: skip
"""Distributions whose versions the check prints."""

DTYPES = {"float32": torch.float32, "float64": torch.float64}
VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
"""ASE's Voigt order of a 3x3 stress: xx, yy, zz, yz, xz, xy."""

Predictions = list[dict[str, np.ndarray]]


def predict_ase(path: Path, structures: list[Atoms]) -> tuple[Predictions, float]:
    """Predictions of metatomic-ase, and the seconds to load and predict the first structure."""
    start = time.perf_counter()
    calculator = MetatomicCalculator(str(path), device="cpu", check_consistency=True)
    results: Predictions = []
    first = 0.0
    for atoms in structures:
        atoms = atoms.copy()
        atoms.calc = calculator
        result = {"energy": np.array([atoms.get_potential_energy()]), "forces": atoms.get_forces()}
        first = first or time.perf_counter() - start
        if atoms.pbc.all():
            result["stress"] = atoms.get_stress()
        results.append(result)
    return results, first


def predict_direct(path: Path, structures: list[Atoms]) -> tuple[Predictions, float]:
    """Direct forces through ``MetatomicCalculator.run_model``, all structures in one call."""
    start = time.perf_counter()
    calculator = MetatomicCalculator(str(path), device="cpu", check_consistency=True)
    request = {"non_conservative_force": ModelOutput(unit="eV/Angstrom", sample_kind="atom")}
    outputs = calculator.run_model([_zero_open(atoms) for atoms in structures], request)
    first = time.perf_counter() - start
    block = outputs["non_conservative_force"].block()
    samples = block.samples.values.numpy()  # [N, 2]: system, atom
    values = block.values[..., 0].detach().double().numpy()  # [N, 3]
    results: Predictions = []
    for index, atoms in enumerate(structures):
        rows = samples[:, 0] == index
        forces = np.zeros((len(atoms), 3))
        forces[samples[rows, 1]] = values[rows]
        if rows.sum() != len(atoms):
            forces[:] = np.nan  # a missing or repeated atom fails the comparison
        results.append({"forces": forces})
    return results, first


def direct_refusals(path: Path, structures: list[Atoms]) -> list[str]:
    """Failures if an engine that needs an energy accepts a direct-force model (docs are stale)."""
    failures = []
    atoms = structures[0].copy()
    atoms.calc = MetatomicCalculator(str(path), device="cpu", non_conservative="forces")
    try:
        atoms.get_forces()
    except PropertyNotImplementedError:
        pass
    else:
        failures.append("metatomic-ase now gives forces of a model without energy: update docs")
    try:
        MetatomicModel(str(path), device="cpu", non_conservative="forces")
    except ValueError:
        pass
    else:
        failures.append("metatomic-torchsim now loads a model without energy: update docs")
    return failures


def _zero_open(atoms: Atoms) -> Atoms:
    """A copy with zero cell vectors along non-periodic directions, as metatomic requires."""
    atoms = atoms.copy()
    cell = atoms.cell.array.copy()
    cell[~atoms.pbc] = 0.0
    atoms.set_cell(cell, scale_atoms=False)
    return atoms


def predict_torchsim(
    path: Path, structures: list[Atoms], dtype: torch.dtype
) -> tuple[Predictions, float]:
    """Predictions of metatomic-torchsim, one batched state per kind of pbc."""
    start = time.perf_counter()
    periodic = MetatomicModel(str(path), device="cpu", check_consistency=True)
    groups: dict[tuple[bool, ...], list[int]] = defaultdict(list)
    for index, atoms in enumerate(structures):
        groups[tuple(bool(flag) for flag in atoms.pbc)].append(index)
    results: dict[int, dict[str, np.ndarray]] = {}
    first = 0.0
    for pbc, indices in groups.items():
        # Stress (the strain derivative over the volume) needs a cell periodic in 3D.
        model = periodic if all(pbc) else MetatomicModel(
            str(path), device="cpu", check_consistency=True, compute_stress=False
        )  # fmt: skip
        state = torch_sim.io.atoms_to_state([_zero_open(structures[i]) for i in indices],
                                            "cpu", dtype)  # fmt: skip
        output = model(state)
        first = first or time.perf_counter() - start
        system = state.system_idx.numpy()
        for position, index in enumerate(indices):
            result = {
                "energy": output["energy"][position : position + 1].numpy(),
                "forces": output["forces"][system == position].numpy(),
            }
            if all(pbc):
                full = output["stress"][position].numpy()
                result["stress"] = np.array([full[i, j] for i, j in VOIGT])
            results[index] = result
    return [results[index] for index in range(len(structures))], first


def compare(
    got: Predictions, expected: Predictions, tolerance: float
) -> tuple[dict[str, tuple[float, float]], list[str]]:
    """Largest absolute and relative difference per property, and the failures."""
    scale = {
        key: max(float(np.abs(result[key]).max()) for result in expected if key in result)
        for key in ("energy", "forces", "stress")
        if any(key in result for result in expected)
    }
    worst: dict[str, tuple[float, float]] = {}
    failures: list[str] = []
    for index, (mine, theirs) in enumerate(zip(got, expected, strict=True)):
        if sorted(mine) != sorted(theirs):
            failures.append(f"structure {index}: properties {sorted(mine)} != {sorted(theirs)}")
            continue
        for key, value in theirs.items():
            if mine[key].shape != value.shape:
                failures.append(
                    f"structure {index} {key}: shape {mine[key].shape} != {value.shape}"
                )
                continue
            difference = float(np.abs(mine[key] - value).max())
            relative = difference / scale[key]
            previous = worst.get(key, (0.0, 0.0))
            worst[key] = (max(previous[0], difference), max(previous[1], relative))
            if not relative <= tolerance:
                failures.append(
                    f"structure {index} {key}: relative difference {relative:.2e} > {tolerance:.0e}"
                )
    return worst, failures


def load_references(path: Path, count: int) -> Predictions:
    """The ``<index>/<property>`` arrays of an ``.npz`` file, one dict per structure."""
    with np.load(path) as arrays:
        references: Predictions = [{} for _ in range(count)]
        for name in arrays.files:
            index, key = name.split("/")
            references[int(index)][key] = arrays[name]
    return references


def main(outdir: Path) -> int:
    """Check every model of ``OUTDIR/manifest.json``; 0 when all match, else 1."""
    versions = ", ".join(f"{name} {version(name)}" for name in SHOWN)
    print(f"Python {platform.python_version()}: {versions}")
    manifest: dict[str, Any] = json.loads((outdir / "manifest.json").read_text())
    structures = list(ase.io.read(outdir / manifest["structures"], index=":", format="extxyz"))
    failures: list[str] = []
    rows: list[str] = []
    header = f"{'model':<19}{'dtype':<9}{'engine':<10}{'property':<9}{'max abs':>10}{'max rel':>10}"
    for entry in manifest["models"]:
        path = outdir / entry["file"]
        dtype = DTYPES[entry["dtype"]]
        tolerance = float(entry["tolerance"])
        declared = load_atomistic_model(str(path)).capabilities().dtype
        if declared != entry["dtype"]:
            failures.append(f"{entry['file']}: declares dtype {declared}, not {entry['dtype']}")
        expected = load_references(outdir / entry["references"], len(structures))
        direct = entry.get("kind") == "direct-force"
        if direct:
            failures += [f"{entry['file']}: {problem}" for problem in
                         direct_refusals(path, structures)]  # fmt: skip
        for engine in ("ase-run",) if direct else ("ase", "torchsim"):
            if engine == "ase-run":
                got, seconds = predict_direct(path, structures)
            elif engine == "ase":
                got, seconds = predict_ase(path, structures)
            else:
                got, seconds = predict_torchsim(path, structures, dtype)
            worst, problems = compare(got, expected, tolerance)
            failures += [f"{entry['file']} {engine}: {problem}" for problem in problems]
            print(f"{entry['file']} {engine}: load + first prediction {seconds:.2f} s")
            for key, (difference, relative) in worst.items():
                flag = "" if relative <= tolerance else "  FAIL"
                model = ("direct-" if direct else "") + entry["encoder"]
                rows.append(
                    f"{model:<19}{entry['dtype']:<9}{engine:<10}{key:<9}"
                    f"{difference:>10.1e}{relative:>10.1e}{flag}"
                )
    print(f"\n{len(structures)} structures; tolerance 1e-5 (float32), 1e-9 (float64), relative")
    print(header)
    print("\n".join(rows))
    loaded = sorted(name for name in FORBIDDEN if name in sys.modules)
    if loaded:
        failures.append(f"imported {loaded}")
    if failures:
        print("\nFAILED:\n" + "\n".join(failures))
        return 1
    print(f"\nall {len(manifest['models'])} exported models match matsci through ase and torchsim "
          "(direct-force models: ase run_model; torchsim refuses them)")  # fmt: skip
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/check_exported_models.py OUTDIR")
    sys.exit(main(Path(sys.argv[1])))
