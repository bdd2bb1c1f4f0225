"""The exported metatomic model predicts what the matsci calculator predicts, without matsci."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import ase.db
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from matsci.ase import MatsciCalculator
from matsci.data.examples import bundled_dataset_path
from matsci.simulate import export_metatomic  # first: imports metatomic after PyG

metatomic_ase = pytest.importorskip("metatomic_ase")
metatomic_torch = pytest.importorskip("metatomic.torch")

CUTOFF = 4.0
"""Å, the cutoff of the conftest models (conftest.CUTOFF)."""

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-9}


def _structures() -> list[Atoms]:
    """A rattled Cu cell, a Cu/Ag/Au alloy in a skewed cell and a small cluster (no pbc)."""
    copper = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    copper.rattle(0.05, seed=1)
    alloy = bulk("Cu", "fcc", a=3.8).repeat((2, 2, 2))
    alloy.numbers[1::3] = 79
    alloy.numbers[2::3] = 47
    alloy.set_cell(alloy.cell.array @ np.array([[1.0, 0.02, 0], [0, 0.98, 0.03], [0, 0, 1.01]]),
                   scale_atoms=True)  # fmt: skip
    alloy.rattle(0.05, seed=2)
    cluster = Atoms("Cu3Au2", positions=[[0, 0, 0], [2.5, 0, 0], [0, 2.5, 0.1], [1.3, 1.3, 2.0],
                                         [2.6, 2.6, 0.3]])  # fmt: skip
    cluster.rattle(0.05, seed=3)
    return [copper, alloy, cluster]


def _predict(calculator: object, atoms: Atoms) -> dict[str, np.ndarray]:
    atoms = atoms.copy()
    atoms.calc = calculator
    out = {"energy": np.array([atoms.get_potential_energy()]), "forces": atoms.get_forces()}
    if atoms.pbc.all():
        out["stress"] = atoms.get_stress()
    return out


@pytest.mark.parametrize("encoder", ["checkpoint", "equivariant_checkpoint"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_matches_matsci_calculator(
    encoder: str, dtype: torch.dtype, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    checkpoint: Path = request.getfixturevalue(encoder)
    exported = export_metatomic(checkpoint, tmp_path / "model.pt", dtype=dtype)
    reference = MatsciCalculator.from_checkpoint(checkpoint, device="cpu", dtype=dtype)
    engine = metatomic_ase.MetatomicCalculator(exported, device="cpu")
    tolerance = TOLERANCE[dtype]
    for atoms in _structures():
        expected, got = _predict(reference, atoms), _predict(engine, atoms)
        assert sorted(got) == sorted(expected)
        for key, value in expected.items():
            scale = float(np.abs(value).max())
            message = f"{key} of {atoms.get_chemical_formula()}"
            np.testing.assert_allclose(
                got[key], value, rtol=tolerance, atol=tolerance * scale, err_msg=message
            )


def test_capabilities(checkpoint: Path, tmp_path: Path) -> None:
    exported = export_metatomic(checkpoint, tmp_path / "model.pt", dtype=torch.float64)
    model = metatomic_torch.load_atomistic_model(str(exported))
    capabilities = model.capabilities()
    with ase.db.connect(bundled_dataset_path("emt")) as database:
        trained = {int(z) for row in database.select() for z in row.numbers}
    assert capabilities.atomic_types == sorted(trained) == [13, 28, 29, 46, 47, 78, 79]
    assert capabilities.dtype == "float64"
    assert capabilities.length_unit == "Angstrom"
    assert capabilities.interaction_range == pytest.approx(2 * CUTOFF)  # two interactions
    assert list(capabilities.outputs) == ["energy"]
    assert capabilities.outputs["energy"].unit == "eV"
    (neighbors,) = model.requested_neighbor_lists()
    assert (neighbors.cutoff, neighbors.full_list, neighbors.strict) == (CUTOFF, True, True)


def test_bad_arguments(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"dtype=torch.float16\): expected torch.float32"):
        export_metatomic(checkpoint, tmp_path / "model.pt", dtype=torch.float16)
    with pytest.raises(ValueError, match=r"no valid cutoff \(-1.0\)"):
        export_metatomic(checkpoint, tmp_path / "model.pt", cutoff=-1.0)
    assert not (tmp_path / "model.pt").exists()


_STANDALONE = textwrap.dedent(
    """
    import json, sys, time
    start = time.perf_counter()
    import torch
    after_torch = time.perf_counter()
    import ase
    from metatomic_ase import MetatomicCalculator
    calculator = MetatomicCalculator(sys.argv[1], device="cpu")
    atoms = ase.Atoms("Cu4", positions=[[0, 0, 0], [0, 1.8, 1.8], [1.8, 0, 1.8], [1.8, 1.8, 0]],
                      cell=[3.6, 3.6, 3.6], pbc=True)
    atoms.calc = calculator
    energy = atoms.get_potential_energy()
    print(json.dumps({
        "energy": energy,
        "seconds": time.perf_counter() - after_torch,
        "modules": sorted({name.split(".")[0] for name in sys.modules}),
    }))
    """
)


def test_loads_without_matsci(checkpoint: Path, tmp_path: Path) -> None:
    exported = export_metatomic(checkpoint, tmp_path / "model.pt", dtype=torch.float64)
    run = subprocess.run(
        [sys.executable, "-c", _STANDALONE, str(exported)],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert "matsci" not in result["modules"]
    assert "lightning" not in result["modules"]
    assert "torch_geometric" not in result["modules"]
    atoms = Atoms("Cu4", positions=[[0, 0, 0], [0, 1.8, 1.8], [1.8, 0, 1.8], [1.8, 1.8, 0]],
                  cell=[3.6, 3.6, 3.6], pbc=True)  # fmt: skip
    atoms.calc = MatsciCalculator.from_checkpoint(checkpoint, device="cpu", dtype=torch.float64)
    assert result["energy"] == pytest.approx(atoms.get_potential_energy(), rel=1e-9)
    print(f"load + first prediction after import torch: {result['seconds']:.2f} s")
