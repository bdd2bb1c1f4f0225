import importlib.metadata

import matsci.ase as package


def test_version_matches_distribution_metadata() -> None:
    assert package.__version__ == importlib.metadata.version("matsci-ase")
