"""PyG transforms for atoms and crystals: periodic neighbour graphs, noisy positions."""

from importlib.metadata import version as _version

from matsci.contract import keys
from matsci.transforms._edges import edge_vectors
from matsci.transforms._noisy_positions import NoisyPositions
from matsci.transforms._radius_graph import PeriodicRadiusGraph

__version__ = _version("matsci-transforms")

__all__ = ["NoisyPositions", "PeriodicRadiusGraph", "__version__", "edge_vectors", "keys"]
