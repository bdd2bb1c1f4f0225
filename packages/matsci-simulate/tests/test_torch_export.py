# mypy: untyped-calls-exclude=ase
"""The torch.export program predicts what the matsci calculator predicts, with PyTorch alone."""

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
from simulate_helpers import CUTOFF, export_structures, program_inputs

from matsci.ase import MatsciCalculator
from matsci.contract import Embeddings
from matsci.data.examples import bundled_dataset_path
from matsci.encoders import SchNetEncoder
from matsci.simulate import export_program
from matsci.tasks.physics import ForceRegressionTask

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-9}


def _structures() -> list[Atoms]:
    return export_structures(amplitude=0.05)


def _expected(calculator: MatsciCalculator, atoms: Atoms) -> dict[str, np.ndarray]:
    atoms = atoms.copy()
    atoms.calc = calculator
    out = {"energy": np.array(atoms.get_potential_energy()), "forces": atoms.get_forces()}
    if atoms.pbc.all():
        out["stress"] = atoms.get_stress(voigt=False)
    return out


def _compare(got: dict[str, np.ndarray], expected: dict[str, np.ndarray], tolerance: float,
             name: str) -> None:  # fmt: skip
    for key, value in expected.items():
        scale = max(float(np.abs(value).max()), 0.1)  # the forces on one atom are ~0
        np.testing.assert_allclose(
            got[key], value, rtol=tolerance, atol=tolerance * scale, err_msg=f"{key} of {name}"
        )


@pytest.mark.parametrize("encoder", ["checkpoint", "equivariant_checkpoint"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_matches_matsci_calculator(
    encoder: str, dtype: torch.dtype, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    checkpoint: Path = request.getfixturevalue(encoder)
    path = export_program(checkpoint, tmp_path / "model.pt2", dtype=dtype)
    model = torch.export.load(path).module()
    reference = MatsciCalculator.from_checkpoint(checkpoint, device="cpu", dtype=dtype)
    for atoms in _structures():  # 16, 8, 5, 1 and 1 atoms through one export
        with torch.inference_mode():  # the backward pass is part of the graph
            energy, forces, stress = model(*program_inputs(atoms, dtype))
        assert (energy.dtype, forces.dtype, stress.dtype) == (dtype, dtype, dtype)
        assert (energy.shape, forces.shape, stress.shape) == ((), (len(atoms), 3), (3, 3))
        got = {"energy": energy.double().numpy(), "forces": forces.double().numpy(),
               "stress": stress.double().numpy()}  # fmt: skip
        _compare(got, _expected(reference, atoms), TOLERANCE[dtype], atoms.get_chemical_formula())
        if not atoms.pbc.any():
            assert np.isnan(got["stress"]).all()  # no cell, no volume


def test_runs_with_torch_alone(checkpoint: Path, tmp_path: Path) -> None:
    """A fresh process loads the file and predicts; it never imports matsci or PyG."""
    path = export_program(checkpoint, tmp_path / "model.pt2", dtype=torch.float64)
    atoms = _structures()[1]
    torch.save(program_inputs(atoms, torch.float64), tmp_path / "inputs.pt")
    script = textwrap.dedent(
        f"""
        import json, sys, time
        start = time.perf_counter()
        import torch
        imported = time.perf_counter()
        model = torch.export.load({str(path)!r}).module()
        loaded = time.perf_counter()
        inputs = torch.load({str(tmp_path / "inputs.pt")!r})
        energy, forces, stress = model(*inputs)
        done = time.perf_counter()
        banned = ("matsci", "torch_geometric", "lightning", "e3nn")
        foreign = sorted(name for name in sys.modules if name.split(".")[0] in banned)
        print(json.dumps({{"energy": energy.item(), "forces": forces.tolist(),
                          "stress": stress.tolist(), "foreign": foreign,
                          "import_s": imported - start, "load_s": loaded - imported,
                          "first_prediction_s": done - loaded}}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    out = json.loads(result.stdout.strip().splitlines()[-1])
    print(
        f"torch import {out['import_s']:.2f} s, load {out['load_s']:.2f} s, "
        f"first prediction {out['first_prediction_s']:.3f} s"
    )
    assert out["foreign"] == []
    reference = MatsciCalculator.from_checkpoint(checkpoint, device="cpu", dtype=torch.float64)
    got = {key: np.array(out[key]) for key in ("energy", "forces", "stress")}
    _compare(got, _expected(reference, atoms), TOLERANCE[torch.float64], "alloy")


def test_metadata(checkpoint: Path, tmp_path: Path) -> None:
    path = export_program(checkpoint, tmp_path / "model.pt2", dtype=torch.float64)
    extra = {"matsci.json": ""}
    torch.export.load(path, extra_files=extra)
    metadata = json.loads(extra["matsci.json"])
    with ase.db.connect(bundled_dataset_path("emt")) as database:
        trained = {int(z) for row in database.select() for z in row.numbers}
    assert metadata == {
        "cutoff": CUTOFF,
        "dtype": "float64",
        "atomic_numbers": sorted(trained),
        "inputs": ["positions", "atomic_numbers", "edge_index", "edge_shifts", "cell"],
        "outputs": ["energy", "forces", "stress"],
        "units": {"length": "Angstrom", "energy": "eV"},
        "encoder": "SchNetEncoder",
    }


class _BranchingEncoder(SchNetEncoder):
    """Reads a tensor's value in Python: no graph can hold that branch."""

    def forward(self, batch: object) -> Embeddings:
        if bool(batch.cell_offsets.norm() > 100.0):  # type: ignore[attr-defined]
            raise RuntimeError("unreachable")
        embeddings: Embeddings = super().forward(batch)
        return embeddings


def _small_encoder_kwargs() -> dict[str, object]:
    return {"hidden_channels": 8, "num_filters": 8, "num_interactions": 1, "num_gaussians": 8,
            "cutoff": 3.0}  # fmt: skip


def test_refuses_bad_arguments(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"dtype=torch.float16\): expected torch.float32"):
        export_program(checkpoint, tmp_path / "model.pt2", dtype=torch.float16)
    with pytest.raises(ValueError, match=r"export_program: no valid cutoff \(-1.0\)"):
        export_program(checkpoint, tmp_path / "model.pt2", cutoff=-1.0)
    task = ForceRegressionTask(
        encoder=_BranchingEncoder(**_small_encoder_kwargs()),  # type: ignore[arg-type]
        reference_energies={29: -0.5},
    )
    with pytest.raises(ValueError, match=r"the encoder _BranchingEncoder cannot be exported .*"):
        export_program(task, tmp_path / "model.pt2")
    assert not (tmp_path / "model.pt2").exists()
