# mypy: untyped-calls-exclude=ase
"""Exported direct-force models (metatomic and torch.export) predict what the task predicts."""

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError
from simulate_helpers import CUTOFF, export_structures, program_inputs
from torch_geometric.data import Batch, Data

from matsci.ase import ProgramCalculator
from matsci.contract import keys
from matsci.encoders import SchNetEncoder
from matsci.simulate import export_metatomic, export_program  # imports metatomic after PyG
from matsci.tasks.core import ScalarRegressionTask
from matsci.tasks.physics import GradFreeForceRegression
from matsci.training import load_model
from matsci.transforms import PeriodicRadiusGraph

metatomic_ase = pytest.importorskip("metatomic_ase")
metatomic_torch = pytest.importorskip("metatomic.torch")

DTYPES = {"float32": torch.float32, "float64": torch.float64}
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-9}
"""Relative to the largest force of the structure."""

FORMATS = ("metatomic", "torch-export")

Predict = Callable[[Atoms], np.ndarray]


@pytest.fixture(scope="module")
def exported(
    direct_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, str], Path]:
    """Both formats in both dtypes of ``direct_checkpoint``: ``{(format, dtype): path}``."""
    folder = tmp_path_factory.mktemp("exported")
    paths = {}
    for dtype_name, dtype in DTYPES.items():
        paths["metatomic", dtype_name] = export_metatomic(
            direct_checkpoint, folder / f"{dtype_name}.pt", dtype=dtype
        )
        paths["torch-export", dtype_name] = export_program(
            direct_checkpoint, folder / f"{dtype_name}.pt2", dtype=dtype
        )
    return paths


def _structures() -> list[Atoms]:
    return export_structures(amplitude=0.1)


def _eager(checkpoint: Path, dtype: torch.dtype, structures: list[Atoms]) -> list[np.ndarray]:
    """``task.predict(batch)["force"]`` of the checkpoint's task, one batch of all structures."""
    task = load_model(checkpoint).task
    assert isinstance(task, GradFreeForceRegression)
    task = task.to(dtype).eval()
    graph = PeriodicRadiusGraph(cutoff=CUTOFF)
    data = []
    for atoms in structures:
        item = Data(
            pos=torch.tensor(atoms.positions, dtype=dtype),
            atomic_numbers=torch.tensor(atoms.numbers, dtype=torch.long),
            cell=torch.tensor(atoms.cell.array, dtype=dtype).reshape(1, 3, 3),
            pbc=torch.tensor(atoms.pbc, dtype=torch.bool).reshape(1, 3),
            natoms=torch.tensor([len(atoms)]),
        )
        data.append(graph(item))
    with torch.no_grad():
        forces = task.predict(Batch.from_data_list(data))[keys.FORCE].double().numpy()
    return np.split(forces, np.cumsum([len(atoms) for atoms in structures])[:-1])


def _program_predict(path: Path, dtype: torch.dtype) -> Predict:
    model = torch.export.load(path).module()

    def predict(atoms: Atoms) -> np.ndarray:
        (forces,) = model(*program_inputs(atoms, dtype))
        return forces.detach().double().numpy()  # type: ignore[no-any-return]

    return predict


def _metatomic_predict(path: Path) -> Predict:
    calculator = metatomic_ase.MetatomicCalculator(str(path), device="cpu", check_consistency=True)
    request = {
        "non_conservative_force": metatomic_torch.ModelOutput(
            unit="eV/Angstrom", sample_kind="atom"
        )
    }

    def predict(atoms: Atoms) -> np.ndarray:
        atoms = atoms.copy()
        cell = atoms.cell.array.copy()
        cell[~atoms.pbc] = 0.0  # metatomic wants zero cell vectors along open directions
        atoms.set_cell(cell, scale_atoms=False)
        block = calculator.run_model(atoms, request)["non_conservative_force"].block()
        assert block.samples.names == ["system", "atom"]
        assert block.components[0].names == ["xyz"]
        assert block.values.shape == (len(atoms), 3, 1)
        return block.values[..., 0].detach().double().numpy()  # type: ignore[no-any-return]

    return predict


def _predictor(kind: str, path: Path, dtype: torch.dtype) -> Predict:
    return _metatomic_predict(path) if kind == "metatomic" else _program_predict(path, dtype)


def _assert_forces(got: np.ndarray, expected: np.ndarray, dtype: torch.dtype, name: str) -> None:
    scale = max(float(np.abs(expected).max()), 1e-3)
    np.testing.assert_allclose(
        got, expected, rtol=0, atol=TOLERANCE[dtype] * scale, err_msg=f"forces of {name}"
    )


@pytest.mark.parametrize("kind", FORMATS)
@pytest.mark.parametrize("dtype_name", list(DTYPES))
def test_exported_forces_equal_task_predict(
    direct_checkpoint: Path, exported: dict[tuple[str, str], Path], kind: str, dtype_name: str
) -> None:
    dtype = DTYPES[dtype_name]
    structures = _structures()
    expected = _eager(direct_checkpoint, dtype, structures)
    predict = _predictor(kind, exported[kind, dtype_name], dtype)
    for atoms, want in zip(structures, expected, strict=True):
        got = predict(atoms)
        assert got.shape == (len(atoms), 3)
        _assert_forces(got, want, dtype, atoms.get_chemical_formula())
    # The comparison can fail: the trained forces are far from zero, so a sign error or
    # forces in the wrong order would not pass.
    copper, alloy = structures[0], structures[1]
    assert np.abs(expected[0]).max() > 1e-3
    with pytest.raises(AssertionError, match="forces of"):
        _assert_forces(-predict(copper), expected[0], dtype, "negated")
    with pytest.raises(AssertionError, match="forces of"):
        _assert_forces(predict(alloy)[::-1], expected[1], dtype, "reversed")


