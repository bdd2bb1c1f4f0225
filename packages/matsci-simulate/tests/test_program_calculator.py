# mypy: untyped-calls-exclude=ase
"""matsci.ase.ProgramCalculator runs an exported program like MatsciCalculator runs the task."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.md.verlet import VelocityVerlet

from matsci.ase import MatsciCalculator, ProgramCalculator
from matsci.simulate import export_program


@pytest.fixture(scope="module")
def program(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_program(
        checkpoint, tmp_path_factory.mktemp("program") / "model.pt2", dtype=torch.float64
    )


def _alloy() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 1, 1))
    atoms.numbers[::3] = 79
    atoms.set_cell(atoms.cell.array @ np.array([[1.0, 0.03, 0], [0, 0.99, 0], [0, 0, 1.0]]),
                   scale_atoms=True)  # fmt: skip
    atoms.rattle(0.05, seed=0)
    return atoms


def test_equals_the_calculator_of_the_checkpoint_along_a_trajectory(
    checkpoint: Path, program: Path
) -> None:
    exported, eager = _alloy(), _alloy()
    exported.calc = ProgramCalculator(program)
    eager.calc = MatsciCalculator.from_checkpoint(checkpoint, dtype=torch.float64)
    for atoms in (exported, eager):
        atoms.set_momenta(np.full((len(atoms), 3), 0.01))
        VelocityVerlet(atoms, timestep=1 * units.fs).run(5)
    np.testing.assert_allclose(exported.positions, eager.positions, atol=1e-10)
    assert exported.get_potential_energy() == pytest.approx(eager.get_potential_energy(), 1e-9)
    np.testing.assert_allclose(exported.get_forces(), eager.get_forces(), atol=1e-9)
    np.testing.assert_allclose(exported.get_stress(), eager.get_stress(), atol=1e-9)
    assert np.abs(eager.get_stress()).max() > 1e-4  # a stress that a sign error would show


def test_refuses_unknown_elements_and_stress_without_a_cell(program: Path) -> None:
    calculator = ProgramCalculator(program)
    iron = bulk("Fe", "bcc", a=2.87)
    iron.calc = calculator
    with pytest.raises(ValueError, match=r"has element \['Fe'\] the model was not trained on"):
        iron.get_forces()
    cluster = Atoms("Cu3", positions=[[0, 0, 0], [2.5, 0, 0], [0, 2.5, 0]])
    cluster.calc = calculator
    assert cluster.get_forces().shape == (3, 3)
    from ase.calculators.calculator import PropertyNotImplementedError

    with pytest.raises(PropertyNotImplementedError, match="periodic in all three directions"):
        cluster.get_stress()


def test_starts_without_lightning_or_pyg(program: Path) -> None:
    script = textwrap.dedent(f"""
        import sys
        from ase.build import bulk
        from matsci.ase import ProgramCalculator
        atoms = bulk("Cu", "fcc", a=3.6)
        atoms.calc = ProgramCalculator({str(program)!r})
        atoms.get_forces()
        heavy = [m for m in ("lightning", "torch_geometric", "matsci.tasks") if m in sys.modules]
        print(heavy)
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"
