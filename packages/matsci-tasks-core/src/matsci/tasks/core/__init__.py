"""The task layer of matsci: data contract, BaseTaskModule and property tasks on Lightning."""

from importlib.metadata import version as _version

__version__ = _version("matsci-tasks-core")

__all__: list[str] = ["__version__"]
