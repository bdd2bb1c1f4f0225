import importlib.metadata

import matsci.transforms as package


def test_version_matches_distribution_metadata() -> None:
    assert package.__version__ == importlib.metadata.version("matsci-transforms")


def test_public_names() -> None:
    assert package.__all__ == [
        "NoisyPositions",
        "PeriodicRadiusGraph",
        "__version__",
        "edge_vectors",
        "keys",
    ]
    for name in package.__all__:
        assert getattr(package, name) is not None
