import tomllib
from pathlib import Path

import matsci.transforms as package


def test_version_is_the_one_in_pyproject() -> None:
    with (Path(__file__).parents[1] / "pyproject.toml").open("rb") as handle:
        project = tomllib.load(handle)["project"]
    assert project["name"] == "matsci-transforms"
    assert package.__version__ == project["version"]


def test_public_names() -> None:
    assert package.__all__ == [
        "NoisyPositions",
        "PeriodicRadiusGraph",
        "PrimitiveCell",
        "__version__",
        "edge_vectors",
        "keys",
    ]
    for name in package.__all__:
        assert getattr(package, name) is not None
