import tomllib
from pathlib import Path

import matsci.simulate as package


def test_version_is_the_one_in_pyproject() -> None:
    with (Path(__file__).parents[1] / "pyproject.toml").open("rb") as handle:
        project = tomllib.load(handle)["project"]
    assert project["name"] == "matsci-simulate"
    assert package.__version__ == project["version"]
