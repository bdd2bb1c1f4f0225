"""PyG transforms for atoms and crystals: periodic neighbour graphs, noisy positions."""

from importlib.metadata import version as _version

__version__ = _version("matsci-transforms")

__all__: list[str] = ["__version__"]
