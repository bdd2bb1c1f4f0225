"""The packages' dependency arrows point only downward (docs/architecture.rst)."""

import ast
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
LAYERS = {
    "matsci-contract": 0,
    "matsci-heads": 1,
    "matsci-transforms": 1,
    "matsci-encoders": 2,
    "matsci-data": 2,
    "matsci-tasks-core": 2,
    "matsci-tasks-physics": 3,
    "matsci-training": 3,
    "matsci-ase": 4,
    "matsci-simulate": 5,
    "matsci-cli": 6,
}
IMPORTS = {
    "matsci.contract": "matsci-contract",
    "matsci.heads": "matsci-heads",
    "matsci.transforms": "matsci-transforms",
    "matsci.encoders": "matsci-encoders",
    "matsci.data": "matsci-data",
    "matsci.tasks.core": "matsci-tasks-core",
    "matsci.tasks.physics": "matsci-tasks-physics",
    "matsci.training": "matsci-training",
    "matsci.ase": "matsci-ase",
    "matsci.simulate": "matsci-simulate",
    "matsci.cli": "matsci-cli",
}


def _declared(package: str) -> set[str]:
    """The matsci distributions a package depends on, its optional extras included."""
    with (ROOT / "packages" / package / "pyproject.toml").open("rb") as handle:
        project = tomllib.load(handle)["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    names = {re.split(r"[\s<>=\[;]", requirement)[0] for requirement in requirements}
    return {name for name in names if name.startswith("matsci-")}


def _imported(package: str) -> set[str]:
    found = set()
    for path in (ROOT / "packages" / package / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            modules = (
                [node.module or ""] if isinstance(node, ast.ImportFrom)
                else [alias.name for alias in node.names] if isinstance(node, ast.Import)
                else []
            )  # fmt: skip
            for module in modules:
                for prefix, distribution in IMPORTS.items():
                    if module == prefix or module.startswith(f"{prefix}."):
                        found.add(distribution)
    found.discard(package)
    return found


def test_every_package_has_a_layer() -> None:
    assert sorted(LAYERS) == sorted(p.name for p in (ROOT / "packages").iterdir() if p.is_dir())


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_dependencies_point_only_downward(package: str) -> None:
    declared, imported = _declared(package), _imported(package)
    upward = {name for name in declared | imported if LAYERS[name] >= LAYERS[package]}
    assert not upward, f"{package} (layer {LAYERS[package]}) depends on {upward}"
    # What the sources import is declared (an undeclared import breaks the package alone).
    assert imported <= declared, f"{package} imports {imported - declared} without declaring it"
