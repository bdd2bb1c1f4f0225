"""From ASE structures to matsci training batches."""

from importlib.metadata import version as _version

__version__ = _version("matsci-data")

__all__: list[str] = ["__version__"]
