"""Encoders that meet the matsci contract, built on PyTorch Geometric and e3nn."""

from importlib.metadata import version as _version

__version__ = _version("matsci-encoders")

__all__: list[str] = ["__version__"]
