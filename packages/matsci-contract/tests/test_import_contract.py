import tomllib
from pathlib import Path

import matsci.contract as package


def test_version_is_the_one_in_pyproject() -> None:
    with (Path(__file__).parents[1] / "pyproject.toml").open("rb") as handle:
        project = tomllib.load(handle)["project"]
    assert project["name"] == "matsci-contract"
    assert package.__version__ == project["version"]


def test_public_names_resolve_to_documented_objects() -> None:
    for name in package.__all__:
        assert getattr(package, name) is not None, name
    assert package.keys.POS == "pos"
    assert package.NUM_ELEMENTS == package.keys.MAX_ATOMIC_NUMBER + 1
