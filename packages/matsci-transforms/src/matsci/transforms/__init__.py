"""PyG transforms for atoms and crystals: periodic neighbour graphs, noisy positions."""

from importlib.metadata import version as _version

from matsci.transforms import keys

__version__ = _version("matsci-transforms")

__all__ = ["__version__", "keys"]
