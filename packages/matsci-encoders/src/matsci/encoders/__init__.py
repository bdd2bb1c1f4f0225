"""Encoders that meet the matsci contract, built on PyTorch Geometric and e3nn.

Each encoder maps a batch to :class:`~matsci.contract.Embeddings`, computes edge vectors from
positions (so forces and stresses come through autograd) and is built from simple constructor
arguments, so ``encoder_class="matsci.encoders.SchNetEncoder"`` with ``encoder_kwargs`` works
in Python and in YAML.
"""

from importlib.metadata import version as _version

from matsci.encoders._equivariant import EquivariantEncoder
from matsci.encoders._schnet import SchNetEncoder

__version__ = _version("matsci-encoders")

__all__ = ["EquivariantEncoder", "SchNetEncoder", "__version__"]
