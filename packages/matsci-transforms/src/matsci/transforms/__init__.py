"""PyG transforms for atoms and crystals: neighbour graphs, noisy positions, primitive cells."""

from importlib.metadata import version as _version

from matsci.contract import keys
from matsci.transforms._edges import edge_vectors
from matsci.transforms._noisy_positions import NoisyPositions
from matsci.transforms._primitive_cell import PrimitiveCell
from matsci.transforms._radius_graph import PeriodicRadiusGraph

__version__ = _version("matsci-transforms")

__all__ = [
    "NoisyPositions",
    "PeriodicRadiusGraph",
    "PrimitiveCell",
    "__version__",
    "edge_vectors",
    "keys",
]
