"""``matsci predict`` of an exported model: the checkpoint's table, without the training stack."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import ase.db
import ase.io
import pytest
import torch
from ase.build import bulk

from matsci.cli import main
from matsci.data.examples import bundled_dataset_path


def export(fitted: Path, folder: Path, export_format: str, name: str) -> Path:
    """The tiny fit's best checkpoint exported by ``matsci export`` into ``folder / name``."""
    path = folder / name
    checkpoint = fitted / "checkpoints" / "best.ckpt"
    main(["export", str(checkpoint), "--format", export_format, "-o", str(path)])
    return path


@pytest.fixture(scope="module")
def program(fitted: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny fit's best checkpoint exported as a float32 torch.export program."""
    return export(fitted, tmp_path_factory.mktemp("program"), "torch-export", "model.pt2")


@pytest.fixture(scope="module")
def metatomic_model(fitted: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same checkpoint exported as a float32 metatomic model."""
    return export(fitted, tmp_path_factory.mktemp("metatomic"), "metatomic", "model.pt")


@pytest.fixture(scope="module")
def structures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six EMT structures as an extxyz file."""
    path = tmp_path_factory.mktemp("data") / "six.extxyz"
    with ase.db.connect(bundled_dataset_path("emt")) as database:
        frames = [row.toatoms() for row in database.select(limit=6)]
    ase.io.write(path, frames, format="extxyz")
    return path


def _table(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


@pytest.mark.parametrize("exported", ["program", "metatomic_model"])
def test_an_exported_model_predicts_the_checkpoints_table(
    fitted: Path, exported: str, structures: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    model: Path = request.getfixturevalue(exported)
    checkpoint = fitted / "checkpoints" / "best.ckpt"
    main(["predict", "--ckpt_path", str(checkpoint), "--data", str(structures),
          "--output", str(tmp_path / "checkpoint.csv")])  # fmt: skip
    main(["predict", "--ckpt_path", str(model), "--data", str(structures),
          "--output", str(tmp_path / "exported.csv")])  # fmt: skip
    expected, found = _table(tmp_path / "checkpoint.csv"), _table(tmp_path / "exported.csv")
    assert len(found) == 6
    assert list(found[0]) == list(expected[0])  # the same columns, in the same order
    assert "stress_xy" in found[0]
    assert "force_max_norm" in found[0]
    for want, got in zip(expected, found, strict=True):
        for column, value in want.items():
            if column in ("formula", "structure_id", "natoms"):
                assert got[column] == value
            else:  # float32 in both, through different neighbour lists
                assert float(got[column]) == pytest.approx(float(value), rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("exported", ["program", "metatomic_model"])
def test_an_exported_model_predicts_without_lightning_or_pyg(
    exported: str, structures: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    model: Path = request.getfixturevalue(exported)
    output = tmp_path / "p.db"
    code = (
        "import sys; from matsci.cli import main; "
        f"main(['predict', '--ckpt_path', {str(model)!r}, '--data', {str(structures)!r}, "
        f"'--output', {str(output)!r}]); "
        "print(sorted(m for m in ('lightning', 'torch_geometric', 'matsci.tasks.core') "
        "if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"
    with ase.db.connect(output) as database:
        rows = list(database.select())
    assert [row.frame for row in rows] == list(range(6))
    assert all(row.data["predicted_force"].shape == (row.natoms, 3) for row in rows)


def test_exported_model_errors_are_one_line(
    program: Path, structures: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    silicon = tmp_path / "si.extxyz"
    ase.io.write(silicon, bulk("Si", "diamond", a=5.43), format="extxyz")
    cif = tmp_path / "cu.cif"
    ase.io.write(cif, bulk("Cu", "fcc", a=3.6))
    foreign = tmp_path / "foreign.pt2"
    foreign.write_bytes(b"not a program")
    torchscript = tmp_path / "other.pt"
    torch.jit.save(torch.jit.script(torch.nn.Identity()), torchscript)
    for args, message in [
        (["--data", str(silicon)], "Si"),
        (["--data", str(cif)], "an exported model reads an ASE database"),
        (["--data", str(structures), "--output", str(tmp_path / "p.txt")],
         "expected a .csv or .db file"),
        (["--data", str(tmp_path / "none.extxyz")], "no such file"),
    ]:  # fmt: skip
        with pytest.raises(SystemExit) as info:
            main(["predict", "--ckpt_path", str(program), *args])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert message in err
        assert "Traceback" not in err
    for model, message in [
        (foreign, "not a model exported by `matsci export`"),
        (torchscript, "does not contain a metatomic model"),
    ]:
        with pytest.raises(SystemExit):
            main(["predict", "--ckpt_path", str(model), "--data", str(structures)])
        err = capsys.readouterr().err
        assert message in err
        assert "Traceback" not in err
    assert json.dumps(sorted(p.name for p in tmp_path.iterdir())) == json.dumps(
        sorted(["si.extxyz", "cu.cif", "foreign.pt2", "other.pt"])
    )
