from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import bulk

from matsci.ase import MatsciCalculator
from matsci.cli import main


def test_export_writes_a_metatomic_model_that_predicts_like_the_checkpoint(
    fitted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = fitted / "checkpoints" / "best.ckpt"
    output = tmp_path / "model.pt"
    main(["export", str(checkpoint), "--format", "metatomic", "-o", str(output), "--dtype",
          "float64"])  # fmt: skip
    assert f"metatomic model written to {output}" in capsys.readouterr().out
    from metatomic_ase import MetatomicCalculator  # after matsci.simulate (see its export)

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1)
    atoms.rattle(0.05, seed=0)
    exported = atoms.copy()
    exported.calc = MetatomicCalculator(output, device="cpu")
    atoms.calc = MatsciCalculator.from_checkpoint(checkpoint, dtype=torch.float64)
    assert exported.get_potential_energy() == pytest.approx(atoms.get_potential_energy(), 1e-9)
    np.testing.assert_allclose(exported.get_forces(), atoms.get_forces(), atol=1e-9)


def test_export_errors_are_one_line(
    fitted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = str(fitted / "checkpoints" / "best.ckpt")
    for args, message in [
        (
            [checkpoint, "--format", "onnx"],
            "unknown --format 'onnx'; expected one of ['metatomic', 'torch-export']",
        ),
        ([checkpoint, "--dtype", "float16"], "unknown --dtype 'float16'"),
        ([str(tmp_path / "none.ckpt")], "no checkpoint file at"),
    ]:
        with pytest.raises(SystemExit) as info:
            main(["export", *args])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert message in err
        assert "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_export_torch_program_predicts_like_the_checkpoint(fitted: Path, tmp_path: Path) -> None:
    from ase.neighborlist import neighbor_list

    checkpoint = fitted / "checkpoints" / "best.ckpt"
    output = tmp_path / "model.pt2"
    main(["export", str(checkpoint), "--format", "torch-export", "-o", str(output), "--dtype",
          "float64"])  # fmt: skip
    program = torch.export.load(output).module()
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1)
    atoms.rattle(0.05, seed=0)
    calculator = MatsciCalculator.from_checkpoint(checkpoint, dtype=torch.float64)
    i, j, shifts = neighbor_list("ijS", atoms, calculator.graph.cutoff)
    energy, forces, _ = program(
        torch.tensor(atoms.positions),
        torch.tensor(atoms.numbers, dtype=torch.int64),
        torch.tensor(np.stack([i, j]), dtype=torch.int64),
        torch.tensor(shifts @ atoms.cell.array),
        torch.tensor(atoms.cell.array),
    )
    atoms.calc = calculator
    assert float(energy) == pytest.approx(atoms.get_potential_energy(), 1e-9)
    np.testing.assert_allclose(forces.numpy(), atoms.get_forces(), atol=1e-9)