@pytest.mark.parametrize("kind", FORMATS)
def test_exported_forces_rotate_with_the_structure(
    exported: dict[tuple[str, str], Path], kind: str
) -> None:
    rotation, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
    rotation *= np.linalg.det(rotation)  # a proper rotation (det +1)
    predict = _predictor(kind, exported[kind, "float64"], torch.float64)
    for atoms in _structures()[:3]:
        turned = atoms.copy()
        turned.positions = atoms.positions @ rotation.T
        if atoms.cell.rank == 3:
            turned.set_cell(atoms.cell.array @ rotation.T, scale_atoms=False)
        forces = predict(atoms)
        _assert_forces(predict(turned), forces @ rotation.T, torch.float64, "rotated")
        assert not np.allclose(forces @ rotation.T, forces, atol=1e-6)  # the test can fail


def test_metatomic_capabilities(
    direct_checkpoint: Path, exported: dict[tuple[str, str], Path]
) -> None:
    model = metatomic_torch.load_atomistic_model(str(exported["metatomic", "float32"]))
    capabilities = model.capabilities()
    # metatomic lists the deprecated spelling "non_conservative_forces" beside it.
    assert "non_conservative_force" in capabilities.outputs
    assert not [name for name in capabilities.outputs if name.startswith("energy")]
    output = capabilities.outputs["non_conservative_force"]
    assert (output.sample_kind, output.unit) == ("atom", "eV/Angstrom")
    assert capabilities.atomic_types == list(range(1, 101))  # every element the encoder embeds
    assert capabilities.dtype == "float32"
    # Two message-passing layers; SchNet's edge readout reads one cutoff further.
    layers = 3 if "schnet" in direct_checkpoint.name else 2
    assert capabilities.interaction_range == pytest.approx(layers * CUTOFF)


def test_metatomic_ase_calculator_needs_an_energy(exported: dict[tuple[str, str], Path]) -> None:
    """metatomic-ase 0.1 serves forces only to models with an energy (documented for users)."""
    atoms = _structures()[0]
    atoms.calc = metatomic_ase.MetatomicCalculator(
        str(exported["metatomic", "float32"]), device="cpu", non_conservative="forces"
    )
    with pytest.raises(PropertyNotImplementedError, match="does not have an energy output"):
        atoms.get_forces()


def test_program_calculator_serves_forces_only(
    direct_checkpoint: Path, exported: dict[tuple[str, str], Path]
) -> None:
    path = exported["torch-export", "float64"]
    calculator = ProgramCalculator(path)
    assert (calculator.conservative, calculator.implemented_properties) == (False, ["forces"])
    assert calculator.elements is None  # a direct-force model accepts every element
    structures = _structures()
    expected = _eager(direct_checkpoint, torch.float64, structures)
    for atoms, want in zip(structures, expected, strict=True):
        atoms.calc = calculator
        _assert_forces(atoms.get_forces(), want, torch.float64, atoms.get_chemical_formula())
    atoms = structures[0]
    with pytest.raises(PropertyNotImplementedError, match="ProgramCalculator: no energy"):
        atoms.get_potential_energy()
    with pytest.raises(PropertyNotImplementedError, match="ProgramCalculator: no stress"):
        atoms.get_stress()
    with pytest.raises(PropertyNotImplementedError, match="no free_energy"):
        calculator.calculate(atoms, ["free_energy"])


def test_program_record_names_its_outputs(exported: dict[tuple[str, str], Path]) -> None:
    extra = {"matsci.json": ""}
    torch.export.load(exported["torch-export", "float32"], extra_files=extra)
    record = json.loads(extra["matsci.json"])
    assert record["outputs"] == ["forces"]
    assert record["atomic_numbers"] is None
    assert record["cutoff"] == CUTOFF


@pytest.mark.parametrize("kind", FORMATS)
def test_matsci_export_command(direct_checkpoint: Path, tmp_path: Path, kind: str) -> None:
    cli = pytest.importorskip("matsci.cli._export")
    output = tmp_path / ("model.pt" if kind == "metatomic" else "model.pt2")
    cli.export_main([str(direct_checkpoint), "--format", kind, "-o", str(output)])
    atoms = _structures()[1]
    (expected,) = _eager(direct_checkpoint, torch.float32, [atoms])
    _assert_forces(_predictor(kind, output, torch.float32)(atoms), expected, torch.float32, kind)


def test_other_tasks_are_refused(tmp_path: Path) -> None:
    encoder = SchNetEncoder(hidden_channels=8, num_filters=8, num_interactions=1,
                            num_gaussians=8, cutoff=3.0)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other = ScalarRegressionTask(encoder=encoder, task_keys=["band_gap"])
    message = r"\(ScalarRegressionTask\): not a ForceRegressionTask .* or a GradFreeForceRegression"
    with pytest.raises(TypeError, match="export_program" + message):
        export_program(other, tmp_path / "x.pt2")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="export_metatomic" + message):
        export_metatomic(other, tmp_path / "x.pt")  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())
