import subprocess
import sys
import tomllib
from pathlib import Path

import matsci.training as package


def test_version_is_the_one_in_pyproject() -> None:
    with (Path(__file__).parents[1] / "pyproject.toml").open("rb") as handle:
        project = tomllib.load(handle)["project"]
    assert project["name"] == "matsci-training"
    assert package.__version__ == project["version"]


def test_every_public_name_is_exported() -> None:
    assert all(hasattr(package, name) for name in package.__all__)


def test_imports_neither_physics_nor_ase_nor_the_cli() -> None:
    code = (
        "import sys, matsci.training; "
        "print(sorted(m for m in sys.modules if m.startswith(('matsci.tasks.physics', "
        "'matsci.ase', 'matsci.cli'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)  # fmt: skip
    assert result.stdout.strip() == "[]"
